//! The admin routes the dashboard's pages stand on: a cron trigger's next five fire times
//! and "run now", dead letters filtered on the server and replayed in bulk, and the
//! per-minute invocation figures aggregated by the database.
use chrono::{DurationRound, TimeDelta, Timelike, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use shared::{AppName, InvocationId, InvocationRecord, InvocationStatus, ScriptName};

use crate::common::{TestApp, spawn_app};

/// Long enough for any test machine; each wait ends as soon as its condition holds.
const BOUND: std::time::Duration = std::time::Duration::from_secs(20);
use testkit::{Backend, eventually, on_both_backends};

on_both_backends!(
    a_cron_trigger_shows_its_next_five_fire_times_in_its_zone,
    run_now_queues_one_event_of_a_cron_trigger_through_the_outbox,
    dead_letters_are_filtered_on_the_server_and_replayed_in_bulk,
    invocation_stats_count_each_minute_by_status_with_duration_percentiles,
);

async fn send(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = app.admin(method, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let res = request.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn a_cron_trigger_shows_its_next_five_fire_times_in_its_zone(db: Backend) {
    let app = spawn_app(db).await;
    app.handler(
        "shop",
        "nightly",
        json!({"kind": "cron", "schedule": "30 3 * * *", "timezone": "Asia/Kolkata"}),
        r#""ok""#,
    )
    .await;
    app.endpoint("shop", "hello", "GET /hello", r#""hi""#).await;
    let (status, body) = send(&app, Method::GET, "/apps/shop/triggers", None).await;
    assert_eq!(status, 200);
    let triggers = body["triggers"].as_array().unwrap();
    let cron = triggers.iter().find(|t| t["kind"] == "cron").unwrap();
    let times: Vec<chrono::DateTime<Utc>> = cron["next_fire_times"]
        .as_array()
        .expect("next_fire_times")
        .iter()
        .map(|t| t.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(times.len(), 5, "{cron}");
    assert_eq!(cron["next_fire_at"], cron["next_fire_times"][0]);
    let now = Utc::now();
    assert!(times[0] > now && times[0] <= now + TimeDelta::days(1));
    for (i, t) in times.iter().enumerate() {
        // 03:30 in Kolkata (UTC+05:30, no daylight saving) is 22:00 UTC.
        assert_eq!((t.hour(), t.minute(), t.second()), (22, 0, 0), "{t}");
        if i > 0 {
            assert_eq!(*t - times[i - 1], TimeDelta::days(1));
        }
    }
    let http = triggers.iter().find(|t| t["kind"] == "http").unwrap();
    assert!(http.get("next_fire_times").is_none(), "{http}");
}

async fn run_now_queues_one_event_of_a_cron_trigger_through_the_outbox(db: Backend) {
    let app = spawn_app(db).await;
    // A schedule far from now: only "run now" makes it run during the test.
    app.handler(
        "shop",
        "yearly",
        json!({"kind": "cron", "schedule": "0 0 1 1 *", "timezone": "UTC"}),
        r#"kv::set("ran", event.payload); "ok""#,
    )
    .await;
    app.endpoint("shop", "hello", "GET /hello", r#""hi""#).await;
    let (_, body) = send(&app, Method::GET, "/apps/shop/triggers", None).await;
    let triggers = body["triggers"].as_array().unwrap().clone();
    let cron = triggers.iter().find(|t| t["kind"] == "cron").unwrap();
    let http = triggers.iter().find(|t| t["kind"] == "http").unwrap();
    let path = format!("/apps/shop/triggers/{}/run", cron["id"].as_str().unwrap());

    let (status, run) = send(&app, Method::POST, &path, None).await;
    assert_eq!(status, 202, "{run}");
    assert!(run["event_id"].is_string(), "{run}");
    let payload = eventually("the cron event ran", BOUND, async || {
        app.kv("shop", "ran").await
    })
    .await;
    assert_eq!(payload["manual"], true, "{payload}");
    assert_eq!(payload["schedule"], "0 0 1 1 *");
    let listed = app.invocations("shop", "script=yearly").await;
    let runs = listed["invocations"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "one event, one run: {listed}");
    assert_eq!(runs[0]["trigger"], "cron");
    // The schedule did not move: the next fire is still next January.
    let (_, after) = send(&app, Method::GET, "/apps/shop/triggers", None).await;
    let cron_after = after["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "cron")
        .unwrap()
        .clone();
    assert_eq!(cron_after["next_fire_at"], cron["next_fire_at"]);

    let http_path = format!("/apps/shop/triggers/{}/run", http["id"].as_str().unwrap());
    let (status, body) = send(&app, Method::POST, &http_path, None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    let missing = format!("/apps/shop/triggers/{}/run", InvocationId::new());
    assert_eq!(send(&app, Method::POST, &missing, None).await.0, 404);
    let other_app = path.replace("/apps/shop/", "/apps/nope/");
    assert_eq!(send(&app, Method::POST, &other_app, None).await.0, 404);
    let (status, _) = send(
        &app,
        Method::POST,
        "/apps/shop/triggers/not-an-id/run",
        None,
    )
    .await;
    assert_eq!(status, 400);
}

async fn dead_letters_are_filtered_on_the_server_and_replayed_in_bulk(db: Backend) {
    let app = spawn_app(db).await;
    app.handler(
        "shop",
        "fails",
        json!({"kind": "queue", "queue": "work", "max_attempts": 1}),
        r#"throw "no stock for " + event.payload.sku"#,
    )
    .await;
    app.handler(
        "shop",
        "other",
        json!({"kind": "topic", "topic": "news", "max_attempts": 1}),
        r#"throw "cannot read the news""#,
    )
    .await;
    app.endpoint(
        "shop",
        "order",
        "POST /order",
        r#"for sku in ["a", "b", "c"] { queue::send("work", #{ sku: sku }); } pubsub::publish("news", 1); "ok""#,
    )
    .await;
    assert_eq!(
        app.call(Method::POST, "/shop/order")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    eventually("four dead letters", BOUND, async || {
        (app.dead_letters("shop").await.len() == 4).then_some(())
    })
    .await;

    let list = async |query: &str| {
        let (status, body) = send(
            &app,
            Method::GET,
            &format!("/apps/shop/dead-letters?{query}"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{query}: {body}");
        let n = body["dead_letters"].as_array().unwrap().len() as u64;
        (n, body["matching"].as_u64().unwrap())
    };
    assert_eq!(list("").await, (4, 4));
    assert_eq!(list("script=fails").await, (3, 3));
    assert_eq!(list("kind=topic").await, (1, 1));
    assert_eq!(list("error=no%20stock").await, (3, 3));
    assert_eq!(list("error=no%20stock%20for%20b").await, (1, 1));
    assert_eq!(
        list("script=fails&limit=2").await,
        (2, 3),
        "a page of a larger match"
    );
    assert_eq!(list("since=2999-01-01T00:00:00Z").await, (0, 0));
    assert_eq!(list("until=2999-01-01T00:00:00Z&kind=queue").await, (3, 3));
    for (query, status) in [
        ("kind=smtp", 400),
        ("since=yesterday", 400),
        ("script=Bad%20Name", 400),
        ("colour=red", 400),
    ] {
        let (got, body) = send(
            &app,
            Method::GET,
            &format!("/apps/shop/dead-letters?{query}"),
            None,
        )
        .await;
        assert_eq!(got, status, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid_input", "{query}: {body}");
    }

    let before: Vec<Value> = app.dead_letters("shop").await;
    let (status, body) = send(
        &app,
        Method::POST,
        "/apps/shop/dead-letters/replay",
        Some(json!({"script": "fails", "error": "no stock"})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"replayed": 3, "remaining": 0}));
    // Each replayed event runs again and, still failing, comes back as a new dead letter;
    // the topic one was not touched.
    let after = eventually("the replayed events to fail again", BOUND, async || {
        let now = app.dead_letters("shop").await;
        (now.len() == 4
            && now
                .iter()
                .filter(|d| d["script"] == "fails")
                .all(|d| !before.iter().any(|b| b["id"] == d["id"])))
        .then_some(now)
    })
    .await;
    let topic_before = before.iter().find(|d| d["kind"] == "topic").unwrap();
    assert!(after.iter().any(|d| d["id"] == topic_before["id"]));

    let (status, body) = send(
        &app,
        Method::POST,
        "/apps/shop/dead-letters/replay",
        Some(json!({"kind": "email"})),
    )
    .await;
    assert_eq!(
        (status, body),
        (202, json!({"replayed": 0, "remaining": 0}))
    );
    let (status, body) = send(
        &app,
        Method::POST,
        "/apps/shop/dead-letters/replay",
        Some(json!({"colour": "red"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = send(
        &app,
        Method::POST,
        "/apps/nope/dead-letters/replay",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 404);
    // Replaying everything: the topic one too.
    let (status, body) = send(
        &app,
        Method::POST,
        "/apps/shop/dead-letters/replay",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(body["replayed"], 4, "{body}");
}

async fn invocation_stats_count_each_minute_by_status_with_duration_percentiles(db: Backend) {
    let app = spawn_app(db).await;
    app.endpoint("shop", "hello", "GET /hello", r#""hi""#).await;
    let shop = AppName::parse("shop").unwrap();
    // 100 runs in this minute taking 1..=100 ms (nearest rank: p50 50, p95 95, p99 99),
    // 10 of them errors and 5 timeouts, 40 of them events; and 3 runs two minutes ago.
    let now = Utc::now();
    let this_minute = now.duration_trunc(TimeDelta::minutes(1)).unwrap();
    let record = |at: chrono::DateTime<Utc>, ms: u64, status: InvocationStatus, trigger: &str| {
        InvocationRecord {
            id: InvocationId::new(),
            app: shop.clone(),
            script: ScriptName::parse("hello").unwrap(),
            version: Some(1),
            trigger: trigger.to_owned(),
            status,
            started_at: at,
            duration_ms: ms,
            http_status: None,
            summary: "test".to_owned(),
            logs: Vec::new(),
            error: None,
            request_id: None,
            attempt: None,
            trace_id: None,
        }
    };
    let mut batch = Vec::new();
    for ms in 1..=100u64 {
        let status = match ms % 20 {
            0 | 1 => InvocationStatus::Error,
            2 => InvocationStatus::Timeout,
            _ => InvocationStatus::Ok,
        };
        let trigger = if ms % 5 < 2 { "queue" } else { "http" };
        batch.push(record(now, ms, status, trigger));
    }
    let earlier = this_minute - TimeDelta::minutes(2) + TimeDelta::seconds(5);
    for ms in [7, 3, 5] {
        batch.push(record(earlier, ms, InvocationStatus::Ok, "http"));
    }
    // Far outside the window: never counted.
    batch.push(record(
        now - TimeDelta::hours(3),
        1,
        InvocationStatus::Ok,
        "http",
    ));
    app.store.invocations.record(&batch).await.unwrap();

    let (status, body) = send(&app, Method::GET, "/apps/shop/invocations/stats", None).await;
    assert_eq!(status, 200, "{body}");
    let minutes = body["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 2, "{body}");
    assert_eq!(
        minutes[0],
        json!({"minute": (this_minute - TimeDelta::minutes(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "ok": 3, "error": 0, "timeout": 0, "http": 3, "p50_ms": 5, "p95_ms": 7, "p99_ms": 7})
    );
    assert_eq!(
        minutes[1],
        json!({"minute": this_minute.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "ok": 85, "error": 10, "timeout": 5, "http": 60, "p50_ms": 50, "p95_ms": 95, "p99_ms": 99})
    );
    let since: chrono::DateTime<Utc> = body["since"].as_str().unwrap().parse().unwrap();
    // 59 minutes before the server's current minute (which may be the next one by now).
    assert!(
        since == this_minute - TimeDelta::minutes(59)
            || since == this_minute - TimeDelta::minutes(58),
        "{since}"
    );

    let (_, one) = send(
        &app,
        Method::GET,
        "/apps/shop/invocations/stats?minutes=1",
        None,
    )
    .await;
    let last = one["since"].clone();
    let only: Vec<&Value> = one["minutes"].as_array().unwrap().iter().collect();
    assert!(
        only.len() <= 1 && only.iter().all(|m| m["minute"] == last),
        "{one}"
    );
    for query in ["minutes=0", "minutes=1441", "minutes=x", "window=5"] {
        let (status, body) = send(
            &app,
            Method::GET,
            &format!("/apps/shop/invocations/stats?{query}"),
            None,
        )
        .await;
        assert_eq!(status, 400, "{query}: {body}");
    }
    assert_eq!(
        send(&app, Method::GET, "/apps/nope/invocations/stats", None)
            .await
            .0,
        404
    );
}
