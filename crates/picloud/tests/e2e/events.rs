//! Events end to end: pub/sub fan-out, queues (delay, idempotency), invoke and
//! invoke_async, retries into dead letters, the dead-letter handler, cron.
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use shared::InvocationStatus;

use crate::common::{invocation_id, record_where, spawn_app};
use testkit::{Backend, on_both_backends};

on_both_backends!(
    a_published_event_runs_every_subscriber_and_commits_its_writes,
    a_queue_message_is_delivered_once_per_idempotency_key_and_after_its_delay,
    invoke_returns_the_callee_result_and_invoke_async_runs_it_later,
    a_failing_handler_is_retried_then_dead_lettered_and_the_dead_letter_handler_runs,
    a_failing_dead_letter_handler_never_produces_another_dead_letter_event,
    a_throwing_script_commits_neither_writes_nor_events,
    a_cron_trigger_fires_on_its_schedule,
    bad_trigger_input_gets_a_clear_error,
    invoke_recursion_past_the_depth_limit_is_a_clear_error,
);

async fn a_published_event_runs_every_subscriber_and_commits_its_writes(db: Backend) {
    let app = spawn_app(db).await;
    let mut recorded = app.recorded();
    let topic = json!({"kind": "topic", "topic": "orders"});
    app.handler(
        "shop",
        "count_a",
        topic.clone(),
        r#"kv::incr("a", event.payload.n); log::info(event.topic)"#,
    )
    .await;
    app.handler(
        "shop",
        "count_b",
        topic,
        r#"kv::incr("b", event.payload.n)"#,
    )
    .await;
    app.endpoint(
        "shop",
        "order",
        "POST /orders",
        r#"pubsub::publish("orders", #{ n: 2 }); pubsub::publish("nobody", 1); "queued""#,
    )
    .await;

    let res = app.call(Method::POST, "/shop/orders").send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "queued");
    let mut pending = vec!["count_a", "count_b"];
    while !pending.is_empty() {
        let r = record_where(&mut recorded, |r| pending.contains(&r.script.as_str())).await;
        assert_eq!(r.status, InvocationStatus::Ok, "{r:?}");
        assert_eq!(r.trigger, "topic");
        assert_eq!(r.attempt, Some(1));
        pending.retain(|s| *s != r.script.as_str());
    }
    assert_eq!(app.kv("shop", "a").await, Some(json!(2)));
    assert_eq!(app.kv("shop", "b").await, Some(json!(2)));
}

async fn a_queue_message_is_delivered_once_per_idempotency_key_and_after_its_delay(db: Backend) {
    let app = spawn_app(db).await;
    let mut recorded = app.recorded();
    app.handler(
        "shop",
        "mailer",
        json!({"kind": "queue", "queue": "jobs"}),
        r#"kv::incr("jobs:" + event.payload.id, 1); event.queue"#,
    )
    .await;
    app.endpoint(
        "shop",
        "enqueue",
        "POST /enqueue",
        r#"
            let id = request.query.id;
            let delay = parse_int(request.query.delay ?? "0");
            queue::send("jobs", #{ id: id }, #{ delay: delay, idempotency_key: "job-" + id });
            "sent"
        "#,
    )
    .await;

    for _ in 0..2 {
        let res = app
            .call(Method::POST, "/shop/enqueue?id=one")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let first = record_where(&mut recorded, |r| r.script.as_str() == "mailer").await;
    assert_eq!(first.status, InvocationStatus::Ok);

    let sent_at = Instant::now();
    app.call(Method::POST, "/shop/enqueue?id=two&delay=1")
        .send()
        .await
        .unwrap();
    let delayed = record_where(&mut recorded, |r| r.script.as_str() == "mailer").await;
    assert!(
        sent_at.elapsed() >= Duration::from_millis(900),
        "ran after {:?}",
        sent_at.elapsed()
    );
    assert_eq!(delayed.status, InvocationStatus::Ok);

    // The duplicate key was not delivered a second time.
    assert_eq!(app.kv("shop", "jobs:one").await, Some(json!(1)));
    assert_eq!(app.kv("shop", "jobs:two").await, Some(json!(1)));
}

async fn invoke_returns_the_callee_result_and_invoke_async_runs_it_later(db: Backend) {
    let app = spawn_app(db).await;
    let mut recorded = app.recorded();
    app.create_app("shop").await;
    app.deploy(
        "shop",
        "double",
        r#"kv::incr("doubled", 1); event.payload.x * 2"#,
    )
    .await;
    app.endpoint(
        "shop",
        "calc",
        "GET /calc",
        r#"let r = invoke("double", #{ x: 21 }); invoke_async("double", #{ x: 1 }); #{ result: r }"#,
    )
    .await;

    let res = app.get("/shop/calc").await;
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"result": 42}));
    let later = record_where(&mut recorded, |r| r.script.as_str() == "double").await;
    assert_eq!(later.trigger, "invoke");
    assert_eq!(later.status, InvocationStatus::Ok);
    // Once by the nested invoke (committed with the HTTP run), once by invoke_async.
    assert_eq!(app.kv("shop", "doubled").await, Some(json!(2)));
}

