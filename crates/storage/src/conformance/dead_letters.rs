//! Dead letters: listed newest first, replayed into the outbox as a fresh event, deleted
//! and purged. Dead letters are made the way the dispatcher makes them: commit `Dead`.
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use shared::{DeadLetterId, Effects, EventKind, Store, StoreError};

use super::outbox::{claim, dead, emit, invoke, setup, topic, trigger};
use super::{app, script};

/// Make `n` dead letters in `app_name` (script `w`), oldest first.
async fn make_dead(store: &Store, app_name: &str, n: usize) -> Vec<DeadLetterId> {
    let mut ids = Vec::new();
    for i in 0..n {
        emit(store, app_name, vec![invoke("w", json!(i))]).await;
        let events = claim(store, "n1").await;
        store
            .outbox
            .commit(
                "n1",
                &events.iter().map(|e| dead(e, "boom")).collect::<Vec<_>>(),
            )
            .await
            .expect("commit");
        let newest = store
            .dead_letters
            .list(&app(app_name), None, 1)
            .await
            .expect("list");
        ids.push(newest[0].id);
    }
    ids
}

pub async fn dead_letters_list_newest_first_page_by_id_and_are_fetched_by_id(store: &Store) {
    setup(store, "shop", &["w"]).await;
    setup(store, "other", &["w"]).await;
    let ids = make_dead(store, "shop", 3).await;
    make_dead(store, "other", 1).await;
    let list = store
        .dead_letters
        .list(&app("shop"), None, 10)
        .await
        .expect("list");
    let listed: Vec<_> = list.iter().map(|d| d.id).collect();
    assert_eq!(listed, [ids[2], ids[1], ids[0]]);
    let page = store
        .dead_letters
        .list(&app("shop"), Some(ids[2]), 1)
        .await
        .expect("page");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, ids[1]);
    let got = store
        .dead_letters
        .get(&app("shop"), ids[0])
        .await
        .expect("get")
        .expect("found");
    assert_eq!(got, list[2]);
    assert_eq!(got.payload, json!(0));
    assert_eq!(got.script, Some(script("w")));
    assert!(
        store
            .dead_letters
            .get(&app("other"), ids[0])
            .await
            .expect("get")
            .is_none(),
        "another app's id is not found"
    );
}

pub async fn replay_puts_the_event_back_with_its_triggers_attempts_and_removes_the_letter(
    store: &Store,
) {
    setup(store, "shop", &["w"]).await;
    let t = trigger(store, "shop", "w", topic("orders"), 8).await;
    emit(
        store,
        "shop",
        vec![shared::Emit::Publish {
            topic: super::outbox::channel("orders"),
            payload: json!({"id": 1}),
        }],
    )
    .await;
    let events = claim(store, "n1").await;
    store
        .outbox
        .commit("n1", &[dead(&events[0], "boom")])
        .await
        .expect("commit");
    let letter = store
        .dead_letters
        .list(&app("shop"), None, 1)
        .await
        .expect("list")
        .remove(0);
    let id = store
        .dead_letters
        .replay(&app("shop"), letter.id)
        .await
        .expect("replay");
    assert_ne!(id, events[0].id);
    let again = claim(store, "n1").await;
    assert_eq!(again.len(), 1);
    let e = &again[0];
    assert_eq!(e.id, id);
    assert_eq!(e.kind, EventKind::Topic);
    assert_eq!(e.attempt, 1);
    assert_eq!(e.max_attempts, 8);
    assert_eq!(e.trigger, Some(t.id));
    assert_eq!(e.source.as_deref(), Some("orders"));
    assert_eq!(e.payload, json!({"id": 1}));
    assert!(
        store
            .dead_letters
            .get(&app("shop"), letter.id)
            .await
            .expect("get")
            .is_none()
    );
    let err = store
        .dead_letters
        .replay(&app("shop"), letter.id)
        .await
        .expect_err("replayed already");
    assert!(
        matches!(err, StoreError::NotFound("dead letter")),
        "{err:?}"
    );
}

pub async fn a_replay_without_its_trigger_gets_five_attempts_and_wakes_the_outbox(store: &Store) {
    setup(store, "shop", &["w"]).await;
    let ids = make_dead(store, "shop", 1).await;
    let _ = tokio::time::timeout(Duration::from_millis(200), store.outbox.inserted()).await;
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move { store.outbox.inserted().await })
    };
    store
        .dead_letters
        .replay(&app("shop"), ids[0])
        .await
        .expect("replay");
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .expect("waiter");
    let events = claim(store, "n1").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].max_attempts, 5);
    assert_eq!(events[0].kind, EventKind::Invoke);
    let lost = store
        .outbox
        .commit("n1", &[super::outbox::done(&events[0], Effects::default())])
        .await
        .expect("commit");
    assert!(lost.is_empty());
}

