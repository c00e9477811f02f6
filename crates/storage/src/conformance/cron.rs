//! Cron fires and trigger kinds: a fire moves `last_fired_at` and inserts the event in one
//! transaction, once per slot; every trigger kind round-trips through the listings.
use chrono::{Duration, Utc};
use serde_json::json;
use shared::store::TriggerSpec;
use shared::{EventKind, Store, TriggerId};

use super::outbox::{claim, queue, setup, topic, trigger};
use super::{app, at, script};

fn cron() -> TriggerSpec {
    TriggerSpec::Cron {
        schedule: "*/5 * * * *".into(),
        timezone: "Europe/Berlin".into(),
    }
}

pub async fn fire_cron_fires_once_per_slot_and_refuses_an_older_or_equal_slot(store: &Store) {
    setup(store, "shop", &["tick"]).await;
    let t = trigger(store, "shop", "tick", cron(), 4).await;
    assert!(store.triggers.fire_cron(t.id, at(10)).await.expect("fire"));
    assert!(
        !store
            .triggers
            .fire_cron(t.id, at(10))
            .await
            .expect("same slot")
    );
    assert!(
        !store
            .triggers
            .fire_cron(t.id, at(5))
            .await
            .expect("older slot")
    );

    let events = claim(store, "n1").await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.kind, EventKind::Cron);
    assert_eq!(e.script, Some(script("tick")));
    assert_eq!(e.trigger, Some(t.id));
    assert_eq!(e.max_attempts, 4);
    assert_eq!(e.scheduled_at, at(10));
    assert_eq!(e.source.as_deref(), Some("*/5 * * * *"));
    assert_eq!(
        e.payload,
        json!({"slot": at(10), "schedule": "*/5 * * * *", "timezone": "Europe/Berlin"})
    );

    let listed = store.triggers.list(&app("shop")).await.expect("list");
    assert_eq!(listed[0].last_fired_at, Some(at(10)));
    assert!(
        store
            .triggers
            .fire_cron(t.id, at(15))
            .await
            .expect("next slot")
    );
    assert_eq!(claim(store, "n1").await.len(), 1);
}

pub async fn two_schedulers_firing_one_slot_at_once_fire_it_once(store: &Store) {
    setup(store, "shop", &["tick"]).await;
    let t = trigger(store, "shop", "tick", cron(), 4).await;
    let slot = Utc::now() - Duration::seconds(1);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.triggers.fire_cron(t.id, slot).await })
        })
        .collect();
    let mut fired = 0;
    for task in tasks {
        if task.await.expect("task").expect("fire") {
            fired += 1;
        }
    }
    assert_eq!(fired, 1);
    assert_eq!(
        store.outbox.pending(&app("shop")).await.expect("pending"),
        1
    );
}

pub async fn fire_cron_on_a_missing_or_non_cron_trigger_fires_nothing(store: &Store) {
    setup(store, "shop", &["w"]).await;
    let t = trigger(store, "shop", "w", topic("orders"), 3).await;
    assert!(!store.triggers.fire_cron(t.id, at(1)).await.expect("fire"));
    assert!(
        !store
            .triggers
            .fire_cron(TriggerId::new(), at(1))
            .await
            .expect("fire")
    );
    assert_eq!(
        store.outbox.pending(&app("shop")).await.expect("pending"),
        0
    );
}

pub async fn every_trigger_kind_round_trips_through_list_and_list_all(store: &Store) {
    setup(store, "shop", &["w"]).await;
    let made = vec![
        trigger(store, "shop", "w", cron(), 2).await,
        trigger(store, "shop", "w", topic("orders"), 3).await,
        trigger(store, "shop", "w", queue("jobs"), 4).await,
        trigger(store, "shop", "w", TriggerSpec::DeadLetter {}, 5).await,
    ];
    assert_eq!(store.triggers.list(&app("shop")).await.expect("list"), made);
    assert_eq!(store.triggers.list_all().await.expect("list all"), made);
    let err = store
        .triggers
        .create(shared::store::NewTrigger {
            app: app("shop"),
            script: script("w"),
            spec: queue("jobs"),
            max_attempts: 1,
        })
        .await
        .expect_err("a queue has one consumer");
    assert!(
        matches!(err, shared::StoreError::Conflict("trigger")),
        "{err:?}"
    );
}
