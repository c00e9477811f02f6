//! The cron scheduler: firing into the outbox, catching up, one firing per slot.
use super::*;

async fn cron_trigger(t: &TestApp, app: &str, schedule: &str) -> TriggerId {
    let created = t
        .add_trigger(
            app,
            json!({"kind": "cron", "script": "handler", "schedule": schedule}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    created.body["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("a trigger id")
}

async fn an_every_second_trigger_fires_into_the_outbox_after_a_catalog_wake(t: &TestApp) {
    let app = t.app_with_script("shop").await;
    let shutdown = CancellationToken::new();
    // Started with no triggers: it sleeps until the catalog says triggers changed.
    let scheduler = CronScheduler::start(t.store.clone(), shutdown.clone());
    t.catalog.subscribe(scheduler.clone());
    cron_trigger(t, "shop", "* * * * * *").await;
    eventually("two cron events", BOUND, async || {
        (t.store.outbox.pending(&app).await.expect("pending") >= 2).then_some(())
    })
    .await;
    let events = t
        .store
        .outbox
        .claim_due("test-node", 100, Duration::from_secs(60))
        .await
        .expect("claim");
    assert!(events.len() >= 2);
    for event in &events {
        assert_eq!(event.kind, shared::EventKind::Cron);
        assert_eq!(
            event.script.as_ref().map(ScriptName::as_str),
            Some("handler")
        );
        assert_eq!(event.payload["schedule"], "* * * * * *");
        assert_eq!(event.payload["timezone"], "UTC");
    }
    let mut slots: Vec<_> = events.iter().map(|e| e.scheduled_at).collect();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), events.len(), "each slot fired once");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), scheduler.stopped())
        .await
        .expect("the scheduler stops on shutdown");
}

async fn a_trigger_last_fired_hours_ago_fires_once_for_the_latest_slot(t: &TestApp) {
    let app = t.app_with_script("shop").await;
    let id = cron_trigger(t, "shop", "0 * * * *").await;
    let hours_ago = Utc::now() - chrono::Duration::hours(5);
    let old_slot = chrono::DurationRound::duration_trunc(hours_ago, chrono::Duration::hours(1))
        .expect("an hour slot");
    assert!(
        t.store
            .triggers
            .fire_cron(id, old_slot)
            .await
            .expect("fire")
    );
    assert_eq!(t.store.outbox.pending(&app).await.expect("pending"), 1);

    let shutdown = CancellationToken::new();
    let scheduler = CronScheduler::start(t.store.clone(), shutdown.clone());
    let latest = chrono::DurationRound::duration_trunc(Utc::now(), chrono::Duration::hours(1))
        .expect("an hour slot");
    // Firing the latest slot moves `last_fired_at` to it in the same transaction, and an
    // older slot can never fire after it: once it is there, any fire per missed hour
    // would already be in the outbox.
    let triggers = eventually("the catch-up fire of the latest slot", BOUND, async || {
        let triggers = t.store.triggers.list(&app).await.expect("list");
        (triggers[0].last_fired_at == Some(latest)).then_some(triggers)
    })
    .await;
    assert_eq!(
        t.store.outbox.pending(&app).await.expect("pending"),
        2,
        "one catch-up event, not one per missed hour"
    );
    assert!(matches!(triggers[0].spec, TriggerSpec::Cron { .. }));
    shutdown.cancel();
    scheduler.stopped().await;
}

/// Two schedulers, each with its own pool on one PostgreSQL schema (two nodes), fire
/// every slot exactly once.
#[tokio::test]
async fn two_schedulers_on_one_postgres_schema_fire_each_slot_once() {
    let schema = storage::testing::TestUrl::postgres().await;
    let url = schema.url.clone();
    let a = storage::connect(&url).await.expect("node a");
    let b = storage::connect(&url).await.expect("node b");
    let app = AppName::parse("shop").expect("app");
    a.apps.create(&app).await.expect("app");
    a.scripts
        .deploy(&app, &ScriptName::parse("handler").expect("script"), "1")
        .await
        .expect("deploy");
    a.triggers
        .create(shared::store::NewTrigger {
            app: app.clone(),
            script: ScriptName::parse("handler").expect("script"),
            spec: TriggerSpec::Cron {
                schedule: "* * * * * *".into(),
                timezone: "UTC".into(),
            },
            max_attempts: 5,
        })
        .await
        .expect("trigger");
    let shutdown = CancellationToken::new();
    let sa = CronScheduler::start(a.clone(), shutdown.clone());
    let sb = CronScheduler::start(b.clone(), shutdown.clone());
    // Real time is the point: the two schedulers race over the slots of 3.5 s of clock.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    shutdown.cancel();
    sa.stopped().await;
    sb.stopped().await;
    let events = a
        .outbox
        .claim_due("test-node", 1000, Duration::from_secs(60))
        .await
        .expect("claim");
    assert!(events.len() >= 3, "fired {} times in 3.5 s", events.len());
    let mut slots: Vec<_> = events.iter().map(|e| e.scheduled_at).collect();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), events.len(), "no slot fired twice");
    a.health.close().await;
    b.health.close().await;
    schema.close().await;
}

on_both_backends!(
    with_app =>
    an_every_second_trigger_fires_into_the_outbox_after_a_catalog_wake,
    a_trigger_last_fired_hours_ago_fires_once_for_the_latest_slot,
);