async fn a_failing_handler_is_retried_then_dead_lettered_and_the_dead_letter_handler_runs(
    db: Backend,
) {
    let app = spawn_app(db).await;
    let mut recorded = app.recorded();
    app.handler(
        "shop",
        "flaky",
        json!({"kind": "queue", "queue": "work", "max_attempts": 3}),
        r#"throw "nope on attempt " + event.attempt"#,
    )
    .await;
    app.handler(
        "shop",
        "graveyard",
        json!({"kind": "dead_letter"}),
        r#"kv::set("dead", #{ error: event.payload.error, attempts: event.payload.attempts, source: event.payload.source })"#,
    )
    .await;
    app.endpoint(
        "shop",
        "start",
        "POST /start",
        r#"queue::send("work", #{ job: 7 }); "ok""#,
    )
    .await;

    app.call(Method::POST, "/shop/start").send().await.unwrap();
    for attempt in 1..=3 {
        let r = record_where(&mut recorded, |r| r.script.as_str() == "flaky").await;
        assert_eq!(r.attempt, Some(attempt));
        assert_eq!(r.status, InvocationStatus::Error);
        assert!(
            r.error.as_deref().unwrap_or_default().contains("nope"),
            "{r:?}"
        );
    }
    let handled = record_where(&mut recorded, |r| r.script.as_str() == "graveyard").await;
    assert_eq!(handled.status, InvocationStatus::Ok, "{handled:?}");
    assert_eq!(handled.trigger, "dead_letter");

    let dead = app
        .kv("shop", "dead")
        .await
        .expect("the dead-letter handler ran and wrote");
    assert_eq!(dead["attempts"], 3);
    assert_eq!(dead["source"], "work");
    assert!(
        dead["error"]
            .as_str()
            .unwrap()
            .contains("nope on attempt 3"),
        "{dead}"
    );

    let letters = app.dead_letters("shop").await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["attempts"], 3);
    assert_eq!(letters[0]["payload"], json!({"job": 7}));

    // Replay puts it back: it fails again three times and comes back as a new dead letter.
    let id = letters[0]["id"].as_str().unwrap();
    let res = app
        .admin(
            Method::POST,
            &format!("/apps/shop/dead-letters/{id}/replay"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    for attempt in 1..=3 {
        let r = record_where(&mut recorded, |r| r.script.as_str() == "flaky").await;
        assert_eq!(r.attempt, Some(attempt));
    }
    record_where(&mut recorded, |r| r.script.as_str() == "graveyard").await;
    let letters = app.dead_letters("shop").await;
    assert_eq!(
        letters.len(),
        1,
        "the replayed letter was removed and one new one exists"
    );
    assert_ne!(letters[0]["id"].as_str().unwrap(), id);

    let res = app
        .admin(Method::DELETE, "/apps/shop/dead-letters")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(app.dead_letters("shop").await.is_empty());
}

async fn a_failing_dead_letter_handler_never_produces_another_dead_letter_event(db: Backend) {
    let app = spawn_app(db).await;
    let mut recorded = app.recorded();
    app.handler(
        "shop",
        "bad",
        json!({"kind": "topic", "topic": "t", "max_attempts": 1}),
        r#"throw "first""#,
    )
    .await;
    app.handler(
        "shop",
        "also_bad",
        json!({"kind": "dead_letter", "max_attempts": 1}),
        r#"throw "second""#,
    )
    .await;
    app.handler(
        "shop",
        "marker",
        json!({"kind": "topic", "topic": "done"}),
        r#""marked""#,
    )
    .await;
    app.endpoint("shop", "go", "POST /go", r#"pubsub::publish("t", 1); "ok""#)
        .await;
    app.endpoint(
        "shop",
        "mark",
        "POST /mark",
        r#"pubsub::publish("done", 1); "ok""#,
    )
    .await;

    app.call(Method::POST, "/shop/go").send().await.unwrap();
    record_where(&mut recorded, |r| r.script.as_str() == "bad").await;
    let failed = record_where(&mut recorded, |r| r.script.as_str() == "also_bad").await;
    assert_eq!(failed.status, InvocationStatus::Error);

    // Everything the failure could have caused is in the outbox ahead of this marker
    // (and due at once: max_attempts 1 means no retry delay); count the handler's runs
    // until the marker has run, then once more after a second marker.
    let mut dead_letter_runs = 1;
    for _ in 0..2 {
        app.call(Method::POST, "/shop/mark").send().await.unwrap();
        loop {
            let r = record_where(&mut recorded, |r| {
                ["marker", "also_bad"].contains(&r.script.as_str())
            })
            .await;
            if r.script.as_str() == "marker" {
                break;
            }
            dead_letter_runs += 1;
        }
    }
    assert_eq!(
        dead_letter_runs, 1,
        "the failing dead-letter handler ran once"
    );

    let letters = app.dead_letters("shop").await;
    assert_eq!(
        letters.len(),
        2,
        "the event and the failed dead-letter event: {letters:?}"
    );
    let kinds: Vec<&str> = letters
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"dead_letter") && kinds.contains(&"topic"),
        "{kinds:?}"
    );
}

