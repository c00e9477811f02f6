//! The live invocation stream (`GET /api/v1/apps/{app}/invocations/stream`): each finished
//! invocation of the app, HTTP and event, as it is recorded; filters; bad input; shutdown.
//! Across nodes: `cluster::a_live_stream_on_one_node_hears_invocations_recorded_on_another`.
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{SseStream, TestApp, invocation_id, spawn_app, spawn_app_with};
use testkit::{Backend, on_both_backends};

on_both_backends!(
    the_live_stream_sends_each_finished_invocation_of_its_app_as_it_is_recorded,
    bad_live_stream_requests_get_json_errors,
    an_open_live_stream_ends_when_the_server_shuts_down,
    picloud_logs_follow_prints_each_invocation_as_it_happens,
);

async fn open(app: &TestApp, path: &str) -> SseStream {
    let res = app
        .admin(Method::GET, path)
        .send()
        .await
        .expect("the stream answers");
    assert_eq!(res.status(), 200, "{path}");
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    SseStream::new(res)
}

/// The next `invocation` event's data.
async fn next_invocation(stream: &mut SseStream) -> Value {
    loop {
        let message = stream.next().await.expect("the stream goes on");
        if message.event.as_deref() == Some("invocation") {
            let data = message.json();
            assert_eq!(
                message.id.as_deref(),
                data["id"].as_str(),
                "id: is the invocation id"
            );
            return data;
        }
        assert_ne!(message.event.as_deref(), Some("end"), "{message:?}");
    }
}

