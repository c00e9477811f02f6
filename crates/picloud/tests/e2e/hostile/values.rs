//! Hostile values: a value nested thousands of levels deep (printed, stored, published,
//! returned), a chain of closures that capture each other, and an event whose every run
//! is cut off by the death of its process. None of them may take the server down, and a
//! poison event ends in the dead letters instead of crash-looping the node.
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::binary::start;
use crate::common::{invocation_id, record_of, record_where, spawn_app_with};
use testkit::{Backend, eventually, on_both_backends};

on_both_backends!(
    deep_values_and_closure_chains_are_stopped_and_other_apps_are_still_served,
    an_event_interrupted_by_kill_9_max_attempts_times_is_dead_lettered,
);

/// A linked list `levels` deep, built in a loop as a hostile script would.
fn linked_list(levels: u32) -> String {
    format!("let l = (); for i in 0..{levels} {{ l = #{{ n: take(l) }}; }}\n")
}

async fn deep_values_and_closure_chains_are_stopped_and_other_apps_are_still_served(db: Backend) {
    let app = spawn_app_with(db, |c| {
        // The default budget: the stack must hold whatever it lets a script build.
        c.limits.max_operations = 10_000_000;
        c.limits.timeout_ms = 20_000;
    })
    .await;
    app.endpoint("other", "ok", "GET /ok", r#""ok""#).await;
    let mut recorded = app.recorded();
    let list = linked_list(5_000);
    let cases = [
        ("print", "print(l); 1"),
        ("kv", "kv::set(\"k\", l); 1"),
        ("publish", "pubsub::publish(\"t\", l); 1"),
        ("text", "`${l}`"),
        ("compare", "l == l"),
        ("returned", "l"),
    ];
    for (name, tail) in cases {
        app.endpoint(
            "evil",
            name,
            &format!("GET /{name}"),
            &format!("{list}{tail}"),
        )
        .await;
        let res = app.get(&format!("/evil/{name}")).await;
        assert_eq!(res.status(), 500, "{name}");
        let id = invocation_id(&res);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "script_failed", "{name}: {body}");
        let record = record_of(&mut recorded, &id).await;
        let error = record.error.unwrap_or_default();
        assert!(error.contains("deeper than 100 levels"), "{name}: {error}");
    }
    assert!(app.kv("evil", "k").await.is_none(), "nothing was stored");

    // A chain of 300,000 closures, each capturing the one before: dropped by recursion
    // inside Rhai, which a 16 MiB stack did not survive.
    app.endpoint(
        "evil",
        "chain",
        "GET /chain",
        r#"let f = || 0; for i in 0..300000 { let g = f; f = || g; } "built""#,
    )
    .await;
    let res = app.get("/evil/chain").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "built");

    // A queue handler that fails on a deep value every time: retried, then a dead letter.
    app.handler(
        "evil",
        "poison",
        json!({"kind": "queue", "queue": "jobs", "max_attempts": 2}),
        &format!("{list}pubsub::publish(\"t\", l);"),
    )
    .await;
    app.endpoint(
        "evil",
        "enqueue",
        "POST /enqueue",
        r#"queue::send("jobs", #{ n: 1 }); "queued""#,
    )
    .await;
    let res = app
        .call(Method::POST, "/evil/enqueue")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    record_where(&mut recorded, |r| {
        r.script.as_str() == "poison" && r.attempt == Some(2)
    })
    .await;
    let letters = wait_for_dead_letters(&app, "evil").await;
    assert!(
        letters[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("deeper than 100 levels"),
        "{letters:?}"
    );

    let ok = app.get("/other/ok").await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "ok");
}

async fn wait_for_dead_letters(app: &crate::common::TestApp, name: &str) -> Vec<Value> {
    eventually("a dead letter", Duration::from_secs(20), async || {
        let letters = app.dead_letters(name).await;
        (!letters.is_empty()).then_some(letters)
    })
    .await
}

const TOKEN: &str = "pct_poison_test_admin_token";

