//! HTTP idempotency keys (docs/admin-api.md, Idempotency keys): on a route that opted in,
//! a repeated `Idempotency-Key` replays the first answer (status, headers, body) with
//! `Idempotency-Replayed: true` and the script's effects happen once; a duplicate while
//! the first runs is a 409; the key with another request a 422; a failed run releases its
//! key; answers expire after the trigger's TTL; a route that did not opt in ignores keys.
use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::common::{TestApp, spawn_app, spawn_app_with};
use testkit::{Backend, on_both_backends};

on_both_backends!(
    a_repeated_key_replays_the_first_answer_and_the_effect_happens_once,
    a_duplicate_while_the_first_runs_is_a_conflict_and_then_a_replay,
    a_failed_run_releases_its_key_so_a_retry_runs,
    an_answer_is_replayed_until_its_ttl_and_then_the_key_runs_again,
    a_route_without_the_opt_in_ignores_the_key,
    concurrent_keyed_requests_each_run_once_and_replay_their_own_answer,
);

/// Counts orders and answers 201 with headers of its own.
const ORDER: &str = r#"
let n = kv::incr("orders");
response(201, #{ order: n, item: request.json.item }, #{ "x-order": `${n}`, "set-cookie": "seen=1" })
"#;

/// Bind `POST /orders` of `shop` to `ORDER`, with `idempotency` (`Value::Null`: no opt-in).
async fn orders_route(app: &TestApp, path: &str, idempotency: Value) {
    let mut trigger = json!({"kind": "http", "method": "POST", "path": path});
    if !idempotency.is_null() {
        trigger["idempotency"] = idempotency;
    }
    app.handler("shop", "order", trigger, ORDER).await;
}

async fn order(app: &TestApp, path: &str, key: Option<&str>, item: &str) -> Response {
    let mut call = app
        .call(Method::POST, &format!("/shop{path}"))
        .json(&json!({ "item": item }));
    if let Some(key) = key {
        call = call.header("Idempotency-Key", key);
    }
    call.send().await.unwrap()
}

/// Status, headers (without the date, which moves) and body of an answer.
async fn parts(res: Response) -> (u16, Vec<(String, String)>, String) {
    let status = res.status().as_u16();
    let headers = res
        .headers()
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    (status, headers, res.text().await.unwrap())
}

fn replayed(headers: &[(String, String)]) -> Option<&str> {
    headers
        .iter()
        .find(|(n, _)| n == "idempotency-replayed")
        .map(|(_, v)| v.as_str())
}

async fn error_code(res: Response) -> (u16, String) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    (status, body["error"]["code"].as_str().unwrap().to_owned())
}

async fn a_repeated_key_replays_the_first_answer_and_the_effect_happens_once(db: Backend) {
    let app = spawn_app(db).await;
    orders_route(&app, "/orders", json!({})).await;
    let listed = app
        .admin(Method::GET, "/apps/shop/triggers")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        listed["triggers"][0]["idempotency"],
        json!({"ttl_secs": 86400}),
        "24 hours by default, shown by GET"
    );

    let (status, headers, body) = parts(order(&app, "/orders", Some("k-1"), "tea").await).await;
    assert_eq!(status, 201);
    assert_eq!(replayed(&headers), None, "the first answer is no replay");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"order": 1, "item": "tea"})
    );
    for _ in 0..2 {
        let (again_status, mut again_headers, again_body) =
            parts(order(&app, "/orders", Some("k-1"), "tea").await).await;
        assert_eq!(replayed(&again_headers), Some("true"));
        again_headers.retain(|(n, _)| n != "idempotency-replayed");
        assert_eq!(again_status, status);
        assert_eq!(
            again_headers, headers,
            "the same headers, invocation id included"
        );
        assert_eq!(again_body, body);
    }
    assert_eq!(app.kv("shop", "orders").await, Some(json!(1)), "ran once");

    // Another key runs; the same key with another request is refused.
    let other = order(&app, "/orders", Some("k-2"), "tea").await;
    assert_eq!(other.status(), 201);
    assert_eq!(
        error_code(order(&app, "/orders", Some("k-1"), "coffee").await).await,
        (422, "idempotency_key_reused".to_owned())
    );
    // Keys that are no keys.
    for bad in [String::new(), "x".repeat(256), "a b".to_owned()] {
        assert_eq!(
            error_code(order(&app, "/orders", Some(&bad), "tea").await).await,
            (400, "invalid_input".to_owned()),
            "key {bad:?}"
        );
    }
    let longest = "k".repeat(255);
    assert_eq!(
        order(&app, "/orders", Some(&longest), "tea").await.status(),
        201
    );
    // Without a key, every request runs.
    for _ in 0..2 {
        assert_eq!(order(&app, "/orders", None, "tea").await.status(), 201);
    }
    assert_eq!(app.kv("shop", "orders").await, Some(json!(5)));
}

