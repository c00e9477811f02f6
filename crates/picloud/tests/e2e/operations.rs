//! Health, readiness, metrics and the shutdown order.
use std::time::Duration;

use crate::common::{invocation_id, spawn_app, spawn_app_with};
use testkit::{Backend, on_both_backends};

on_both_backends!(
    health_readiness_and_metrics_answer_without_a_token,
    shutdown_finishes_in_flight_requests_and_flushes_their_records,
);

async fn health_readiness_and_metrics_answer_without_a_token(db: Backend) {
    let app = spawn_app(db).await;
    app.endpoint("shop", "hello", "GET /hello", "\"hi\"").await;
    app.get("/shop/hello").await;

    let res = app.get("/healthz").await;
    assert_eq!(res.status(), 200);
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 200);
    let ready: serde_json::Value = res.json().await.unwrap();
    let backend = match db {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(ready["database"], backend);

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("picloud_http_requests_total"), "{metrics}");
    // The latency histograms of the hot path, counted per thread, render as one family
    // each, with the request above in them.
    for name in [
        "picloud_http_request_duration_seconds",
        "picloud_script_duration_seconds",
    ] {
        let family = format!("# TYPE {name} histogram");
        assert_eq!(metrics.matches(&family).count(), 1, "{metrics}");
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}_count ")))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name}_count in {metrics}"));
        assert!(count >= 1, "{metrics}");
        assert!(
            metrics.contains(&format!("{name}_bucket{{le=\"+Inf\"}} {count}")),
            "{metrics}"
        );
    }
}

async fn shutdown_finishes_in_flight_requests_and_flushes_their_records(db: Backend) {
    // A busy loop for 400 ms: enough operations that the test's usual budget would stop it.
    let mut app = spawn_app_with(db, |c| c.limits.max_operations = 1_000_000_000).await;
    app.endpoint(
        "shop",
        "slow",
        "GET /slow",
        // Busy for a little while, then answer: in flight when shutdown starts.
        r#"let deadline = time::now_ms() + 400; while time::now_ms() < deadline { } "done""#,
    )
    .await;
    let call = tokio::spawn(app.call(reqwest::Method::GET, "/shop/slow").send());
    // A head start so the call is in flight when shutdown begins (nothing signals that a
    // script started; its 400 ms of work leave room on a loaded machine).
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.stop().await;

    let res = call
        .await
        .unwrap()
        .expect("the in-flight request was answered");
    assert_eq!(res.status(), 200);
    let id = invocation_id(&res);
    assert_eq!(res.text().await.unwrap(), "done");

    // The record was written before the server finished: read it with a new connection.
    let reopened = storage::connect(&app.database_url).await.unwrap();
    let app_name = shared::AppName::parse("shop").unwrap();
    let found = reopened
        .invocations
        .get(&app_name, id.parse().unwrap())
        .await
        .unwrap();
    assert!(
        found.is_some(),
        "the invocation record was flushed on shutdown"
    );
}
