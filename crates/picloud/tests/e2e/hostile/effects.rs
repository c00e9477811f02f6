//! Hostile scripts against the run's time and effects: sleeping on every script thread,
//! flooding the effects buffer, overflowing a counter, leaving blob objects behind,
//! writing into an app deleted and created again mid-run. Each must end cleanly and
//! leave another app answering normally.
use std::sync::Arc;

use axum::routing::get;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::common::{TestApp, invocation_id, record_of, record_where, spawn_app_with};
use testkit::{Backend, on_both_backends};

on_both_backends!(
    sleeping_on_every_script_thread_ends_at_the_wall_clock_and_other_apps_still_answer,
    a_flood_of_buffered_writes_stops_at_the_effects_caps_and_commits_nothing,
    an_increment_past_the_64_bit_range_is_a_script_error_and_keeps_the_value,
    failed_and_timed_out_runs_leave_no_blob_object_behind,
    a_run_cannot_write_into_an_app_deleted_and_created_again_under_its_name,
);

/// Another app answers, normally, after the hostile one did its worst.
async fn others_still_answer(app: &TestApp) {
    app.endpoint("bystander", "fine", "GET /fine", r#""fine""#)
        .await;
    let res = app.get("/bystander/fine").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "fine");
}

/// The error of a failed call's invocation record.
async fn failure_of(app: &TestApp, path: &str, status: u16) -> String {
    let mut recorded = app.recorded();
    let res = app.get(path).await;
    assert_eq!(res.status(), status, "{path}");
    let id = invocation_id(&res);
    record_of(&mut recorded, &id)
        .await
        .error
        .unwrap_or_default()
}

async fn sleeping_on_every_script_thread_ends_at_the_wall_clock_and_other_apps_still_answer(
    db: Backend,
) {
    // Two script threads (as in every test config), one second of wall clock.
    let app = spawn_app_with(db, |c| c.limits.timeout_ms = 1_000).await;
    app.endpoint("lab", "forever", "GET /forever", "sleep(1e9); 1")
        .await;
    app.endpoint("lab", "long", "GET /long", "sleep(50); 1")
        .await;
    let mut recorded = app.recorded();
    let sleepers = [
        tokio::spawn(app.call(Method::GET, "/lab/forever").send()),
        tokio::spawn(app.call(Method::GET, "/lab/long").send()),
    ];
    let mut ids = Vec::new();
    for sleeper in sleepers {
        let res = sleeper.await.unwrap().unwrap();
        assert_eq!(res.status(), 504);
        ids.push(invocation_id(&res));
    }
    // The two records may come in either order: wait for one of them, twice.
    for _ in 0..2 {
        let record = record_where(&mut recorded, |r| ids.contains(&r.id.to_string())).await;
        assert_eq!(record.status, shared::InvocationStatus::Timeout);
        assert_eq!(
            record.error.as_deref(),
            Some("wall-clock limit of 1s exceeded")
        );
        ids.retain(|id| *id != record.id.to_string());
    }
    others_still_answer(&app).await;
    // Zero, negative and NaN sleeps are no sleeps at all.
    app.endpoint(
        "lab",
        "odd",
        "GET /odd",
        r#"sleep(0); sleep(-1); sleep(-2.5); sleep(parse_float("NaN")); "awake""#,
    )
    .await;
    assert_eq!(app.get("/lab/odd").await.text().await.unwrap(), "awake");
}

/// Resident memory of this process (the server runs in it), for the log only.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn a_flood_of_buffered_writes_stops_at_the_effects_caps_and_commits_nothing(db: Backend) {
    let app = spawn_app_with(db, |c| {
        c.limits.max_operations = 50_000_000;
        c.limits.timeout_ms = 10_000;
    })
    .await;
    // The reported flood: 4,000 values of 250 KB in one run (1 GB had it gone through).
    let flood = r#"let v = "x"; v.pad(250000, "x");
        for i in 0..4000 { kv::set(`big${i}`, v); } "done""#;
    app.endpoint("lab", "flood", "GET /flood", flood).await;
    let before = rss_kib();
    let error = failure_of(&app, "/lab/flood", 500).await;
    assert!(
        error.contains("kv::set: a run may buffer at most 16777216 bytes")
            && error.contains("max_effect_bytes_per_run"),
        "{error}"
    );
    println!(
        "RSS around the flood: {before:?} KiB before, {:?} KiB after",
        rss_kib()
    );
    assert_eq!(
        app.kv("lab", "big0").await,
        None,
        "the run committed nothing"
    );

    // Many small writes hit the count cap, whatever mixes them.
    let many = r#"for i in 0..2000 { if i % 2 == 0 { kv::set(`k${i}`, i) }
        else { pubsub::publish("t", i) } } "done""#;
    app.endpoint("lab", "many", "GET /many", many).await;
    let error = failure_of(&app, "/lab/many", 500).await;
    assert!(
        // The 1,001st call is a kv::set (i = 1000).
        error.contains("kv::set: a run may buffer at most 1000 writes and events")
            && error.contains("max_effects_per_run"),
        "{error}"
    );
    assert_eq!(app.kv("lab", "k0").await, None);

    // Rewriting one key or counting in a loop holds one entry: no cap is near.
    let rewrite = r#"for i in 0..5000 { kv::set("last", i); kv::incr("hits"); } "ok""#;
    app.endpoint("lab", "rewrite", "GET /rewrite", rewrite)
        .await;
    assert_eq!(app.get("/lab/rewrite").await.text().await.unwrap(), "ok");
    assert_eq!(app.kv("lab", "last").await, Some(json!(4999)));
    assert_eq!(app.kv("lab", "hits").await, Some(json!(5000)));

    // The cap is a script error: a script may catch it and commit what fit.
    let caught = r#"let n = 0; try { for i in 0..2000 { kv::set(`c${i}`, i); n += 1; } }
        catch (e) { return #{ n: n, error: e }; }"#;
    app.endpoint("lab", "caught", "GET /caught", caught).await;
    let body: Value = app.get("/lab/caught").await.json().await.unwrap();
    assert_eq!(body["n"], 1000, "{body}");
    assert_eq!(app.kv("lab", "c999").await, Some(json!(999)));
    others_still_answer(&app).await;
}

