//! Crash safety: `kill -9` the server while 10,000 events are in flight, restart it, and
//! every event's effect is there exactly once (a KV counter per event, committed in the
//! same transaction as the event's outbox row deletion).
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::binary::start;

const EVENTS: u64 = 10_000;
const TOKEN: &str = "pct_crash_test_admin_token";

struct Admin {
    url: String,
    http: reqwest::Client,
}

impl Admin {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.expect("the server answers")
    }

    async fn total(&self) -> u64 {
        let res = self
            .send(reqwest::Method::GET, "/api/v1/apps/crash/kv/total", None)
            .await;
        if res.status() == 404 {
            return 0;
        }
        res.json::<Value>().await.unwrap()["value"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Wait (bounded) until the counter reaches `at_least`.
    async fn wait_total(&self, at_least: u64, within: Duration) -> u64 {
        testkit::eventually(&format!("a total of {at_least}"), within, async || {
            let total = self.total().await;
            (total >= at_least).then_some(total)
        })
        .await
    }
}

async fn kill_nine_with_events_in_flight_loses_nothing_and_repeats_nothing(
    data_dir: &Path,
    envs: Vec<(String, String)>,
) {
    let mut env: Vec<(String, String)> = vec![
        ("PICLOUD_ADMIN_TOKEN".into(), TOKEN.into()),
        ("PICLOUD_EVENTS__LEASE_SECS".into(), "2".into()),
        ("PICLOUD_LIMITS__TIMEOUT_MS".into(), "1000".into()),
    ];
    env.extend(envs);
    let spawn = {
        let dir = data_dir.to_path_buf();
        let env = env.clone();
        move || {
            let pairs: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            start(&dir, &pairs)
        }
    };
    let mut running = tokio::task::spawn_blocking(spawn.clone()).await.unwrap();
    let admin = Admin {
        url: running.url.clone(),
        http: reqwest::Client::new(),
    };
    use reqwest::Method;
    assert_eq!(
        admin
            .send(Method::POST, "/api/v1/apps", Some(json!({"name": "crash"})))
            .await
            .status(),
        201
    );
    let consumer = r#"kv::incr("seen:" + event.payload.n, 1); kv::incr("total", 1);"#;
    let producer = r#"
        let from = parse_int(request.query.from);
        for n in from..from + 1000 { pubsub::publish("work", #{ n: n }); }
        "ok"
    "#;
    for (name, source) in [("consumer", consumer), ("producer", producer)] {
        let res = admin
            .send(
                Method::PUT,
                &format!("/api/v1/apps/crash/scripts/{name}"),
                Some(json!({"source": source})),
            )
            .await;
        assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    }
    let triggers = [
        json!({"kind": "topic", "topic": "work", "script": "consumer"}),
        json!({"kind": "http", "method": "POST", "path": "/produce", "script": "producer"}),
    ];
    for t in triggers {
        assert_eq!(
            admin
                .send(Method::POST, "/api/v1/apps/crash/triggers", Some(t))
                .await
                .status(),
            201
        );
    }
    for batch in 0..EVENTS / 1000 {
        let res = admin
            .http
            .post(format!(
                "{}/crash/produce?from={}",
                running.url,
                batch * 1000
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }

    let before_kill = admin.wait_total(EVENTS / 5, Duration::from_secs(60)).await;
    running.child.kill().expect("kill -9");
    running.child.wait().unwrap();
    assert!(
        before_kill < EVENTS,
        "the crash came while events were in flight ({before_kill} done)"
    );

    let running = tokio::task::spawn_blocking(spawn).await.unwrap();
    let admin = Admin {
        url: running.url.clone(),
        http: reqwest::Client::new(),
    };
    // A bound, not a timing: on a loaded 2-core machine the 10,000 events take minutes.
    let total = admin.wait_total(EVENTS, Duration::from_secs(300)).await;
    assert_eq!(total, EVENTS, "every event was processed after the restart");

    // Each event's own counter is exactly 1: none lost, none applied twice.
    let mut seen = 0u64;
    let mut after: Option<String> = None;
    loop {
        let mut path = "/api/v1/apps/crash/kv?prefix=seen:&limit=1000".to_string();
        if let Some(a) = &after {
            path.push_str(&format!("&after={}", crate::common::encode(a)));
        }
        let page: Value = admin
            .send(Method::GET, &path, None)
            .await
            .json()
            .await
            .unwrap();
        let entries = page["entries"].as_array().unwrap();
        for e in entries {
            assert_eq!(e["value"], 1, "{e}");
        }
        seen += entries.len() as u64;
        match page["next_after"].as_str() {
            Some(next) if !entries.is_empty() => after = Some(next.to_owned()),
            _ => break,
        }
    }
    assert_eq!(seen, EVENTS);
    // Past the 2 s lease the counter has not moved: no row the killed server had leased
    // came back and ran a second time. Real time is the point: a lease runs out on the
    // clock, and nothing signals that it did not come back.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(admin.total().await, EVENTS);
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_kill_nine_with_events_in_flight_loses_nothing_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    kill_nine_with_events_in_flight_loses_nothing_and_repeats_nothing(dir.path(), Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kill_nine_with_events_in_flight_loses_nothing_and_repeats_nothing() {
    let db = storage::testing::TestUrl::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    kill_nine_with_events_in_flight_loses_nothing_and_repeats_nothing(
        dir.path(),
        vec![("PICLOUD_DATABASE_URL".into(), db.url.clone())],
    )
    .await;
}