/// A queue handler that blocks on a request to this test's listener, so the test knows
/// its run has started, then `kill -9` while it runs: twice with `max_attempts: 2`. The
/// third start must dead-letter the event without running it again.
async fn an_event_interrupted_by_kill_9_max_attempts_times_is_dead_lettered(db: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let trap = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_url = format!("http://{}/hang", trap.local_addr().unwrap());
    let mut env: Vec<(String, String)> = vec![
        ("PICLOUD_ADMIN_TOKEN".into(), TOKEN.into()),
        ("PICLOUD_EVENTS__LEASE_SECS".into(), "2".into()),
        ("PICLOUD_LIMITS__TIMEOUT_MS".into(), "1000".into()),
        (
            "PICLOUD_OUTBOUND__ALLOW_CIDRS".into(),
            "[\"127.0.0.1/32\"]".into(),
        ),
    ];
    let schema = match db {
        Backend::Postgres => Some(storage::testing::TestUrl::postgres().await),
        Backend::Sqlite => None,
    };
    if let Some(schema) = &schema {
        env.push(("PICLOUD_DATABASE_URL".into(), schema.url.clone()));
    }
    let spawn = || {
        let dir = dir.path().to_path_buf();
        let env = env.clone();
        tokio::task::spawn_blocking(move || {
            let pairs: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            start(&dir, &pairs)
        })
    };
    let http = reqwest::Client::new();
    let mut running = spawn().await.unwrap();
    let admin = |running: &crate::binary::Running, method: Method, path: &str| {
        http.request(method, format!("{}/api/v1{path}", running.url))
            .bearer_auth(TOKEN)
    };
    let setup = [
        (Method::POST, "/apps".to_owned(), json!({"name": "poison"})),
        (
            Method::PUT,
            "/apps/poison/scripts/hang".to_owned(),
            json!({"source": format!("http::get(\"{trap_url}\"); \"done\"")}),
        ),
        (
            Method::PUT,
            "/apps/poison/scripts/send".to_owned(),
            json!({"source": "queue::send(\"jobs\", #{ n: 1 }); \"sent\""}),
        ),
        (
            Method::POST,
            "/apps/poison/triggers".to_owned(),
            json!({"kind": "queue", "queue": "jobs", "script": "hang", "max_attempts": 2}),
        ),
        (
            Method::POST,
            "/apps/poison/triggers".to_owned(),
            json!({"kind": "http", "method": "POST", "path": "/send", "script": "send"}),
        ),
    ];
    for (method, path, body) in setup {
        let res = admin(&running, method, &path)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            res.status().is_success(),
            "{path}: {}",
            res.text().await.unwrap()
        );
    }
    let sent = http
        .post(format!("{}/poison/send", running.url))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);

    for attempt in 1..=2 {
        // The run has started once it connects to the trap; then the process dies.
        let Ok(accepted) = tokio::time::timeout(Duration::from_secs(30), trap.accept()).await
        else {
            let seen = admin(&running, Method::GET, "/apps/poison/invocations")
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            panic!("attempt {attempt} did not start; invocations: {seen}");
        };
        let (conn, _) = accepted.unwrap();
        running.child.kill().expect("kill -9");
        running.child.wait().unwrap();
        drop(conn);
        running = spawn().await.unwrap();
    }

    let letters = eventually("a dead letter", Duration::from_secs(30), async || {
        let res = admin(&running, Method::GET, "/apps/poison/dead-letters")
            .send()
            .await
            .unwrap();
        let letters = res.json::<Value>().await.unwrap()["dead_letters"].clone();
        letters
            .as_array()
            .is_some_and(|l| !l.is_empty())
            .then_some(letters)
    })
    .await;
    assert_eq!(letters.as_array().map(Vec::len), Some(1), "{letters}");
    assert!(
        letters[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("interrupted"),
        "{letters}"
    );
    assert_eq!(letters[0]["attempts"], 2, "{letters}");
    // It never ran a third time.
    let third = tokio::time::timeout(Duration::from_millis(500), trap.accept()).await;
    assert!(third.is_err(), "the poison event ran again");
    // The node still serves.
    let sent = http
        .post(format!("{}/poison/send", running.url))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
}