pub async fn dead_letters_are_deleted_purged_per_app_and_by_age(store: &Store) {
    setup(store, "shop", &["w"]).await;
    setup(store, "other", &["w"]).await;
    assert_eq!(store.dead_letters.oldest().await.expect("oldest"), None);
    let before = Utc::now() - chrono::Duration::seconds(1);
    let ids = make_dead(store, "shop", 3).await;
    make_dead(store, "other", 2).await;
    let oldest = store
        .dead_letters
        .oldest()
        .await
        .expect("oldest")
        .expect("some");
    assert!(oldest >= before && oldest <= Utc::now(), "{oldest}");

    store
        .dead_letters
        .delete(&app("shop"), ids[0])
        .await
        .expect("delete");
    let err = store
        .dead_letters
        .delete(&app("shop"), ids[0])
        .await
        .expect_err("deleted already");
    assert!(
        matches!(err, StoreError::NotFound("dead letter")),
        "{err:?}"
    );
    assert_eq!(
        store
            .dead_letters
            .purge_app(&app("shop"))
            .await
            .expect("purge"),
        2
    );
    assert!(
        store
            .dead_letters
            .list(&app("shop"), None, 10)
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        store
            .dead_letters
            .purge_before(before)
            .await
            .expect("purge before"),
        0,
        "nothing is older than the cutoff"
    );
    assert_eq!(
        store
            .dead_letters
            .purge_before(Utc::now() + chrono::Duration::seconds(1))
            .await
            .expect("purge before"),
        2
    );
    assert_eq!(store.dead_letters.oldest().await.expect("oldest"), None);
}

pub async fn queue_samples_count_each_apps_outbox_and_dead_letters_per_minute_and_are_pruned(
    store: &Store,
) {
    use chrono::{DurationRound, TimeDelta};
    setup(store, "shop", &["w"]).await;
    setup(store, "other", &["w"]).await;
    let start = Utc::now()
        .duration_trunc(TimeDelta::minutes(1))
        .expect("a minute")
        - TimeDelta::hours(2);
    let minute = move |m: i64| start + TimeDelta::minutes(m);
    let sample = |m: i64, depth: u64, dead: u64| shared::store::QueueSample {
        minute: minute(m),
        queue_depth: depth,
        dead_letters: dead,
    };
    let sample_all = |m: i64, keep_since: i64| async move {
        let apps = [app("shop"), app("other"), app("gone")];
        let sampled = store
            .dead_letters
            .sample_queues(&apps, minute(m), minute(keep_since));
        sampled.await.expect("sample");
    };
    let history = |name: &'static str, since: i64| async move {
        let app = app(name);
        let got = store.dead_letters.queue_history(&app, minute(since));
        got.await.expect("history")
    };

    // shop: one dead letter and two events waiting; other: nothing.
    make_dead(store, "shop", 1).await;
    emit(
        store,
        "shop",
        vec![invoke("w", json!(1)), invoke("w", json!(2))],
    )
    .await;
    sample_all(0, 0).await;
    assert_eq!(history("shop", 0).await, [sample(0, 2, 1)]);
    assert_eq!(history("other", 0).await, [sample(0, 0, 0)]);
    let shop = app("shop");
    let now = store.dead_letters.queue_now(&shop, minute(1));
    assert_eq!(now.await.expect("now"), sample(1, 2, 1));

    // A later sample of the same minute replaces the first.
    let events = claim(store, "n1").await;
    assert_eq!(events.len(), 2);
    let finished: Vec<_> = events.iter().map(|e| dead(e, "boom")).collect();
    store.outbox.commit("n1", &finished).await.expect("commit");
    sample_all(0, 0).await;
    assert_eq!(history("shop", 0).await, [sample(0, 0, 3)]);
    sample_all(5, 0).await;
    // From minute 3 on: the sample minute 3 started with (minute 0's) leads.
    assert_eq!(history("shop", 3).await, [sample(0, 0, 3), sample(5, 0, 3)]);
    assert_eq!(history("shop", 5).await, [sample(5, 0, 3)]);
    assert_eq!(history("shop", 6).await, [sample(5, 0, 3)]);
    // Writing a sample deletes the app's samples before the kept window.
    sample_all(90, 5).await;
    assert_eq!(
        history("shop", -10).await,
        [sample(5, 0, 3), sample(90, 0, 3)]
    );
    // Samples go with their app.
    store.apps.delete(&app("shop")).await.expect("delete");
    assert!(history("shop", -10).await.is_empty());
    assert_eq!(history("other", -10).await.len(), 2);
}
