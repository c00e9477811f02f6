//! The cron scheduler's cost: a wake looks at the due triggers only, whatever number of
//! triggers exists, and a schedule that never fires is never looked at again. Work is
//! counted (`CronScheduler::counts`), never timed. On SQLite and PostgreSQL.
use std::time::Duration;

use manager_core::CronScheduler;
use shared::store::{NewTrigger, TriggerSpec};
use shared::{AppName, ScriptName, Store};
use storage::testing::TestDb;
use testkit::{on_both_backends, with_db};
use tokio_util::sync::CancellationToken;

const QUIET: usize = 200;
const NEVER: usize = 50;

async fn cron(store: &Store, app: &AppName, schedule: &str) {
    store
        .triggers
        .create(NewTrigger {
            app: app.clone(),
            script: ScriptName::parse("handler").expect("script"),
            spec: TriggerSpec::Cron {
                schedule: schedule.into(),
                timezone: "Europe/Berlin".into(),
            },
            max_attempts: 5,
        })
        .await
        .expect("trigger");
}

async fn many_triggers_cost_a_wake_only_what_is_due(db: TestDb) {
    let store = &db.store;
    let app = AppName::parse("shop").expect("app");
    store.apps.create(&app).await.expect("app");
    store
        .scripts
        .deploy(&app, &ScriptName::parse("handler").expect("script"), "1")
        .await
        .expect("deploy");
    // Once a year, and (stored before validation refused them) never.
    for _ in 0..QUIET {
        cron(store, &app, "0 0 1 1 *").await;
    }
    for _ in 0..NEVER {
        cron(store, &app, "0 0 30 2 *").await;
    }
    cron(store, &app, "* * * * * *").await;
    let loaded = u64::try_from(QUIET + NEVER + 1).expect("small");

    let shutdown = CancellationToken::new();
    let scheduler = CronScheduler::start(store.clone(), shutdown.clone());
    testkit::eventually(
        "three fires of the every-second trigger",
        Duration::from_secs(20),
        async || (store.outbox.pending(&app).await.expect("pending") >= 3).then_some(()),
    )
    .await;
    shutdown.cancel();
    scheduler.stopped().await;

    let fired = store.outbox.pending(&app).await.expect("pending");
    let counts = scheduler.counts();
    // One wake to load, then one per fired second (and at most one more that found the
    // clock a hair early): never one per trigger.
    assert!(
        counts.wakes <= fired + 2,
        "{} wakes for {fired} fires",
        counts.wakes
    );
    // Loading computes each trigger's next fire once; after that a wake evaluates the
    // every-second trigger alone.
    assert!(
        counts.evaluations <= loaded + counts.wakes,
        "{} evaluations for {loaded} triggers and {} wakes",
        counts.evaluations,
        counts.wakes
    );
    db.close().await;
}

on_both_backends!(with_db => many_triggers_cost_a_wake_only_what_is_due);