/// A loopback server whose requests say they started, then wait until the gate opens.
struct Gate {
    url: String,
    started: mpsc::UnboundedReceiver<()>,
    open: watch::Sender<bool>,
}

async fn gate() -> Gate {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hold", listener.local_addr().unwrap());
    let (started_tx, started) = mpsc::unbounded_channel();
    let (open, opened) = watch::channel(false);
    let router = axum::Router::new().route(
        "/hold",
        axum::routing::get(move || {
            let (started, mut opened) = (started_tx.clone(), opened.clone());
            async move {
                let _ = started.send(());
                let _ = opened.wait_for(|open| *open).await;
                "through"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Gate { url, started, open }
}

async fn a_duplicate_while_the_first_runs_is_a_conflict_and_then_a_replay(db: Backend) {
    let app = spawn_app_with(db, |c| c.limits.timeout_ms = 10_000).await;
    let mut gate = gate().await;
    let slow = format!(
        r#"http::get("{}"); let n = kv::incr("orders"); #{{ order: n }}"#,
        gate.url
    );
    app.handler(
        "shop",
        "slow",
        json!({"kind": "http", "method": "POST", "path": "/orders", "idempotency": {"ttl_secs": 600}}),
        &slow,
    )
    .await;
    let first = tokio::spawn(
        app.call(Method::POST, "/shop/orders")
            .header("Idempotency-Key", "once")
            .body("{}")
            .send(),
    );
    tokio::time::timeout(Duration::from_secs(20), gate.started.recv())
        .await
        .expect("the first run reached the gate")
        .expect("the gate is up");
    let duplicate = app
        .call(Method::POST, "/shop/orders")
        .header("Idempotency-Key", "once")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(duplicate.headers()["retry-after"], "1");
    assert_eq!(
        error_code(duplicate).await,
        (409, "conflict".to_owned()),
        "refused at once, not run"
    );
    gate.open.send_replace(true);
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.text().await.unwrap(), r#"{"order":1}"#);
    let replay = app
        .call(Method::POST, "/shop/orders")
        .header("Idempotency-Key", "once")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(replay.headers()["idempotency-replayed"], "true");
    assert_eq!(replay.text().await.unwrap(), r#"{"order":1}"#);
    assert_eq!(app.kv("shop", "orders").await, Some(json!(1)));
}

async fn a_failed_run_releases_its_key_so_a_retry_runs(db: Backend) {
    let app = spawn_app(db).await;
    // The first try answers 503 (its count is kept); the retry succeeds.
    let flaky = r#"
let n = kv::incr("tries");
if n == 1 { return response(503, "try again"); }
#{ tries: n }
"#;
    app.handler(
        "shop",
        "flaky",
        json!({"kind": "http", "method": "POST", "path": "/flaky", "idempotency": {}}),
        flaky,
    )
    .await;
    let call = || {
        app.call(Method::POST, "/shop/flaky")
            .header("Idempotency-Key", "retry-me")
            .send()
    };
    let first = call().await.unwrap();
    assert_eq!(first.status(), 503);
    assert!(first.headers().get("idempotency-replayed").is_none());
    let retry = call().await.unwrap();
    assert_eq!(retry.status(), 200, "a 5xx is not replayed: the retry ran");
    assert!(retry.headers().get("idempotency-replayed").is_none());
    assert_eq!(retry.text().await.unwrap(), r#"{"tries":2}"#);
    let replay = call().await.unwrap();
    assert_eq!(replay.headers()["idempotency-replayed"], "true");
    assert_eq!(replay.text().await.unwrap(), r#"{"tries":2}"#);

    // A script error stores nothing either.
    app.handler(
        "shop",
        "boom",
        json!({"kind": "http", "method": "POST", "path": "/boom", "idempotency": {}}),
        r#"kv::incr("booms"); throw "boom""#,
    )
    .await;
    for _ in 0..2 {
        let res = app
            .call(Method::POST, "/shop/boom")
            .header("Idempotency-Key", "boom")
            .send()
            .await
            .unwrap();
        assert!(res.headers().get("idempotency-replayed").is_none());
        assert_eq!(
            error_code(res).await,
            (500, "script_failed".to_owned()),
            "run again, not replayed"
        );
    }
    assert_eq!(
        app.kv("shop", "booms").await,
        None,
        "a failed run commits nothing"
    );
}

async fn an_answer_is_replayed_until_its_ttl_and_then_the_key_runs_again(db: Backend) {
    let app = spawn_app(db).await;
    orders_route(&app, "/orders", json!({"ttl_secs": 1})).await;
    let first = order(&app, "/orders", Some("short"), "tea").await;
    assert_eq!(first.status(), 201);
    // Replayed while fresh, run again once the TTL has passed (no sweeper: the next
    // request with the key finds it expired).
    let mut replays = 0;
    let body = testkit::eventually("the answer expires", Duration::from_secs(20), async || {
        let res = order(&app, "/orders", Some("short"), "tea").await;
        assert_eq!(res.status(), 201);
        if res.headers().get("idempotency-replayed").is_none() {
            return Some(res.json::<Value>().await.unwrap());
        }
        replays += 1;
        None
    })
    .await;
    assert!(replays >= 1, "replayed at least once before it expired");
    assert_eq!(body["order"], 2, "the expired key ran again");
}

async fn a_route_without_the_opt_in_ignores_the_key(db: Backend) {
    let app = spawn_app(db).await;
    orders_route(&app, "/orders", Value::Null).await;
    for n in 1..=2 {
        let res = order(&app, "/orders", Some("ignored"), "tea").await;
        assert_eq!(res.status(), 201);
        assert!(res.headers().get("idempotency-replayed").is_none());
        assert_eq!(res.json::<Value>().await.unwrap()["order"], n);
    }
    // Not even an invalid key is looked at.
    let res = order(&app, "/orders", Some(""), "tea").await;
    assert_eq!(res.status(), 201);
    let listed = app
        .admin(Method::GET, "/apps/shop/triggers")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert!(listed["triggers"][0].get("idempotency").is_none());
    // Idempotency is for http routes only.
    let refused = app
        .add_trigger(
            "shop",
            json!({"kind": "topic", "topic": "t", "script": "order", "idempotency": {}}),
        )
        .await;
    assert_eq!(refused.status(), 400);
    let refused = app
        .add_trigger(
            "shop",
            json!({"kind": "http", "method": "PUT", "path": "/x", "script": "order",
                "idempotency": {"ttl_secs": 0}}),
        )
        .await;
    assert_eq!(refused.status(), 400);
}

/// Keyed requests at once go through the HTTP group commit together: each answer is stored
/// with its own run's effects and replayed for its own key only.
async fn concurrent_keyed_requests_each_run_once_and_replay_their_own_answer(db: Backend) {
    const N: usize = 24;
    let app = spawn_app(db).await;
    orders_route(&app, "/orders", json!({})).await;
    let keys: Vec<String> = (0..N).map(|i| format!("c-{i}")).collect();
    let firsts = futures::future::join_all(
        keys.iter()
            .map(|key| async { parts(order(&app, "/orders", Some(key), key).await).await }),
    )
    .await;
    assert_eq!(
        app.kv("shop", "orders").await,
        Some(json!(N)),
        "each ran once"
    );
    let replays = futures::future::join_all(
        keys.iter()
            .map(|key| async { parts(order(&app, "/orders", Some(key), key).await).await }),
    )
    .await;
    for ((key, first), (status, mut headers, body)) in keys.iter().zip(&firsts).zip(replays) {
        assert_eq!(first.0, 201, "{key}: {}", first.2);
        assert_eq!(replayed(&first.1), None);
        assert_eq!(
            serde_json::from_str::<Value>(&first.2).unwrap()["item"],
            json!(key)
        );
        assert_eq!(replayed(&headers), Some("true"), "{key}");
        headers.retain(|(n, _)| n != "idempotency-replayed");
        assert_eq!((status, &headers, &body), (first.0, &first.1, &first.2));
    }
    assert_eq!(
        app.kv("shop", "orders").await,
        Some(json!(N)),
        "nothing ran again"
    );
}