async fn the_live_stream_sends_each_finished_invocation_of_its_app_as_it_is_recorded(db: Backend) {
    let app = spawn_app(db).await;
    app.endpoint("shop", "hello", "GET /hello", r#""hi""#).await;
    app.endpoint("shop", "boom", "GET /boom", r#"throw "no""#)
        .await;
    app.endpoint(
        "shop",
        "go",
        "POST /go",
        r#"pubsub::publish("orders", #{ n: 1 }); "ok""#,
    )
    .await;
    app.handler(
        "shop",
        "on-order",
        json!({ "kind": "topic", "topic": "orders" }),
        r#"log::info("order " + event.payload.n);"#,
    )
    .await;
    app.endpoint("blog", "post", "GET /post", r#""post""#).await;

    let mut all = open(&app, "/apps/shop/invocations/stream").await;
    let mut errors = open(&app, "/apps/shop/invocations/stream?status=error").await;
    let mut by_script = open(&app, "/apps/shop/invocations/stream?script=on-order").await;
    let mut topic_runs = open(&app, "/apps/shop/invocations/stream?trigger=topic").await;

    // Another app's run is never on shop's stream.
    assert_eq!(app.get("/blog/post").await.status(), 200);
    let hello = app.get("/shop/hello").await;
    assert_eq!(hello.status(), 200);
    let seen = next_invocation(&mut all).await;
    assert_eq!(seen["id"], invocation_id(&hello).as_str());
    assert_eq!(seen["script"], "hello");
    assert_eq!(seen["trigger"], "http");
    assert_eq!(seen["status"], "ok");
    assert_eq!(seen["http_status"], 200);
    assert_eq!(seen["version"], 1);
    assert!(seen["duration_ms"].is_u64() && seen["started_at"].is_string());
    assert!(
        seen.get("logs").is_none(),
        "logs stay in the record: {seen}"
    );

    let boom = app.get("/shop/boom").await;
    assert_eq!(boom.status(), 500);
    let seen = next_invocation(&mut all).await;
    assert_eq!(seen["id"], invocation_id(&boom).as_str());
    assert_eq!(seen["status"], "error");
    let only_error = next_invocation(&mut errors).await;
    assert_eq!(
        only_error["id"], seen["id"],
        "the first error is boom's, not hello's"
    );

    // An event run (committed by the dispatcher, not the HTTP recorder) is streamed too.
    let go = app.call(Method::POST, "/shop/go").send().await.unwrap();
    assert_eq!(go.status(), 200);
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let seen = next_invocation(&mut all).await;
        kinds.push((seen["script"].clone(), seen["trigger"].clone()));
    }
    kinds.sort_by_key(|k| k.0.to_string());
    assert_eq!(
        kinds,
        [
            (json!("go"), json!("http")),
            (json!("on-order"), json!("topic"))
        ]
    );
    let event_run = next_invocation(&mut by_script).await;
    assert_eq!(event_run["script"], "on-order");
    assert_eq!(event_run["status"], "ok");
    // Filtered by trigger kind on the server: hello, boom and go (http) never came.
    let first_topic_run = next_invocation(&mut topic_runs).await;
    assert_eq!(first_topic_run["id"], event_run["id"]);

    // Every streamed record is in the list.
    let listed = app.invocations("shop", "limit=10").await;
    assert!(
        listed["invocations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == event_run["id"])
    );
}

async fn bad_live_stream_requests_get_json_errors(db: Backend) {
    let app = spawn_app(db).await;
    app.endpoint("shop", "hello", "GET /hello", r#""hi""#).await;
    for (path, status, code) in [
        ("/apps/nope/invocations/stream", 404, "not_found"),
        (
            "/apps/shop/invocations/stream?status=maybe",
            400,
            "invalid_input",
        ),
        (
            "/apps/shop/invocations/stream?script=Bad%20Name",
            400,
            "invalid_input",
        ),
        (
            "/apps/shop/invocations/stream?limit=5",
            400,
            "invalid_input",
        ),
        (
            "/apps/shop/invocations/stream?trigger=carrier-pigeon",
            400,
            "invalid_input",
        ),
    ] {
        let res = app.admin(Method::GET, path).send().await.unwrap();
        assert_eq!(res.status(), status, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
    }
    let anonymous = app
        .client
        .get(format!("{}/api/v1/apps/shop/invocations/stream", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // The server is still up and streams.
    let _ = open(&app, "/apps/shop/invocations/stream").await;
}

async fn an_open_live_stream_ends_when_the_server_shuts_down(db: Backend) {
    // A grace far longer than `stop` waits: only ending the stream lets it finish in time.
    let mut app = spawn_app_with(db, |c| c.http.shutdown_grace_ms = 120_000).await;
    app.endpoint("shop", "hello", "GET /hello", r#""hi""#).await;
    let mut stream = open(&app, "/apps/shop/invocations/stream").await;
    app.stop().await;
    while let Some(message) = stream.next().await {
        assert_ne!(message.event.as_deref(), Some("invocation"), "{message:?}");
    }
}

async fn picloud_logs_follow_prints_each_invocation_as_it_happens(db: Backend) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let app = spawn_app(db).await;
    app.endpoint(
        "shop",
        "hello",
        "GET /hello",
        r#"log::info("hello there"); "hi""#,
    )
    .await;
    let before = invocation_id(&app.get("/shop/hello").await);
    let mut child = Command::new(env!("CARGO_BIN_EXE_picloud"))
        .args(["logs", "shop", "--follow"])
        .env("PICLOUD_URL", &app.url)
        .env("PICLOUD_TOKEN", picloud::config::TEST_ADMIN_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run picloud logs --follow");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |id: &str| -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("picloud logs printed {id} within 20 s: {lines:?}"));
            let done = line.contains(id);
            lines.push(line);
            if done {
                return lines;
            }
        }
    };
    // The record from before is listed; the stream was opened before that list.
    wait_for(&before);
    let after = invocation_id(&app.get("/shop/hello").await);
    let mut lines = wait_for(&after);
    // Its log line follows its summary line.
    lines.push(
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("the log line"),
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines.iter().all(|l| !l.contains(&before)),
        "printed once: {lines:?}"
    );
    assert!(
        lines.last().unwrap().contains("[info] hello there"),
        "{lines:?}"
    );
}
