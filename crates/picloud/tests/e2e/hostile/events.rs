//! Hostile events: schedules that never fire, a flood of failing requests that log all
//! they can, a script that picks its own `from`. Each time the server keeps answering
//! other apps, and what it refused or dropped shows.
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{record_where, spawn_app, spawn_app_with};
use testkit::{Backend, eventually, on_both_backends};

/// How long a loaded machine may take for what a test waits on; never a timing.
const BOUND: Duration = Duration::from_secs(20);

on_both_backends!(
    schedules_that_never_fire_are_refused_and_a_valid_one_shows_its_next_fire,
    a_log_flood_of_failures_stores_a_bounded_number_of_records_and_counts_the_rest,
    failing_events_share_their_apps_failure_record_bound,
    successful_events_past_the_nodes_record_budget_are_sampled_out_and_counted,
    a_script_cannot_send_email_from_an_address_the_operator_did_not_allow,
    refused_emails_share_their_apps_failure_record_bound,
);

async fn schedules_that_never_fire_are_refused_and_a_valid_one_shows_its_next_fire(db: Backend) {
    let app = spawn_app(db).await;
    app.endpoint("shop", "tick", "GET /tick", r#""tock""#).await;
    for schedule in ["0 0 30 2 *", "0 0 31 4 *", "0 0 0 31 11 *"] {
        for _ in 0..20 {
            let res = app
                .add_trigger(
                    "shop",
                    json!({"kind": "cron", "schedule": schedule, "script": "tick"}),
                )
                .await;
            assert_eq!(res.status(), 400);
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "invalid_input");
            assert_eq!(
                body["error"]["message"],
                format!(
                    "cron schedule '{schedule}' never fires: it has no slot in the next 10 years"
                )
            );
        }
    }
    let res = app
        .add_trigger(
            "shop",
            json!({"kind": "cron", "schedule": "0 0,30 2 * * *", "timezone": "Europe/Berlin", "script": "tick"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    assert!(created["next_fire_at"].is_string(), "{created}");
    let list: Value = app
        .admin(Method::GET, "/apps/shop/triggers")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let triggers = list["triggers"].as_array().unwrap();
    assert_eq!(
        triggers.len(),
        2,
        "the route and the one valid cron trigger"
    );
    let cron = triggers.iter().find(|t| t["kind"] == "cron").unwrap();
    // RFC 3339 in UTC from both: the text orders like the time.
    let next = cron["next_fire_at"].as_str().unwrap();
    assert!(next > cron["created_at"].as_str().unwrap(), "{next}");
    assert!(
        triggers
            .iter()
            .find(|t| t["kind"] == "http")
            .is_some_and(|t| t.get("next_fire_at").is_none())
    );
    assert_eq!(app.get("/shop/tick").await.text().await.unwrap(), "tock");
}

const FLOOD_PER_SEC: u32 = 5;
const RECORD_LOG_BYTES: usize = 2048;

async fn a_log_flood_of_failures_stores_a_bounded_number_of_records_and_counts_the_rest(
    db: Backend,
) {
    let app = spawn_app_with(db, |c| {
        c.invocations.failures_per_sec = FLOOD_PER_SEC;
        c.invocations.max_record_log_bytes = RECORD_LOG_BYTES;
    })
    .await;
    // Logs all the executor lets it (64 KiB), then fails.
    app.endpoint(
        "shop",
        "noisy",
        "POST /noisy",
        r#"let line = "x"; for i in 0..10 { line += line; } for i in 0..100 { print(line); } throw "boom";"#,
    )
    .await;
    app.endpoint("blog", "broken", "GET /broken", r#"throw "blog is down";"#)
        .await;

    const CLIENTS: usize = 4;
    const EACH: usize = 15;
    let started = Instant::now();
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let call = app.call(Method::POST, "/shop/noisy");
        flood.spawn(async move {
            for _ in 0..EACH {
                let res = call.try_clone().unwrap().send().await.unwrap();
                assert_eq!(res.status(), 500);
            }
        });
    }
    while let Some(client) = flood.join_next().await {
        client.unwrap();
    }
    let seconds = u32::try_from(started.elapsed().as_secs()).unwrap() + 1;

    // Another app's failure is still recorded, after the flood (records are written in order).
    let mut recorded = app.recorded();
    assert_eq!(app.get("/blog/broken").await.status(), 500);
    let blog = record_where(&mut recorded, |r| r.app.as_str() == "blog").await;
    assert_eq!(blog.status, shared::InvocationStatus::Error);

    let total = CLIENTS * EACH;
    let page = eventually("every record stored or counted", BOUND, async || {
        let page = app.invocations("shop", "limit=500").await;
        let stored = page["invocations"].as_array().unwrap().len();
        let dropped = usize::try_from(page["dropped"].as_u64().unwrap()).unwrap();
        (stored + dropped >= total).then_some(page)
    })
    .await;
    let stored = page["invocations"].as_array().unwrap();
    let dropped = usize::try_from(page["dropped"].as_u64().unwrap()).unwrap();
    assert_eq!(
        stored.len() + dropped,
        total,
        "each failure stored or counted"
    );
    // At most the bound for every second the flood touched.
    let bound = usize::try_from(FLOOD_PER_SEC * (seconds + 1)).unwrap();
    assert!(
        stored.len() <= bound,
        "{} records in {seconds} s",
        stored.len()
    );
    assert!(dropped > 0);
    for record in stored {
        let logs = record["logs"].as_array().unwrap();
        let bytes: usize = logs
            .iter()
            .map(|l| l["message"].as_str().unwrap().len())
            .sum();
        assert!(bytes <= RECORD_LOG_BYTES + 64, "{bytes} log bytes stored");
        assert!(
            logs.last().unwrap()["message"]
                .as_str()
                .unwrap()
                .starts_with("... log cut"),
            "the cut is marked"
        );
    }
    let blog = app.invocations("blog", "").await;
    assert_eq!(blog["invocations"].as_array().unwrap().len(), 1);
    assert_eq!(blog["dropped"], 0);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("picloud_invocation_records_bounded_total{app=\"shop\"}")),
        "the drops are counted per app"
    );
}

async fn a_script_cannot_send_email_from_an_address_the_operator_did_not_allow(db: Backend) {
    let app = spawn_app_with(db, |c| {
        c.smtp.allowed_from = vec!["news@shop.test".into()];
    })
    .await;
    let send = |from: &str| {
        format!(
            r#"email::send(#{{ to: "ada@example.com", subject: "Hi", text: "t", from: "{from}" }}); "sent""#
        )
    };
    app.endpoint("shop", "spoof", "POST /spoof", &send("ceo@bank.example"))
        .await;
    app.endpoint("shop", "news", "POST /news", &send("News@Shop.test"))
        .await;
    let mut recorded = app.recorded();
    let res = app.call(Method::POST, "/shop/spoof").send().await.unwrap();
    assert_eq!(res.status(), 500);
    let failed = record_where(&mut recorded, |r| r.script.as_str() == "spoof").await;
    let error = failed.error.unwrap_or_default();
    assert!(
        error.contains("from 'ceo@bank.example' is not an allowed sender"),
        "{error}"
    );

    let res = app.call(Method::POST, "/shop/news").send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "sent");
    // The send itself leaves a record, like every event.
    let mail = record_where(&mut recorded, |r| r.trigger == "email").await;
    assert_eq!(mail.status, shared::InvocationStatus::Ok);
    assert_eq!(mail.summary, "email to ada@example.com");
    let mailbox: Value = app
        .admin(Method::GET, "/apps/shop/mailbox")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let messages = mailbox["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "only the allowed sender's message");
    assert_eq!(messages[0]["message"]["from"], "News@Shop.test");
}

/// An endpoint that fans out into failing events cannot fill the disk with their records
/// either: they count against the same per-app bound, and each is stored or counted.
async fn failing_events_share_their_apps_failure_record_bound(db: Backend) {
    const EVENTS: usize = 60;
    let app = spawn_app_with(db, |c| c.invocations.failures_per_sec = FLOOD_PER_SEC).await;
    app.handler(
        "shop",
        "fails",
        json!({"kind": "topic", "topic": "t", "max_attempts": 1}),
        r#"throw "no";"#,
    )
    .await;
    app.endpoint(
        "shop",
        "fan",
        "POST /fan",
        &format!("for i in 0..{EVENTS} {{ pubsub::publish(\"t\", i); }} \"ok\""),
    )
    .await;
    let started = Instant::now();
    assert_eq!(
        app.call(Method::POST, "/shop/fan")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let page = eventually("every record stored or counted", BOUND, async || {
        let page = app.invocations("shop", "script=fails&limit=500").await;
        let stored = page["invocations"].as_array().unwrap().len();
        let dropped = usize::try_from(page["dropped"].as_u64().unwrap()).unwrap();
        (stored + dropped >= EVENTS).then_some(page)
    })
    .await;
    let seconds = u32::try_from(started.elapsed().as_secs()).unwrap() + 1;
    let stored = page["invocations"].as_array().unwrap().len();
    let dropped = usize::try_from(page["dropped"].as_u64().unwrap()).unwrap();
    assert_eq!(stored + dropped, EVENTS, "each failure stored or counted");
    assert!(stored <= usize::try_from(FLOOD_PER_SEC * (seconds + 1)).unwrap());
    assert!(dropped > 0);
    // Every event still ended (the list shows 50 at most), its record kept or not.
    let letters = eventually("50 dead letters", BOUND, async || {
        let letters = app.dead_letters("shop").await.len();
        (letters >= 50).then_some(letters)
    })
    .await;
    assert_eq!(letters, 50);
}

/// Successful event runs are recorded up to `[events] recorded_successes_per_sec` per node,
/// like endpoint calls: past it a run still commits its effects, its record is not stored
/// and it is counted as sampled out.
async fn successful_events_past_the_nodes_record_budget_are_sampled_out_and_counted(db: Backend) {
    const EVENTS: usize = 60;
    const PER_SEC: u32 = 3;
    let app = spawn_app_with(db, |c| c.events.recorded_successes_per_sec = PER_SEC).await;
    app.handler(
        "shop",
        "count",
        json!({"kind": "topic", "topic": "t"}),
        r#"kv::incr("runs", 1);"#,
    )
    .await;
    app.endpoint(
        "shop",
        "fan",
        "POST /fan",
        &format!("for i in 0..{EVENTS} {{ pubsub::publish(\"t\", i); }} \"ok\""),
    )
    .await;
    let started = Instant::now();
    let res = app.call(Method::POST, "/shop/fan").send().await.unwrap();
    assert_eq!(res.status(), 200);
    eventually("every event ran once", BOUND, async || {
        (app.kv("shop", "runs").await == Some(json!(EVENTS))).then_some(())
    })
    .await;
    let seconds = u32::try_from(started.elapsed().as_secs()).unwrap() + 1;
    // Each run's record is committed with its effects: every stored one is there by now.
    let page = app.invocations("shop", "script=count&limit=500").await;
    let stored = page["invocations"].as_array().unwrap().len();
    assert!(stored > 0, "the first runs of a second are recorded");
    // The budget, and the app's first success of each second past it.
    let bound = usize::try_from((PER_SEC + 1) * (seconds + 1)).unwrap();
    assert!(stored <= bound, "{stored} records in {seconds} s");
    assert_eq!(page["dropped"], 0, "successes are sampled, not dropped");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let counted = "picloud_invocation_records_sampled_total{source=\"event\"} ";
    let sampled: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix(counted))
        .expect("the sampled-out records are counted")
        .parse()
        .unwrap();
    assert!(
        sampled >= EVENTS - stored,
        "{sampled} sampled, {stored} stored"
    );
    assert_eq!(app.kv("shop", "runs").await, Some(json!(EVENTS)));
}

/// A mail server on loopback that greets, then refuses every recipient for good (550).
async fn refusing_smtp_server() -> u16 {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                if write.write_all(b"220 refuser ESMTP\r\n").await.is_err() {
                    return;
                }
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "RCPT" => b"550 5.1.1 no such user\r\n",
                        "QUIT" => b"221 bye\r\n",
                        _ => b"250 ok\r\n",
                    };
                    if write.write_all(reply).await.is_err() || verb == "QUIT" {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A script that sends mail the server refuses cannot fill the disk with the records of
/// those failures: they count against the app's one failure-record bound.
async fn refused_emails_share_their_apps_failure_record_bound(db: Backend) {
    const EMAILS: usize = 40;
    let port = refusing_smtp_server().await;
    let app = spawn_app_with(db, |c| {
        c.invocations.failures_per_sec = FLOOD_PER_SEC;
        c.smtp.host = Some("127.0.0.1".into());
        c.smtp.port = port;
        c.smtp.security = "none".into();
    })
    .await;
    app.endpoint(
        "shop",
        "spam",
        "POST /spam",
        &format!(
            r#"for i in 0..{EMAILS} {{ email::send(#{{ to: "nobody@example.com", subject: "s", text: "t" }}); }} "ok""#
        ),
    )
    .await;
    let started = Instant::now();
    let res = app.call(Method::POST, "/shop/spam").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let page = eventually("every record stored or counted", BOUND, async || {
        let page = app.invocations("shop", "script=email&limit=500").await;
        let stored = page["invocations"].as_array().unwrap().len();
        let dropped = usize::try_from(page["dropped"].as_u64().unwrap()).unwrap();
        (stored + dropped >= EMAILS).then_some(page)
    })
    .await;
    let seconds = u32::try_from(started.elapsed().as_secs()).unwrap() + 1;
    let records = page["invocations"].as_array().unwrap();
    let dropped = usize::try_from(page["dropped"].as_u64().unwrap()).unwrap();
    assert_eq!(
        records.len() + dropped,
        EMAILS,
        "each refusal stored or counted"
    );
    assert!(records.len() <= usize::try_from(FLOOD_PER_SEC * (seconds + 1)).unwrap());
    assert!(dropped > 0, "the bound held back some records");
    let error = records[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("rejected the email (550)"), "{error}");
    // The refusals are permanent: each became a dead letter, none is retried. A record
    // past the bound is counted when it is dropped, before its run's dead letter commits.
    eventually("every refusal a dead letter", BOUND, async || {
        (app.dead_letters("shop").await.len() == EMAILS).then_some(())
    })
    .await;
    assert_eq!(app.dead_letters("shop").await.len(), EMAILS, "none retried");
}
