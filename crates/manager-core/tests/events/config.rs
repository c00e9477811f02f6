//! Config values and secrets; a secret's value never leaves the store.
use super::*;

async fn config_values_are_set_read_listed_and_deleted(t: &TestApp) {
    t.app_with_script("shop").await;
    let set = t
        .call(
            Method::PUT,
            "/api/v1/apps/shop/config/limits",
            Some(json!({"value": {"max": 3, "names": ["a"]}})),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    assert_eq!(
        set.body,
        json!({"key": "limits", "value": {"max": 3, "names": ["a"]}})
    );
    t.call(
        Method::PUT,
        "/api/v1/apps/shop/config/greeting",
        Some(json!({"value": "hi"})),
    )
    .await;
    let got = t
        .call(Method::GET, "/api/v1/apps/shop/config/greeting", None)
        .await;
    assert_eq!(got.body, json!({"key": "greeting", "value": "hi"}));
    let all = t.call(Method::GET, "/api/v1/apps/shop/config", None).await;
    assert_eq!(
        all.body,
        json!({"config": {"greeting": "hi", "limits": {"max": 3, "names": ["a"]}}})
    );
    // A key with a slash travels percent-encoded as one segment.
    let slashed = t
        .call(
            Method::PUT,
            "/api/v1/apps/shop/config/a%2Fb",
            Some(json!({"value": 1})),
        )
        .await;
    assert_eq!(slashed.body["key"], "a/b");

    let deleted = t
        .call(Method::DELETE, "/api/v1/apps/shop/config/greeting", None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = t
        .call(Method::GET, "/api/v1/apps/shop/config/greeting", None)
        .await;
    assert_error(&gone, 404, "not_found");
    let twice = t
        .call(Method::DELETE, "/api/v1/apps/shop/config/greeting", None)
        .await;
    assert_error(&twice, 404, "not_found");

    let control = t
        .call(
            Method::PUT,
            "/api/v1/apps/shop/config/a%00b",
            Some(json!({"value": 1})),
        )
        .await;
    assert_error(&control, 400, "invalid_input");
    let long = "k".repeat(257);
    let too_long = t
        .call(
            Method::PUT,
            &format!("/api/v1/apps/shop/config/{long}"),
            Some(json!({"value": 1})),
        )
        .await;
    assert_error(&too_long, 400, "invalid_input");
    let no_value = t
        .call(Method::PUT, "/api/v1/apps/shop/config/x", Some(json!({})))
        .await;
    assert_error(&no_value, 400, "invalid_input");
    let missing_app = t
        .call(
            Method::PUT,
            "/api/v1/apps/nowhere/config/x",
            Some(json!({"value": 1})),
        )
        .await;
    assert_error(&missing_app, 404, "not_found");
}

async fn a_secret_value_never_appears_in_any_answer(t: &TestApp) {
    t.app_with_script("shop").await;
    const VALUE: &str = "hunter2-very-secret-value";
    let mut answers = Vec::new();
    let set = t
        .call(
            Method::PUT,
            "/api/v1/apps/shop/secrets/DB_PASSWORD",
            Some(json!({"value": VALUE})),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    assert_eq!(set.body, json!({"name": "DB_PASSWORD", "set": true}));
    answers.push(set);
    let list = t.call(Method::GET, "/api/v1/apps/shop/secrets", None).await;
    assert_eq!(list.body, json!({"secrets": ["DB_PASSWORD"]}));
    answers.push(list);
    let shown = t
        .call(Method::GET, "/api/v1/apps/shop/secrets/DB_PASSWORD", None)
        .await;
    assert_eq!(shown.body, json!({"name": "DB_PASSWORD", "set": true}));
    answers.push(shown);
    answers.push(t.call(Method::GET, "/api/v1/apps/shop/config", None).await);
    answers.push(t.call(Method::GET, "/api/v1/apps/shop/kv", None).await);
    answers.push(t.call(Method::GET, "/api/v1/apps/shop", None).await);
    // Overwriting answers the same, without the old or the new value.
    answers.push(
        t.call(
            Method::PUT,
            "/api/v1/apps/shop/secrets/DB_PASSWORD",
            Some(json!({"value": VALUE})),
        )
        .await,
    );
    for answer in &answers {
        let text = String::from_utf8_lossy(&answer.bytes);
        assert!(!text.contains(VALUE), "the secret leaked: {text}");
    }
    // Scripts still read the value through the store.
    let stored = t
        .store
        .settings
        .secret_get(&AppName::parse("shop").expect("app"), "DB_PASSWORD")
        .await
        .expect("get");
    assert_eq!(stored.as_deref(), Some(VALUE));

    let unknown = t
        .call(Method::GET, "/api/v1/apps/shop/secrets/NOPE", None)
        .await;
    assert_error(&unknown, 404, "not_found");
    let deleted = t
        .call(
            Method::DELETE,
            "/api/v1/apps/shop/secrets/DB_PASSWORD",
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = t
        .call(Method::GET, "/api/v1/apps/shop/secrets/DB_PASSWORD", None)
        .await;
    assert_error(&gone, 404, "not_found");
    let not_a_string = t
        .call(
            Method::PUT,
            "/api/v1/apps/shop/secrets/X",
            Some(json!({"value": 5})),
        )
        .await;
    assert_error(&not_a_string, 400, "invalid_input");
    let bad_name = t
        .call(
            Method::PUT,
            "/api/v1/apps/shop/secrets/a%0Ab",
            Some(json!({"value": "v"})),
        )
        .await;
    assert_error(&bad_name, 400, "invalid_input");
}

on_both_backends!(
    with_app =>
    config_values_are_set_read_listed_and_deleted,
    a_secret_value_never_appears_in_any_answer,
);
