//! Event triggers (topics, queues, cron): created, listed and refused.
use super::*;

async fn event_triggers_of_every_kind_are_created_and_listed(t: &TestApp) {
    t.app_with_script("shop").await;
    t.changes();
    let cron = t
        .add_trigger(
            "shop",
            json!({"kind": "cron", "script": "handler", "schedule": "0 9 * * MON-FRI", "timezone": "Europe/Berlin"}),
        )
        .await;
    assert_eq!(cron.status, StatusCode::CREATED, "{}", cron.body);
    assert_eq!(cron.body["kind"], "cron");
    assert_eq!(cron.body["schedule"], "0 9 * * MON-FRI");
    assert_eq!(cron.body["timezone"], "Europe/Berlin");
    assert_eq!(cron.body["max_attempts"], 5);
    let utc_default = t
        .add_trigger(
            "shop",
            json!({"kind": "cron", "script": "handler", "schedule": "*/10 * * * * *"}),
        )
        .await;
    assert_eq!(
        utc_default.status,
        StatusCode::CREATED,
        "{}",
        utc_default.body
    );
    assert_eq!(utc_default.body["timezone"], "UTC");
    let topic = t
        .add_trigger("shop", json!({"kind": "topic", "script": "handler", "topic": "orders.created", "max_attempts": 2}))
        .await;
    assert_eq!(topic.status, StatusCode::CREATED, "{}", topic.body);
    assert_eq!(topic.body["topic"], "orders.created");
    assert_eq!(topic.body["max_attempts"], 2);
    let queue = t
        .add_trigger(
            "shop",
            json!({"kind": "queue", "script": "handler", "queue": "emails"}),
        )
        .await;
    assert_eq!(queue.status, StatusCode::CREATED, "{}", queue.body);
    let dead = t
        .add_trigger("shop", json!({"kind": "dead_letter", "script": "handler"}))
        .await;
    assert_eq!(dead.status, StatusCode::CREATED, "{}", dead.body);
    assert_eq!(dead.body["kind"], "dead_letter");

    let list = t
        .call(Method::GET, "/api/v1/apps/shop/triggers", None)
        .await;
    let kinds: Vec<&str> = list.body["triggers"]
        .as_array()
        .expect("triggers")
        .iter()
        .filter_map(|tr| tr["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["cron", "cron", "topic", "queue", "dead_letter"]);
    let app = AppName::parse("shop").expect("app");
    assert_eq!(
        t.changes(),
        vec![CatalogChange::Triggers { app: app.clone() }; 5],
        "every creation is published"
    );
}

async fn bad_event_triggers_are_refused_with_the_problem_named(t: &TestApp) {
    t.app_with_script("shop").await;
    let bad_cron = t
        .add_trigger(
            "shop",
            json!({"kind": "cron", "script": "handler", "schedule": "x"}),
        )
        .await;
    assert_error(&bad_cron, 400, "invalid_input");
    assert!(
        message(&bad_cron).starts_with("invalid cron schedule 'x': "),
        "{}",
        message(&bad_cron)
    );
    let seven = t
        .add_trigger(
            "shop",
            json!({"kind": "cron", "script": "handler", "schedule": "0 0 0 1 1 * 2030"}),
        )
        .await;
    assert_error(&seven, 400, "invalid_input");
    let bad_tz = t
        .add_trigger(
            "shop",
            json!({"kind": "cron", "script": "handler", "schedule": "* * * * *", "timezone": "Mars/X"}),
        )
        .await;
    assert_error(&bad_tz, 400, "invalid_input");
    assert_eq!(message(&bad_tz), "unknown time zone 'Mars/X'");
    let no_schedule = t
        .add_trigger("shop", json!({"kind": "cron", "script": "handler"}))
        .await;
    assert_error(&no_schedule, 400, "invalid_input");
    let bad_topic = t
        .add_trigger(
            "shop",
            json!({"kind": "topic", "script": "handler", "topic": "a b"}),
        )
        .await;
    assert_error(&bad_topic, 400, "invalid_input");
    assert!(message(&bad_topic).contains("topic and queue names"));
    let bad_queue = t
        .add_trigger(
            "shop",
            json!({"kind": "queue", "script": "handler", "queue": ""}),
        )
        .await;
    assert_error(&bad_queue, 400, "invalid_input");
    let foreign = t
        .add_trigger(
            "shop",
            json!({"kind": "topic", "script": "handler", "topic": "t", "method": "GET"}),
        )
        .await;
    assert_error(&foreign, 400, "invalid_input");
    assert_eq!(
        message(&foreign),
        "field 'method' does not apply to a topic trigger"
    );
    let attempts = t
        .add_trigger(
            "shop",
            json!({"kind": "dead_letter", "script": "handler", "max_attempts": 101}),
        )
        .await;
    assert_error(&attempts, 400, "invalid_input");
    let missing_script = t
        .add_trigger(
            "shop",
            json!({"kind": "topic", "script": "nope", "topic": "t"}),
        )
        .await;
    assert_error(&missing_script, 404, "not_found");
    assert_eq!(message(&missing_script), "script 'nope' does not exist");
    let missing_app = t
        .add_trigger(
            "nowhere",
            json!({"kind": "dead_letter", "script": "handler"}),
        )
        .await;
    assert_error(&missing_app, 404, "not_found");
    let list = t
        .call(Method::GET, "/api/v1/apps/shop/triggers", None)
        .await;
    assert_eq!(list.body["triggers"], json!([]), "nothing was stored");
}

async fn a_second_consumer_for_a_queue_is_a_conflict(t: &TestApp) {
    t.app_with_script("shop").await;
    let body = json!({"kind": "queue", "script": "handler", "queue": "jobs"});
    assert_eq!(
        t.add_trigger("shop", body.clone()).await.status,
        StatusCode::CREATED
    );
    let second = t.add_trigger("shop", body).await;
    assert_error(&second, 409, "conflict");
    assert!(
        message(&second).contains("queue jobs"),
        "{}",
        message(&second)
    );
    // Topics may have many subscribers.
    let topic = json!({"kind": "topic", "script": "handler", "topic": "jobs"});
    assert_eq!(
        t.add_trigger("shop", topic.clone()).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        t.add_trigger("shop", topic).await.status,
        StatusCode::CREATED
    );
}

on_both_backends!(
    with_app =>
    event_triggers_of_every_kind_are_created_and_listed,
    bad_event_triggers_are_refused_with_the_problem_named,
    a_second_consumer_for_a_queue_is_a_conflict,
);
