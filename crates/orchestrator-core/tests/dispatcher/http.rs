//! Sync HTTP runs: effects are committed before the response, or it answers 500.
use super::*;

async fn http_route(store: &Store, method: &str, path: &str, script: &str, source: &str) {
    deploy(store, script, source).await;
    trigger(
        store,
        script,
        TriggerSpec::Http {
            method: HttpMethod::parse(method).expect("method"),
            path: RoutePath::parse(path).expect("path"),
        },
        1,
    )
    .await;
}

async fn serve(node: &Arc<Orchestrator>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = node.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/{SHOP}")
}

async fn sync_http_effects_are_committed_before_the_response(db: TestDb) {
    let store = new_app(&db).await;
    http_route(
        &store,
        "POST",
        "/greeting",
        "set_greeting",
        r#"kv::set("greeting", request.body); "stored""#,
    )
    .await;
    http_route(
        &store,
        "GET",
        "/greeting",
        "get_greeting",
        r#"kv::get("greeting")"#,
    )
    .await;
    let node = start_node(&store, dispatch("a")).await;
    let url = serve(&node).await;
    let client = reqwest::Client::new();

    for word in ["hello", "again"] {
        let posted = client
            .post(format!("{url}/greeting"))
            .body(word)
            .send()
            .await
            .expect("post");
        assert_eq!(posted.status(), 200);
        // Committed before the answer: visible in the store and to the next request.
        assert_eq!(kv(&store, "greeting").await, Some(json!(word)));
        let got = client
            .get(format!("{url}/greeting"))
            .send()
            .await
            .expect("get");
        assert_eq!(got.status(), 200);
        assert_eq!(got.text().await.expect("body"), word);
    }
    node.finish().await;
    db.close().await;
}

#[tokio::test]
async fn effects_that_cannot_be_committed_answer_500_with_the_invocation_id() {
    let db = sqlite_store().await;
    let store = new_app(&db).await;
    http_route(
        &store,
        "POST",
        "/write",
        "writer",
        r#"kv::set("k", 1); "ok""#,
    )
    .await;
    let node = start_node(&store, dispatch("a")).await;
    let url = serve(&node).await;
    let client = reqwest::Client::new();
    let first = client
        .post(format!("{url}/write"))
        .send()
        .await
        .expect("post");
    assert_eq!(first.status(), 200);
    // The app disappears, but its route and compiled script are still in memory (no
    // catalog listener here): the run succeeds and its effects cannot be committed.
    store.apps.delete(&app()).await.expect("delete app");

    let response = client
        .post(format!("{url}/write"))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 500);
    let id = response
        .headers()
        .get(INVOCATION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("an invocation id header");
    let body: Value = response.json().await.expect("json body");
    assert_eq!(body["error"]["code"], "internal");
    let text = body["error"]["message"].as_str().unwrap_or_default();
    assert!(text.contains(&id), "{text}");
    node.finish().await;
    db.close().await;
}

on_both_backends!(
    with_db =>
    sync_http_effects_are_committed_before_the_response,
);