async fn an_increment_past_the_64_bit_range_is_a_script_error_and_keeps_the_value(db: Backend) {
    let app = spawn_app_with(db, |_| {}).await;
    app.endpoint(
        "lab",
        "max",
        "POST /max",
        r#"kv::set("n", 9223372036854775807); kv::set("m", -9223372036854775807 - 1); ()"#,
    )
    .await;
    app.endpoint("lab", "up", "GET /up", r#"kv::incr("n")"#)
        .await;
    app.endpoint("lab", "down", "GET /down", r#"kv::incr("m", -1)"#)
        .await;
    let res = app.call(Method::POST, "/lab/max").send().await.unwrap();
    assert_eq!(res.status(), 204);
    for (path, call) in [("/lab/up", "kv::incr"), ("/lab/down", "kv::incr")] {
        let error = failure_of(&app, path, 500).await;
        assert!(
            error.contains(&format!(
                "{call}: the result would overflow a 64-bit integer"
            )),
            "{path}: {error}"
        );
    }
    assert_eq!(app.kv("lab", "n").await, Some(json!(i64::MAX)));
    assert_eq!(app.kv("lab", "m").await, Some(json!(i64::MIN)));
    others_still_answer(&app).await;
}

/// Object files the app has in the local blob directory.
fn objects_of(app: &TestApp, name: &str) -> Vec<String> {
    let dir = app.dir.path().join("data").join("blobs").join(name);
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("blob directory: {e}"),
    }
}

async fn failed_and_timed_out_runs_leave_no_blob_object_behind(db: Backend) {
    let app = spawn_app_with(db, |c| {
        c.limits.timeout_ms = 1_000;
        c.limits.max_operations = u64::MAX / 2;
    })
    .await;
    let cases = [
        ("throws", r#"blob::put("a", "x"); throw "no""#, 500),
        ("spins", r#"blob::put("a", "x"); loop {}"#, 504),
        ("sleeps", r#"blob::put("a", "x"); sleep(60); 1"#, 504),
        (
            "over",
            r#"blob::put("a", "x"); blob::put("a", "y"); invoke("fails", ()); 1"#,
            500,
        ),
    ];
    app.endpoint(
        "lab",
        "fails",
        "GET /fails",
        r#"blob::put("b", "z"); throw "no""#,
    )
    .await;
    for (name, source, status) in cases {
        app.endpoint("lab", name, &format!("GET /{name}"), source)
            .await;
        failure_of(&app, &format!("/lab/{name}"), status).await;
        assert_eq!(objects_of(&app, "lab"), Vec::<String>::new(), "{name}");
    }
    // A put over a name the run put before deletes the first object at once.
    app.endpoint(
        "lab",
        "twice",
        "GET /twice",
        r#"blob::put("a", "x"); blob::put("a", "y"); "ok""#,
    )
    .await;
    assert_eq!(app.get("/lab/twice").await.text().await.unwrap(), "ok");
    assert_eq!(objects_of(&app, "lab").len(), 1);
    others_still_answer(&app).await;
}

/// A loopback server whose `/hold` tells `started`, then answers once `release` fires.
async fn holding_server(started: Arc<Notify>, release: Arc<Notify>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hold", listener.local_addr().unwrap());
    let router = axum::Router::new().route(
        "/hold",
        get(move || {
            let (started, release) = (Arc::clone(&started), Arc::clone(&release));
            async move {
                started.notify_one();
                release.notified().await;
                "go"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

async fn a_run_cannot_write_into_an_app_deleted_and_created_again_under_its_name(db: Backend) {
    let app = spawn_app_with(db, |c| c.limits.timeout_ms = 10_000).await;
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let url = holding_server(Arc::clone(&started), Arc::clone(&release)).await;
    let source = format!(r#"kv::set("k", "old"); http::get("{url}"); "done""#);
    app.endpoint("shop", "slow", "GET /slow", &source).await;
    let run = tokio::spawn(app.call(Method::GET, "/shop/slow").send());

    // While the run waits, its app is deleted and one of the same name created.
    started.notified().await;
    let res = app
        .admin(Method::DELETE, "/apps/shop")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    app.endpoint("shop", "fine", "GET /fine", r#""new shop""#)
        .await;
    release.notify_one();

    let res = run.await.unwrap().unwrap();
    assert_eq!(res.status(), 500, "the commit fails cleanly");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "internal", "{body}");
    assert_eq!(app.kv("shop", "k").await, None, "the new app got nothing");
    assert_eq!(
        app.get("/shop/fine").await.text().await.unwrap(),
        "new shop"
    );
    others_still_answer(&app).await;
}
