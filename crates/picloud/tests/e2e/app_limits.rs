//! Limits per app and per script: a busy app is held to its concurrency cap while another
//! app is served, on the HTTP path and on the event path (where waiting uses no attempt);
//! a lower operation or time limit stops one app's script while another app runs the same
//! script with the server's defaults; a rate turns extra requests into 429s; the CLI sets,
//! shows and resets them.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::{Method, Response};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::common::{TestApp, cli, invocation_id, record_of, record_where, spawn_app_with};
use testkit::{Backend, on_both_backends};

on_both_backends!(
    a_busy_app_is_held_to_its_concurrency_limit_while_another_app_is_served,
    a_lower_app_limit_stops_its_script_while_another_app_runs_the_same_script_fine,
    an_apps_events_wait_for_its_concurrency_cap_without_using_attempts,
    requests_over_an_apps_rate_get_429_with_retry_after,
    the_cli_sets_shows_and_resets_an_apps_limits,
);

/// A loopback server whose every request says it started, then waits until the gate
/// opens; it counts how many were inside at once.
struct Gate {
    url: String,
    started: mpsc::UnboundedReceiver<()>,
    open: watch::Sender<bool>,
    most_at_once: Arc<AtomicUsize>,
}

async fn gate() -> Gate {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hold", listener.local_addr().unwrap());
    let (started_tx, started) = mpsc::unbounded_channel();
    let (open, opened) = watch::channel(false);
    let inside = Arc::new(AtomicUsize::new(0));
    let most_at_once = Arc::new(AtomicUsize::new(0));
    let most = Arc::clone(&most_at_once);
    let router = axum::Router::new().route(
        "/hold",
        axum::routing::get(move || {
            let (started, mut opened) = (started_tx.clone(), opened.clone());
            let (inside, most) = (Arc::clone(&inside), Arc::clone(&most));
            async move {
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let _ = started.send(());
                let _ = opened.wait_for(|open| *open).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                "through"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Gate {
        url,
        started,
        open,
        most_at_once,
    }
}

impl Gate {
    async fn next_started(&mut self) {
        tokio::time::timeout(std::time::Duration::from_secs(20), self.started.recv())
            .await
            .expect("a request reached the gate within 20 s")
            .expect("the gate is up");
    }

    fn open(&self) {
        self.open.send_replace(true);
    }

    fn most_at_once(&self) -> usize {
        self.most_at_once.load(Ordering::SeqCst)
    }
}

/// `PUT` limits at `path` (`shop` or `shop/scripts/s`) as the admin; the answer's body.
async fn set_limits(app: &TestApp, path: &str, limits: Value) -> Value {
    let res = app
        .admin(Method::PUT, &format!("/apps/{path}/limits"))
        .json(&limits)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "set limits of {path}");
    res.json().await.unwrap()
}

async fn text(res: Response) -> (u16, String) {
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn a_busy_app_is_held_to_its_concurrency_limit_while_another_app_is_served(db: Backend) {
    // Two script threads: without a cap, `busy` alone could take both.
    let app = spawn_app_with(db, |c| {
        c.executor.threads = 2;
        c.limits.timeout_ms = 10_000;
    })
    .await;
    let mut gate = gate().await;
    let slow = format!(r#"http::get("{}"); "done""#, gate.url);
    app.endpoint("busy", "slow", "GET /slow", &slow).await;
    app.endpoint("calm", "hello", "GET /hello", r#""hello""#)
        .await;
    set_limits(&app, "busy", json!({"max_concurrency": 1})).await;

    let first = tokio::spawn(app.call(Method::GET, "/busy/slow").send());
    gate.next_started().await;
    // `busy` has its one invocation running: the next is refused at once, not queued.
    let refused = app.get("/busy/slow").await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_requests", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at its limit of 1 invocations at once"),
        "{body}"
    );
    // Meanwhile another app is served on the other thread.
    for _ in 0..3 {
        assert_eq!(
            text(app.get("/calm/hello").await).await,
            (200, "hello".into())
        );
    }

    gate.open();
    let done = first.await.unwrap().unwrap();
    assert_eq!(text(done).await, (200, "done".into()));
    assert_eq!(
        text(app.get("/busy/slow").await).await,
        (200, "done".into())
    );
    assert_eq!(gate.most_at_once(), 1);
}

async fn a_lower_app_limit_stops_its_script_while_another_app_runs_the_same_script_fine(
    db: Backend,
) {
    let app = spawn_app_with(db, |_| {}).await;
    let mut recorded = app.recorded();
    let count = r#"let i = 0; while i < 50000 { i += 1; } "counted""#;
    let nap = r#"sleep(0.3); "rested""#;
    for name in ["tight", "roomy"] {
        app.endpoint(name, "count", "GET /count", count).await;
        app.endpoint(name, "nap", "GET /nap", nap).await;
    }
    let shown = set_limits(
        &app,
        "tight",
        json!({"max_operations": 10_000, "timeout_ms": 100}),
    )
    .await;
    assert_eq!(shown["effective"]["max_operations"], 10_000);

    let res = app.get("/tight/count").await;
    assert_eq!(res.status(), 500);
    let record = record_of(&mut recorded, &invocation_id(&res)).await;
    assert_eq!(record.error.as_deref(), Some("operation limit exceeded"));
    let res = app.get("/tight/nap").await;
    assert_eq!(res.status(), 504);
    let record = record_of(&mut recorded, &invocation_id(&res)).await;
    assert_eq!(
        record.error.as_deref(),
        Some("wall-clock limit of 100ms exceeded")
    );

    // The same scripts under the server's defaults.
    assert_eq!(
        text(app.get("/roomy/count").await).await,
        (200, "counted".into())
    );
    assert_eq!(
        text(app.get("/roomy/nap").await).await,
        (200, "rested".into())
    );

    // A script's own limit: only that script of the app is held to it.
    set_limits(
        &app,
        "roomy/scripts/count",
        json!({"max_operations": 10_000}),
    )
    .await;
    assert_eq!(app.get("/roomy/count").await.status(), 500);
    assert_eq!(
        text(app.get("/roomy/nap").await).await,
        (200, "rested".into())
    );
    let res = app
        .admin(Method::DELETE, "/apps/roomy/scripts/count/limits")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        text(app.get("/roomy/count").await).await,
        (200, "counted".into())
    );
}

async fn an_apps_events_wait_for_its_concurrency_cap_without_using_attempts(db: Backend) {
    let app = spawn_app_with(db, |c| {
        c.executor.threads = 2;
        c.limits.timeout_ms = 10_000;
    })
    .await;
    let mut recorded = app.recorded();
    let mut gate = gate().await;
    // One attempt each: waiting for the cap must not use it up.
    let work = format!(r#"http::get("{}"); kv::incr("done", 1);"#, gate.url);
    app.handler(
        "jobs",
        "work",
        json!({"kind": "queue", "queue": "work", "max_attempts": 1}),
        &work,
    )
    .await;
    app.endpoint(
        "jobs",
        "enqueue",
        "POST /enqueue",
        r#"for i in 0..4 { queue::send("work", i); } "queued""#,
    )
    .await;
    app.handler(
        "other",
        "note",
        json!({"kind": "queue", "queue": "notes"}),
        r#"kv::set("seen", true);"#,
    )
    .await;
    app.endpoint(
        "other",
        "ping",
        "POST /ping",
        r#"queue::send("notes", 1); "sent""#,
    )
    .await;
    set_limits(&app, "jobs", json!({"max_concurrency": 1})).await;

    let res = app
        .call(Method::POST, "/jobs/enqueue")
        .send()
        .await
        .unwrap();
    assert_eq!(text(res).await, (200, "queued".into()));
    gate.next_started().await;
    // One `work` holds the app's one slot and the others wait; another app's event still
    // gets the second script thread.
    let res = app.call(Method::POST, "/other/ping").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let note = record_where(&mut recorded, |r| {
        r.app.as_str() == "other" && r.trigger == "queue"
    })
    .await;
    assert_eq!(note.error, None);
    assert_eq!(gate.most_at_once(), 1, "the other events of jobs waited");

    gate.open();
    for _ in 0..4 {
        let record = record_where(&mut recorded, |r| {
            r.app.as_str() == "jobs" && r.trigger == "queue"
        })
        .await;
        assert_eq!(record.error, None, "{record:?}");
        assert_eq!(record.attempt, Some(1), "waiting used no attempt");
    }
    assert_eq!(gate.most_at_once(), 1);
    assert_eq!(app.kv("jobs", "done").await, Some(json!(4)));
    assert!(app.dead_letters("jobs").await.is_empty());
}

async fn requests_over_an_apps_rate_get_429_with_retry_after(db: Backend) {
    let app = spawn_app_with(db, |_| {}).await;
    app.endpoint("limited", "hi", "GET /hi", r#""hi""#).await;
    app.endpoint("free", "hi", "GET /hi", r#""hi""#).await;
    set_limits(&app, "limited", json!({"max_requests_per_sec": 1})).await;

    assert_eq!(app.get("/limited/hi").await.status(), 200);
    // A rate of one allows one request a second: of the next five, sent at once, at least
    // one is refused.
    let mut refused = 0;
    for _ in 0..5 {
        let res = app.get("/limited/hi").await;
        if res.status() == 429 {
            let wait: u64 = res.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(wait >= 1);
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "too_many_requests");
            refused += 1;
        }
    }
    assert!(refused >= 1, "none of five requests was refused");
    for _ in 0..6 {
        assert_eq!(
            app.get("/free/hi").await.status(),
            200,
            "another app is not limited"
        );
    }
}

async fn the_cli_sets_shows_and_resets_an_apps_limits(db: Backend) {
    let app = spawn_app_with(db, |_| {}).await;
    app.endpoint("shop", "hi", "GET /hi", r#""hi""#).await;
    let (ok, out) = cli(&app, &["limits", "set", "shop", "--timeout-ms", "1500"]).await;
    assert!(ok, "{out}");
    let (ok, out) = cli(
        &app,
        &["limits", "set", "shop", "--max-concurrency", "3", "--json"],
    )
    .await;
    assert!(ok, "{out}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        shown["overrides"],
        json!({"timeout_ms": 1500, "max_concurrency": 3}),
        "set keeps what it does not name"
    );
    let (ok, out) = cli(&app, &["limits", "show", "shop"]).await;
    assert!(ok, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("timeout_ms"))
        .unwrap_or_default();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["timeout_ms", "1500", "1500"]
    );
    let (ok, out) = cli(
        &app,
        &[
            "limits",
            "set",
            "shop",
            "--script",
            "hi",
            "--max-call-depth",
            "100000",
        ],
    )
    .await;
    assert!(!ok, "the server refuses what it cannot take");
    assert!(
        out.contains("max_call_depth must be an integer from 1 to"),
        "{out}"
    );
    let (ok, out) = cli(&app, &["limits", "reset", "shop"]).await;
    assert!(ok, "{out}");
    let (_, out) = cli(&app, &["limits", "show", "shop", "--json"]).await;
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["overrides"], json!({}));
}
