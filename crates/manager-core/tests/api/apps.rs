//! Apps: created, listed, shown, deleted; names checked.
use super::*;

async fn an_app_can_be_created_listed_shown_and_deleted(t: &TestApp) {
    let created = t.create_app("shop").await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.body["name"], "shop");
    assert!(created.body["created_at"].is_string());

    let list = t.call(Method::GET, "/api/v1/apps", None).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["apps"][0]["name"], "shop");

    let shown = t.call(Method::GET, "/api/v1/apps/shop", None).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body["name"], "shop");

    let deleted = t.call(Method::DELETE, "/api/v1/apps/shop", None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = t.call(Method::GET, "/api/v1/apps/shop", None).await;
    assert_error(&gone, 404, "not_found");
    assert_eq!(gone.body["error"]["message"], "app 'shop' does not exist");
}

async fn a_duplicate_app_is_a_conflict(t: &TestApp) {
    assert_eq!(t.create_app("shop").await.status, StatusCode::CREATED);
    assert_error(&t.create_app("shop").await, 409, "conflict");
}

async fn reserved_and_malformed_app_names_are_refused(t: &TestApp) {
    let reserved = t.create_app("api").await;
    assert_error(&reserved, 400, "invalid_input");
    assert!(
        reserved.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("reserved"))
    );
    assert_error(&t.create_app("Not A Slug").await, 400, "invalid_input");
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/Bad_Name", None).await,
        400,
        "invalid_input",
    );
}

on_both_backends!(
    with_app =>
    an_app_can_be_created_listed_shown_and_deleted,
    a_duplicate_app_is_a_conflict,
    reserved_and_malformed_app_names_are_refused,
);