async fn a_throwing_script_commits_neither_writes_nor_events(db: Backend) {
    let app = spawn_app(db).await;
    let mut recorded = app.recorded();
    app.handler(
        "shop",
        "sub",
        json!({"kind": "topic", "topic": "t"}),
        r#"kv::incr("events", 1)"#,
    )
    .await;
    app.endpoint(
        "shop",
        "bad",
        "POST /bad",
        r#"kv::set("x", 1); pubsub::publish("t", 1); throw "no""#,
    )
    .await;
    app.endpoint(
        "shop",
        "good",
        "POST /good",
        r#"kv::set("y", 1); pubsub::publish("t", 2); "ok""#,
    )
    .await;

    let res = app.call(Method::POST, "/shop/bad").send().await.unwrap();
    assert_eq!(res.status(), 500);
    let res = app.call(Method::POST, "/shop/good").send().await.unwrap();
    assert_eq!(res.status(), 200);
    record_where(&mut recorded, |r| r.script.as_str() == "sub").await;

    assert_eq!(app.kv("shop", "x").await, None);
    assert_eq!(app.kv("shop", "y").await, Some(json!(1)));
    assert_eq!(
        app.kv("shop", "events").await,
        Some(json!(1)),
        "only the good run's event was delivered"
    );
}

async fn a_cron_trigger_fires_on_its_schedule(db: Backend) {
    let app = spawn_app(db).await;
    let mut recorded = app.recorded();
    app.handler(
        "shop",
        "tick",
        json!({"kind": "cron", "schedule": "* * * * * *", "timezone": "Europe/Berlin"}),
        r#"kv::incr("ticks", 1); event.payload.slot"#,
    )
    .await;
    let first = record_where(&mut recorded, |r| r.script.as_str() == "tick").await;
    assert_eq!(first.trigger, "cron");
    assert_eq!(first.status, InvocationStatus::Ok, "{first:?}");
    let second = record_where(&mut recorded, |r| r.script.as_str() == "tick").await;
    assert!(second.started_at > first.started_at);

    let triggers: Value = app
        .admin(Method::GET, "/apps/shop/triggers")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        triggers["triggers"][0]["last_fired_at"].is_string(),
        "{triggers}"
    );
}

async fn bad_trigger_input_gets_a_clear_error(db: Backend) {
    let app = spawn_app(db).await;
    app.create_app("shop").await;
    app.deploy("shop", "s", "1").await;
    let cases = [
        (
            json!({"kind": "cron", "schedule": "every day", "script": "s"}),
            400,
            "cron",
        ),
        (
            json!({"kind": "cron", "schedule": "0 * * * *", "timezone": "Mars/Olympus", "script": "s"}),
            400,
            "Mars/Olympus",
        ),
        (
            json!({"kind": "topic", "topic": "a b", "script": "s"}),
            400,
            "topic",
        ),
        (
            json!({"kind": "queue", "queue": "q", "script": "missing"}),
            404,
            "missing",
        ),
        (json!({"kind": "bogus", "script": "s"}), 400, ""),
    ];
    for (trigger, status, mentions) in cases {
        let res = app.add_trigger("shop", trigger.clone()).await;
        assert_eq!(res.status().as_u16(), status, "{trigger}");
        let body: Value = res.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(mentions),
            "{trigger}: {body}"
        );
    }
    assert_eq!(
        app.add_trigger(
            "shop",
            json!({"kind": "queue", "queue": "q", "script": "s"})
        )
        .await
        .status(),
        201
    );
    assert_eq!(
        app.add_trigger(
            "shop",
            json!({"kind": "queue", "queue": "q", "script": "s"})
        )
        .await
        .status(),
        409
    );
}

async fn invoke_recursion_past_the_depth_limit_is_a_clear_error(db: Backend) {
    let app = spawn_app(db).await;
    let mut recorded = app.recorded();
    app.create_app("shop").await;
    app.deploy("shop", "again", r#"invoke("again", event.payload + 1)"#)
        .await;
    app.endpoint("shop", "start", "GET /start", r#"invoke("again", 0)"#)
        .await;

    let res = app.get("/shop/start").await;
    assert_eq!(res.status(), 500);
    let id = invocation_id(&res);
    let r = record_where(&mut recorded, |r| r.id.to_string() == id).await;
    assert!(
        r.error.as_deref().unwrap_or_default().contains("depth"),
        "{r:?}"
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
}
