//! HTTP triggers: created, listed, deleted, refused, and deleted with their script.
use super::*;

async fn a_trigger_can_be_created_listed_and_deleted(t: &TestApp) {
    t.create_app("shop").await;
    t.deploy("shop", "user", "\"u\"").await;
    let created = t
        .add_trigger(
            "shop",
            json!({"kind": "http", "method": "GET", "path": "/users/:id", "script": "user"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["kind"], "http");
    assert_eq!(created.body["method"], "GET");
    assert_eq!(created.body["path"], "/users/:id");
    assert_eq!(created.body["script"], "user");
    assert_eq!(created.body["app"], "shop");
    assert_eq!(created.body["max_attempts"], 5);
    let id = created.body["id"].as_str().expect("id").to_owned();

    let list = t
        .call(Method::GET, "/api/v1/apps/shop/triggers", None)
        .await;
    assert_eq!(list.body["triggers"][0]["id"], id.as_str());

    let deleted = t
        .call(
            Method::DELETE,
            &format!("/api/v1/apps/shop/triggers/{id}"),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let list = t
        .call(Method::GET, "/api/v1/apps/shop/triggers", None)
        .await;
    assert_eq!(list.body["triggers"].as_array().map(Vec::len), Some(0));
}

async fn bad_triggers_are_refused_with_the_fitting_error(t: &TestApp) {
    t.create_app("shop").await;
    t.deploy("shop", "user", "\"u\"").await;
    let ok = json!({"kind": "http", "method": "POST", "path": "/orders", "script": "user", "max_attempts": 3});
    let created = t.add_trigger("shop", ok.clone()).await;
    assert_eq!(created.body["max_attempts"], 3);

    let dup = t.add_trigger("shop", ok.clone()).await;
    assert_error(&dup, 409, "conflict");

    let platform = t
        .add_trigger(
            "shop",
            json!({"kind": "http", "method": "GET", "path": "/_realtime", "script": "user"}),
        )
        .await;
    assert_error(&platform, 400, "invalid_input");
    assert!(
        platform.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("/_"))
    );

    let kind = t
        .add_trigger("shop", json!({"kind": "webhook", "script": "user"}))
        .await;
    assert_error(&kind, 400, "invalid_input");
    assert_eq!(
        kind.body["error"]["message"],
        "trigger kind 'webhook' is not supported"
    );

    let method = t
        .add_trigger(
            "shop",
            json!({"kind": "http", "method": "FETCH", "path": "/a", "script": "user"}),
        )
        .await;
    assert_error(&method, 400, "invalid_input");

    let attempts = t.add_trigger("shop", json!({"kind": "http", "method": "GET", "path": "/a", "script": "user", "max_attempts": 0})).await;
    assert_error(&attempts, 400, "invalid_input");

    let no_script = t
        .add_trigger(
            "shop",
            json!({"kind": "http", "method": "GET", "path": "/a", "script": "ghost"}),
        )
        .await;
    assert_error(&no_script, 404, "not_found");
    assert_eq!(
        no_script.body["error"]["message"],
        "script 'ghost' does not exist"
    );

    let no_app = t
        .add_trigger(
            "ghost",
            json!({"kind": "http", "method": "GET", "path": "/a", "script": "user"}),
        )
        .await;
    assert_error(&no_app, 404, "not_found");
}

async fn deleting_a_script_deletes_its_triggers(t: &TestApp) {
    t.create_app("shop").await;
    t.deploy("shop", "user", "\"u\"").await;
    t.add_trigger(
        "shop",
        json!({"kind": "http", "method": "GET", "path": "/u", "script": "user"}),
    )
    .await;
    let deleted = t
        .call(Method::DELETE, "/api/v1/apps/shop/scripts/user", None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let triggers = t
        .call(Method::GET, "/api/v1/apps/shop/triggers", None)
        .await;
    assert_eq!(triggers.body["triggers"].as_array().map(Vec::len), Some(0));
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/shop/scripts/user", None)
            .await,
        404,
        "not_found",
    );
}

on_both_backends!(
    with_app =>
    a_trigger_can_be_created_listed_and_deleted,
    bad_triggers_are_refused_with_the_fitting_error,
    deleting_a_script_deletes_its_triggers,
);
