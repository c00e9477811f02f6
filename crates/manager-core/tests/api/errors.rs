//! Error answers: malformed bodies, unknown resources, routes and methods.
use super::*;

async fn malformed_json_a_missing_field_and_an_unknown_field_answer_400_json(t: &TestApp) {
    let malformed = t
        .raw(
            Method::POST,
            "/api/v1/apps",
            Some("application/json"),
            "{\"name\":",
        )
        .await;
    assert_error(&malformed, 400, "invalid_input");
    let missing = t.call(Method::POST, "/api/v1/apps", Some(json!({}))).await;
    assert_error(&missing, 400, "invalid_input");
    assert!(
        missing.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("name"))
    );
    let unknown = t
        .call(
            Method::POST,
            "/api/v1/apps",
            Some(json!({"name": "a", "color": "red"})),
        )
        .await;
    assert_error(&unknown, 400, "invalid_input");
    assert!(
        unknown.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("color"))
    );
    let bad_type = t
        .call(Method::POST, "/api/v1/apps", Some(json!({"name": 7})))
        .await;
    assert_error(&bad_type, 400, "invalid_input");
    let no_content_type = t
        .raw(Method::POST, "/api/v1/apps", None, "{\"name\":\"a\"}")
        .await;
    assert_error(&no_content_type, 400, "invalid_input");
}

async fn unknown_apps_scripts_versions_and_triggers_answer_404(t: &TestApp) {
    let no_app = t.deploy("ghost", "hello", "1").await;
    assert_error(&no_app, 404, "not_found");
    assert_eq!(
        no_app.body["error"]["message"],
        "app 'ghost' does not exist"
    );
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/ghost/scripts", None)
            .await,
        404,
        "not_found",
    );
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/ghost/triggers", None)
            .await,
        404,
        "not_found",
    );
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/ghost/invocations", None)
            .await,
        404,
        "not_found",
    );

    t.create_app("shop").await;
    let no_script = t
        .call(Method::GET, "/api/v1/apps/shop/scripts/nope", None)
        .await;
    assert_error(&no_script, 404, "not_found");
    assert_eq!(
        no_script.body["error"]["message"],
        "script 'nope' does not exist"
    );
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/shop/scripts/nope/versions", None)
            .await,
        404,
        "not_found",
    );
    assert_error(
        &t.call(Method::DELETE, "/api/v1/apps/shop/scripts/nope", None)
            .await,
        404,
        "not_found",
    );

    t.deploy("shop", "hello", "1").await;
    let no_version = t
        .call(
            Method::GET,
            "/api/v1/apps/shop/scripts/hello/versions/7",
            None,
        )
        .await;
    assert_error(&no_version, 404, "not_found");
    assert_eq!(
        no_version.body["error"]["message"],
        "version '7' does not exist"
    );

    let id = uuid::Uuid::now_v7();
    assert_error(
        &t.call(
            Method::DELETE,
            &format!("/api/v1/apps/shop/triggers/{id}"),
            None,
        )
        .await,
        404,
        "not_found",
    );
    assert_error(
        &t.call(
            Method::GET,
            &format!("/api/v1/apps/shop/invocations/{id}"),
            None,
        )
        .await,
        404,
        "not_found",
    );
    assert_error(
        &t.call(Method::DELETE, &format!("/api/v1/tokens/{id}"), None)
            .await,
        404,
        "not_found",
    );
    assert_error(
        &t.call(
            Method::DELETE,
            "/api/v1/apps/shop/triggers/not-a-uuid",
            None,
        )
        .await,
        400,
        "invalid_input",
    );
    assert_error(
        &t.call(Method::DELETE, "/api/v1/apps/ghost", None).await,
        404,
        "not_found",
    );
}

async fn an_unknown_route_answers_404_json_and_a_wrong_method_405_json(t: &TestApp) {
    t.create_app("shop").await;
    assert_error(
        &t.call(Method::GET, "/api/v1/nothing", None).await,
        404,
        "not_found",
    );
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/shop/nothing", None).await,
        404,
        "not_found",
    );
    assert_eq!(
        t.call(Method::GET, "/api/v1/apps/shop", None).await.status,
        StatusCode::OK
    );
    let wrong_method = t.call(Method::PATCH, "/api/v1/apps/shop", None).await;
    assert_error(&wrong_method, 405, "method_not_allowed");
    let allow = wrong_method
        .headers
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok());
    assert!(
        allow.is_some_and(|a| a.contains("GET") && a.contains("DELETE")),
        "{allow:?}"
    );
    let anonymous = t.call_as(None, Method::GET, "/api/v1/nothing", None).await;
    assert_error(&anonymous, 401, "unauthorized");
}

on_both_backends!(
    with_app =>
    malformed_json_a_missing_field_and_an_unknown_field_answer_400_json,
    unknown_apps_scripts_versions_and_triggers_answer_404,
    an_unknown_route_answers_404_json_and_a_wrong_method_405_json,
);
