//! Scripts: deploys, versions, compile errors, rollback and the script size limit.
use super::*;

async fn deploying_twice_returns_201_then_200_with_version_2(t: &TestApp) {
    t.create_app("shop").await;
    let first = t.deploy("shop", "hello", "\"hi\"").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["version"], 1);
    assert_eq!(first.body["app"], "shop");
    assert_eq!(first.body["script"], "hello");
    let second = t.deploy("shop", "hello", "\"hello\"").await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.body["version"], 2);

    let list = t.call(Method::GET, "/api/v1/apps/shop/scripts", None).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["scripts"][0]["name"], "hello");
    assert_eq!(list.body["scripts"][0]["active_version"], 2);
    assert_eq!(list.body["scripts"][0]["latest_version"], 2);

    let shown = t
        .call(Method::GET, "/api/v1/apps/shop/scripts/hello", None)
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body["source"], "\"hello\"");
    assert_eq!(shown.body["active_version"], 2);

    let versions = t
        .call(
            Method::GET,
            "/api/v1/apps/shop/scripts/hello/versions",
            None,
        )
        .await;
    assert_eq!(versions.status, StatusCode::OK);
    assert_eq!(versions.body["versions"][0]["version"], 2);
    assert_eq!(versions.body["versions"][0]["active"], true);
    assert_eq!(versions.body["versions"][1]["version"], 1);
    assert_eq!(versions.body["versions"][1]["active"], false);

    let v1 = t
        .call(
            Method::GET,
            "/api/v1/apps/shop/scripts/hello/versions/1",
            None,
        )
        .await;
    assert_eq!(v1.status, StatusCode::OK);
    assert_eq!(v1.body["source"], "\"hi\"");
    assert_eq!(v1.body["active"], false);
}

async fn a_compile_error_answers_422_with_line_and_column_and_keeps_the_active_version(
    t: &TestApp,
) {
    t.create_app("shop").await;
    assert_eq!(
        t.deploy("shop", "hello", "\"v1\"").await.status,
        StatusCode::CREATED
    );
    let broken = t.deploy("shop", "hello", "let a = 1;\nlet b = ;\n").await;
    assert_error(&broken, 422, "compile_error");
    assert_eq!(broken.body["error"]["line"], 2, "{}", broken.body);
    assert!(
        broken.body["error"]["column"]
            .as_u64()
            .is_some_and(|c| c >= 1)
    );
    assert!(
        broken.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("line 2, column "))
    );

    let active = t
        .store
        .scripts
        .active(&app("shop"), &script("hello"))
        .await
        .expect("active")
        .expect("some");
    assert_eq!(active.version, 1);
    assert_eq!(active.source, "\"v1\"");
    let versions = t
        .call(
            Method::GET,
            "/api/v1/apps/shop/scripts/hello/versions",
            None,
        )
        .await;
    assert_eq!(versions.body["versions"].as_array().map(Vec::len), Some(1));
}

async fn a_check_compiles_without_storing_and_needs_no_app(t: &TestApp) {
    let body = serde_json::json!({"source": "let a = 1;\na + 1\n"});
    let ok = t
        .call(
            Method::POST,
            "/api/v1/apps/later/scripts/hello/check",
            Some(body),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.body["compiles"], true);
    let broken = t
        .call(
            Method::POST,
            "/api/v1/apps/later/scripts/hello/check",
            Some(serde_json::json!({"source": "let a = 1;\nlet b = ;\n"})),
        )
        .await;
    assert_error(&broken, 422, "compile_error");
    assert_eq!(broken.body["error"]["line"], 2, "{}", broken.body);
    // Nothing was made: no app, no script.
    let apps = t.call(Method::GET, "/api/v1/apps", None).await;
    assert_eq!(apps.body["apps"], serde_json::json!([]), "{}", apps.body);
    t.create_app("shop").await;
    let checked = t
        .call(
            Method::POST,
            "/api/v1/apps/shop/scripts/hello/check",
            Some(serde_json::json!({"source": "\"v1\""})),
        )
        .await;
    assert_eq!(checked.status, StatusCode::OK);
    let scripts = t.call(Method::GET, "/api/v1/apps/shop/scripts", None).await;
    assert_eq!(
        scripts.body["scripts"],
        serde_json::json!([]),
        "{}",
        scripts.body
    );
}

async fn rollback_makes_an_earlier_version_active(t: &TestApp) {
    t.create_app("shop").await;
    t.deploy("shop", "hello", "\"one\"").await;
    t.deploy("shop", "hello", "\"two\"").await;
    let rolled = t
        .call(
            Method::POST,
            "/api/v1/apps/shop/scripts/hello/rollback",
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(rolled.status, StatusCode::OK, "{}", rolled.body);
    assert_eq!(rolled.body["version"], 1);
    let shown = t
        .call(Method::GET, "/api/v1/apps/shop/scripts/hello", None)
        .await;
    assert_eq!(shown.body["source"], "\"one\"");
    assert_eq!(shown.body["active_version"], 1);
    assert_eq!(shown.body["latest_version"], 2);

    let next = t.deploy("shop", "hello", "\"three\"").await;
    assert_eq!(next.body["version"], 3, "version numbers are never reused");

    let missing = t
        .call(
            Method::POST,
            "/api/v1/apps/shop/scripts/hello/rollback",
            Some(json!({"version": 9})),
        )
        .await;
    assert_error(&missing, 404, "not_found");
    assert_eq!(
        missing.body["error"]["message"],
        "version '9' does not exist"
    );
}

#[tokio::test]
async fn a_script_over_the_limit_answers_413_json() {
    let t = spawn_app_on(Backend::Sqlite, 1024).await;
    t.create_app("shop").await;
    let just_over = t
        .deploy("shop", "big", &format!("\"{}\"", "a".repeat(1100)))
        .await;
    assert_error(&just_over, 413, "payload_too_large");
    let far_over = t
        .deploy("shop", "big", &format!("\"{}\"", "a".repeat(200_000)))
        .await;
    assert_error(&far_over, 413, "payload_too_large");
    let fits = t
        .deploy("shop", "big", &format!("\"{}\"", "a".repeat(900)))
        .await;
    assert_eq!(fits.status, StatusCode::CREATED);
    t.close().await;
}

#[tokio::test]
async fn a_script_under_the_default_limit_may_be_larger_than_other_bodies() {
    let t = spawn_app_on(Backend::Sqlite, DEFAULT_LIMIT).await;
    t.create_app("shop").await;
    // 200 KB: over the 64 KiB cap of other bodies, under the 256 KiB script limit.
    let source = format!("\"{}\"", "a".repeat(200_000));
    let big = t.deploy("shop", "big", &source).await;
    assert_eq!(big.status, StatusCode::CREATED, "{}", big.body);
    let huge_name = "a".repeat(70_000);
    let other = t
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": huge_name})),
        )
        .await;
    assert_error(&other, 413, "payload_too_large");
    t.close().await;
}

on_both_backends!(
    with_app =>
    deploying_twice_returns_201_then_200_with_version_2,
    a_compile_error_answers_422_with_line_and_column_and_keeps_the_active_version,
    rollback_makes_an_earlier_version_active,
    a_check_compiles_without_storing_and_needs_no_app,
);
