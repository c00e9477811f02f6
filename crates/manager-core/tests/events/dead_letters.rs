//! Dead letters: listed, shown, paged, replayed, deleted and purged.
use super::*;

async fn dead_letters_are_listed_shown_and_paged_newest_first(t: &TestApp) {
    let app = t.app_with_script("shop").await;
    for n in 0..3 {
        t.dead_letter(&app, json!({"n": n})).await;
    }
    let page = t
        .call(Method::GET, "/api/v1/apps/shop/dead-letters?limit=2", None)
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let first = page.body["dead_letters"].as_array().expect("list").clone();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0]["payload"], json!({"n": 2}), "newest first");
    assert_eq!(first[0]["error"], "boom at line 1");
    assert_eq!(first[0]["kind"], "invoke");
    assert_eq!(first[0]["script"], "handler");
    let next = page.body["next_before"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let rest = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/dead-letters?limit=2&before={next}"),
            None,
        )
        .await;
    assert_eq!(rest.body["dead_letters"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest.body["dead_letters"][0]["payload"], json!({"n": 0}));
    assert_eq!(rest.body["next_before"], Value::Null);

    let id = first[0]["id"].as_str().expect("id");
    let shown = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/dead-letters/{id}"),
            None,
        )
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body["id"], id);
    assert_eq!(shown.body["attempts"], first[0]["attempts"]);

    let bad_limit = t
        .call(Method::GET, "/api/v1/apps/shop/dead-letters?limit=0", None)
        .await;
    assert_error(&bad_limit, 400, "invalid_input");
    let bad_before = t
        .call(
            Method::GET,
            "/api/v1/apps/shop/dead-letters?before=nope",
            None,
        )
        .await;
    assert_error(&bad_before, 400, "invalid_input");
    let missing_app = t
        .call(Method::GET, "/api/v1/apps/nowhere/dead-letters", None)
        .await;
    assert_error(&missing_app, 404, "not_found");
}

async fn replaying_a_dead_letter_puts_the_event_back_and_removes_it(t: &TestApp) {
    let app = t.app_with_script("shop").await;
    t.dead_letter(&app, json!({"order": 7})).await;
    let list = t
        .call(Method::GET, "/api/v1/apps/shop/dead-letters", None)
        .await;
    let id = list.body["dead_letters"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let before = t.store.outbox.pending(&app).await.expect("pending");

    let replayed = t
        .call(
            Method::POST,
            &format!("/api/v1/apps/shop/dead-letters/{id}/replay"),
            None,
        )
        .await;
    assert_eq!(replayed.status, StatusCode::ACCEPTED, "{}", replayed.body);
    assert!(replayed.body["event_id"].is_string());
    assert_eq!(
        t.store.outbox.pending(&app).await.expect("pending"),
        before + 1
    );
    let events = t
        .store
        .outbox
        .claim_due("test-node", 10, Duration::from_secs(60))
        .await
        .expect("claim");
    let event = events
        .iter()
        .find(|e| e.id.to_string() == replayed.body["event_id"].as_str().unwrap_or_default())
        .expect("the replayed event is due");
    assert_eq!(event.payload, json!({"order": 7}));
    assert_eq!(event.attempt, 1);

    let gone = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/dead-letters/{id}"),
            None,
        )
        .await;
    assert_error(&gone, 404, "not_found");
    let again = t
        .call(
            Method::POST,
            &format!("/api/v1/apps/shop/dead-letters/{id}/replay"),
            None,
        )
        .await;
    assert_error(&again, 404, "not_found");
    assert_eq!(
        message(&again),
        format!("dead letter '{id}' does not exist")
    );
}

async fn dead_letters_are_deleted_one_by_one_or_purged(t: &TestApp) {
    let app = t.app_with_script("shop").await;
    let other = t.app_with_script("other").await;
    for n in 0..3 {
        t.dead_letter(&app, json!(n)).await;
    }
    t.dead_letter(&other, json!("keep")).await;
    let list = t
        .call(Method::GET, "/api/v1/apps/shop/dead-letters", None)
        .await;
    let id = list.body["dead_letters"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let deleted = t
        .call(
            Method::DELETE,
            &format!("/api/v1/apps/shop/dead-letters/{id}"),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let twice = t
        .call(
            Method::DELETE,
            &format!("/api/v1/apps/shop/dead-letters/{id}"),
            None,
        )
        .await;
    assert_error(&twice, 404, "not_found");
    // Another app's id is not found through this app.
    let other_list = t
        .call(Method::GET, "/api/v1/apps/other/dead-letters", None)
        .await;
    let other_id = other_list.body["dead_letters"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let crossed = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/dead-letters/{other_id}"),
            None,
        )
        .await;
    assert_error(&crossed, 404, "not_found");

    let purged = t
        .call(Method::DELETE, "/api/v1/apps/shop/dead-letters", None)
        .await;
    assert_eq!(purged.status, StatusCode::OK);
    assert_eq!(purged.body, json!({"purged": 2}));
    let empty = t
        .call(Method::GET, "/api/v1/apps/shop/dead-letters", None)
        .await;
    assert_eq!(empty.body["dead_letters"], json!([]));
    let kept = t
        .call(Method::GET, "/api/v1/apps/other/dead-letters", None)
        .await;
    assert_eq!(kept.body["dead_letters"].as_array().map(Vec::len), Some(1));
    let unknown = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/dead-letters/{}", uuid::Uuid::nil()),
            None,
        )
        .await;
    assert_error(&unknown, 404, "not_found");
    let malformed = t
        .call(Method::GET, "/api/v1/apps/shop/dead-letters/xyz", None)
        .await;
    assert_error(&malformed, 400, "invalid_input");
}

on_both_backends!(
    with_app =>
    dead_letters_are_listed_shown_and_paged_newest_first,
    replaying_a_dead_letter_puts_the_event_back_and_removes_it,
    dead_letters_are_deleted_one_by_one_or_purged,
);
