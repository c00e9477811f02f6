//! Outbox behaviour: emitted events become rows at commit, claims lease them, commits
//! finish them exactly once. Rows are made through `store.outbox.apply` (the path a sync
//! run's effects take) and finished through `claim_due` + `commit`, as the dispatcher does.
use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use shared::store::{EventCommit, EventOutcome, NewTrigger, Trigger, TriggerSpec};
use shared::{
    ChannelName, DeadLetter, Effects, EmailMessage, Emit, Event, EventKind, InvocationId,
    InvocationRecord, InvocationStatus, KvWrite, Store, StoreError,
};

use super::{app, script};

/// A lease long enough that no test outlives it.
const LONG: Duration = Duration::from_secs(600);

/// Create `app_name` with each of `scripts` deployed.
pub(super) async fn setup(store: &Store, app_name: &str, scripts: &[&str]) {
    store.apps.create(&app(app_name)).await.expect("create app");
    for name in scripts {
        store
            .scripts
            .deploy(&app(app_name), &script(name), "\"hi\"")
            .await
            .expect("deploy");
    }
}

pub(super) fn channel(name: &str) -> ChannelName {
    ChannelName::parse(name).expect("a valid channel")
}

pub(super) async fn trigger(
    store: &Store,
    app_name: &str,
    script_name: &str,
    spec: TriggerSpec,
    max_attempts: u32,
) -> Trigger {
    store
        .triggers
        .create(NewTrigger {
            app: app(app_name),
            script: script(script_name),
            spec,
            max_attempts,
        })
        .await
        .expect("create trigger")
}

pub(super) fn topic(name: &str) -> TriggerSpec {
    TriggerSpec::Topic {
        topic: channel(name),
    }
}

pub(super) fn queue(name: &str) -> TriggerSpec {
    TriggerSpec::Queue {
        queue: channel(name),
    }
}

fn publish(topic: &str, payload: Value) -> Emit {
    Emit::Publish {
        topic: channel(topic),
        payload,
    }
}

fn send(queue: &str, payload: Value, delay: Option<Duration>, key: Option<&str>) -> Emit {
    Emit::Send {
        queue: channel(queue),
        payload,
        delay,
        idempotency_key: key.map(str::to_owned),
    }
}

pub(super) fn invoke(script_name: &str, payload: Value) -> Emit {
    Emit::InvokeAsync {
        script: script(script_name),
        payload,
    }
}

pub(super) fn emits(emitted: Vec<Emit>) -> Effects {
    Effects {
        emitted,
        ..Effects::default()
    }
}

pub(super) async fn emit(store: &Store, app_name: &str, emitted: Vec<Emit>) {
    store
        .outbox
        .apply(&app(app_name), &emits(emitted))
        .await
        .expect("apply");
}

pub(super) async fn claim(store: &Store, node: &str) -> Vec<Event> {
    store
        .outbox
        .claim_due(node, 1000, LONG)
        .await
        .expect("claim")
}

async fn pending(store: &Store, app_name: &str) -> u64 {
    store.outbox.pending(&app(app_name)).await.expect("pending")
}

/// The record a dispatcher writes for a run of `event`.
pub(super) fn record_of(event: &Event, status: InvocationStatus) -> InvocationRecord {
    InvocationRecord {
        id: InvocationId::new(),
        app: event.app.clone(),
        script: event.script.clone().unwrap_or_else(|| script("mailer")),
        version: Some(1),
        trigger: event.kind.as_str().into(),
        status,
        started_at: Utc::now(),
        duration_ms: 1,
        http_status: None,
        summary: format!(
            "{} {}",
            event.kind.as_str(),
            event.source.as_deref().unwrap_or("")
        ),
        logs: Vec::new(),
        error: None,
        request_id: None,
        attempt: Some(event.attempt),
        trace_id: None,
    }
}

pub(super) fn done(event: &Event, effects: Effects) -> EventCommit {
    EventCommit {
        event: event.clone(),
        outcome: EventOutcome::Done { effects },
        record: Some(record_of(event, InvocationStatus::Ok)),
    }
}

pub(super) fn dead(event: &Event, error: &str) -> EventCommit {
    EventCommit {
        event: event.clone(),
        outcome: EventOutcome::Dead {
            error: error.into(),
        },
        record: Some(record_of(event, InvocationStatus::Error)),
    }
}

fn scripts_of(events: &[Event]) -> Vec<String> {
    let mut names: Vec<String> = events
        .iter()
        .map(|e| {
            e.script
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        })
        .collect();
    names.sort();
    names
}

pub async fn publish_fans_out_to_every_subscriber_and_to_nobody_without_one(store: &Store) {
    setup(store, "shop", &["a", "b", "c"]).await;
    let ta = trigger(store, "shop", "a", topic("orders"), 3).await;
    let tb = trigger(store, "shop", "b", topic("orders"), 7).await;
    trigger(store, "shop", "c", topic("other"), 3).await;

    emit(store, "shop", vec![publish("nobody", json!(1))]).await;
    assert_eq!(pending(store, "shop").await, 0);

    emit(store, "shop", vec![publish("orders", json!({"n": 1}))]).await;
    assert_eq!(pending(store, "shop").await, 2);
    let events = claim(store, "n1").await;
    assert_eq!(scripts_of(&events), ["a", "b"]);
    for e in &events {
        assert_eq!(e.kind, EventKind::Topic);
        assert_eq!(e.source.as_deref(), Some("orders"));
        assert_eq!(e.payload, json!({"n": 1}));
        assert_eq!(e.attempt, 1);
        let expected = if e.script == Some(script("a")) {
            &ta
        } else {
            &tb
        };
        assert_eq!(e.trigger, Some(expected.id));
        assert_eq!(e.max_attempts, expected.max_attempts);
    }
}

pub async fn send_goes_to_the_consumer_or_waits_parked_until_the_queue_trigger_exists(
    store: &Store,
) {
    setup(store, "shop", &["worker", "mailer"]).await;
    trigger(store, "shop", "mailer", queue("mail"), 4).await;
    emit(
        store,
        "shop",
        vec![
            send("jobs", json!("parked"), None, None),
            send("mail", json!("now"), None, None),
        ],
    )
    .await;
    assert_eq!(pending(store, "shop").await, 2);
    let events = claim(store, "n1").await;
    assert_eq!(events.len(), 1, "the parked message is not claimable");
    assert_eq!(events[0].kind, EventKind::Queue);
    assert_eq!(events[0].script, Some(script("mailer")));
    assert_eq!(events[0].max_attempts, 4);
    assert_eq!(events[0].source.as_deref(), Some("mail"));
    store
        .outbox
        .commit("n1", &[done(&events[0], Effects::default())])
        .await
        .expect("commit");
    assert_eq!(store.outbox.next_due_at().await.expect("next due"), None);

    let consumer = trigger(store, "shop", "worker", queue("jobs"), 9).await;
    let events = claim(store, "n1").await;
    assert_eq!(
        events.len(),
        1,
        "creating the consumer released the message"
    );
    assert_eq!(events[0].script, Some(script("worker")));
    assert_eq!(events[0].trigger, Some(consumer.id));
    assert_eq!(events[0].max_attempts, 9);
    assert_eq!(events[0].payload, json!("parked"));
}

pub async fn an_idempotency_key_sends_once_per_queue(store: &Store) {
    setup(store, "shop", &["worker"]).await;
    trigger(store, "shop", "worker", queue("jobs"), 3).await;
    emit(
        store,
        "shop",
        vec![
            send("jobs", json!(1), None, Some("k1")),
            send("jobs", json!(2), None, Some("k1")),
        ],
    )
    .await;
    emit(
        store,
        "shop",
        vec![send("jobs", json!(3), None, Some("k1"))],
    )
    .await;
    assert_eq!(pending(store, "shop").await, 1);
    emit(
        store,
        "shop",
        vec![
            send("jobs", json!(4), None, Some("k2")),
            send("other", json!(5), None, Some("k1")),
            send("jobs", json!(6), None, None),
        ],
    )
    .await;
    assert_eq!(pending(store, "shop").await, 4);
    let mut payloads: Vec<Value> = claim(store, "n1")
        .await
        .into_iter()
        .map(|e| e.payload)
        .collect();
    payloads.sort_by_key(|v| v.as_i64());
    assert_eq!(payloads, [json!(1), json!(4), json!(6)]);
}

pub async fn a_delayed_send_is_not_claimable_before_its_time(store: &Store) {
    setup(store, "shop", &["worker"]).await;
    trigger(store, "shop", "worker", queue("jobs"), 3).await;
    let before = Utc::now();
    emit(
        store,
        "shop",
        vec![send(
            "jobs",
            json!(1),
            Some(Duration::from_secs(3600)),
            None,
        )],
    )
    .await;
    assert!(claim(store, "n1").await.is_empty());
    let due = store
        .outbox
        .next_due_at()
        .await
        .expect("next due")
        .expect("a due time");
    assert!(due >= before + chrono::Duration::seconds(3599), "{due}");
    assert!(due <= Utc::now() + chrono::Duration::seconds(3601), "{due}");
}

pub async fn a_claim_leases_rows_until_the_lease_expires_and_counts_the_unfinished_run(
    store: &Store,
) {
    setup(store, "shop", &["w"]).await;
    emit(
        store,
        "shop",
        vec![invoke("w", json!(1)), invoke("w", json!(2))],
    )
    .await;
    let first = store
        .outbox
        .claim_due("n1", 10, Duration::from_millis(100))
        .await
        .expect("claim");
    assert_eq!(first.len(), 2);
    assert!(
        claim(store, "n2").await.is_empty(),
        "leased rows are not due"
    );
    let due = store.outbox.next_due_at().await.expect("next due");
    assert!(due.is_some(), "a leased row is due when its lease expires");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let again = claim(store, "n2").await;
    let ids = |events: &[Event]| events.iter().map(|e| e.id).collect::<HashSet<_>>();
    assert_eq!(ids(&again), ids(&first));
    assert!(
        again.iter().all(|e| e.attempt == 2),
        "a run that never finished within its lease (its process died) counts as an attempt"
    );
}

/// A claim whose lease ran out (its node died) is taken over before rows that became due
/// while it was leased: a dead node's events do not wait behind a whole backlog.
pub async fn an_expired_claim_is_taken_over_before_rows_that_waited_behind_it(store: &Store) {
    setup(store, "shop", &["w"]).await;
    emit(
        store,
        "shop",
        (1..=5).map(|n| invoke("w", json!(n))).collect(),
    )
    .await;
    let dead = store
        .outbox
        .claim_due("n1", 1, Duration::from_millis(300))
        .await
        .expect("claim");
    assert_eq!(dead.len(), 1);
    // The other four were due before the lease ends, so they sort before it by due time.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let next = store.outbox.claim_due("n2", 1, LONG).await.expect("claim");
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].id, dead[0].id, "the expired claim comes first");
    assert_eq!(next[0].attempt, 2);
    let rest = claim(store, "n2").await;
    assert_eq!(rest.len(), 4, "then every other due row");
    assert!(rest.iter().all(|e| e.id != dead[0].id && e.attempt == 1));
}

pub async fn a_row_that_does_not_decode_becomes_a_dead_letter_and_the_others_run(store: &Store) {
    setup(store, "shop", &["w"]).await;
    // Deeper than any JSON reader accepts (128 levels): written, but never readable.
    let mut deep = json!(1);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let text = deep.to_string();
    emit(
        store,
        "shop",
        vec![invoke("w", deep), invoke("w", json!("fine"))],
    )
    .await;
    let events = claim(store, "n1").await;
    assert_eq!(events.len(), 1, "the readable row runs");
    assert_eq!(events[0].payload, json!("fine"));
    let letters = store
        .dead_letters
        .list(&app("shop"), None, 10)
        .await
        .expect("list");
    assert_eq!(letters.len(), 1, "the unreadable row is a dead letter");
    assert_eq!(letters[0].error, crate::UNREADABLE_EVENT);
    assert_eq!(letters[0].payload, Value::String(text), "kept as text");
    assert_eq!(letters[0].kind, EventKind::Invoke);
    assert_eq!(
        pending(store, "shop").await,
        1,
        "only the readable row is left"
    );
}

pub async fn a_done_commit_deletes_the_row_applies_emits_and_records_the_attempt(store: &Store) {
    setup(store, "shop", &["w", "next"]).await;
    emit(store, "shop", vec![invoke("w", json!("go"))]).await;
    let events = claim(store, "n1").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Invoke);
    assert_eq!(events[0].max_attempts, 5);
    let commit = done(
        &events[0],
        Effects {
            kv: vec![KvWrite::Incr {
                key: "count".into(),
                by: 1,
            }],
            emitted: vec![invoke("next", json!("then"))],
            ..Effects::default()
        },
    );
    let record_id = commit.record.as_ref().map(|r| r.id).expect("record");
    let lost = store.outbox.commit("n1", &[commit]).await.expect("commit");
    assert!(lost.is_empty());

    let next = claim(store, "n1").await;
    assert_eq!(
        next.len(),
        1,
        "the old row is gone, the emitted one is there"
    );
    assert_eq!(next[0].script, Some(script("next")));
    assert_eq!(next[0].payload, json!("then"));
    let count = store.kv.get(&app("shop"), "count").await.expect("kv get");
    assert_eq!(count.map(|e| e.value), Some(json!(1)));
    let rec = store
        .invocations
        .get(&app("shop"), record_id)
        .await
        .expect("get")
        .expect("the record");
    assert_eq!(rec.attempt, Some(1));
    assert_eq!(rec.trigger, "invoke");
}

pub async fn a_retry_bumps_the_attempt_and_the_due_time(store: &Store) {
    setup(store, "shop", &["w"]).await;
    emit(store, "shop", vec![invoke("w", json!(1))]).await;
    let events = claim(store, "n1").await;
    let later = Utc::now() + chrono::Duration::hours(1);
    let retry = |event: &Event, at| EventCommit {
        event: event.clone(),
        outcome: EventOutcome::Retry {
            at,
            error: "boom".into(),
        },
        record: Some(record_of(event, InvocationStatus::Error)),
    };
    let lost = store
        .outbox
        .commit("n1", &[retry(&events[0], later)])
        .await
        .expect("commit");
    assert!(lost.is_empty());
    assert!(claim(store, "n1").await.is_empty(), "not due before `at`");
    let due = store
        .outbox
        .next_due_at()
        .await
        .expect("due")
        .expect("some");
    assert!(
        (due - later).num_milliseconds().abs() <= 1,
        "{due} vs {later}"
    );

    // Commit the same (stale) claim again: the lease was released, so it is lost.
    let lost = store
        .outbox
        .commit("n1", &[retry(&events[0], Utc::now())])
        .await
        .expect("commit");
    assert_eq!(lost, [events[0].id]);
    assert!(claim(store, "n1").await.is_empty());
    assert_eq!(pending(store, "shop").await, 1);
}

pub async fn a_released_event_comes_back_with_the_same_attempt(store: &Store) {
    setup(store, "shop", &["w"]).await;
    emit(store, "shop", vec![invoke("w", json!(1))]).await;
    let events = claim(store, "n1").await;
    assert_eq!(events[0].attempt, 1);
    let release = EventCommit {
        event: events[0].clone(),
        outcome: EventOutcome::Release {
            at: Utc::now() - chrono::Duration::seconds(1),
        },
        record: None,
    };
    let lost = store.outbox.commit("n1", &[release]).await.expect("commit");
    assert!(lost.is_empty());
    let again = claim(store, "n2").await;
    assert_eq!(again.len(), 1, "released and due again");
    assert_eq!(again[0].id, events[0].id);
    assert_eq!(
        again[0].attempt, 1,
        "a release does not count as an attempt"
    );
}

pub async fn a_retry_due_now_is_claimed_again_as_the_next_attempt(store: &Store) {
    setup(store, "shop", &["w"]).await;
    emit(store, "shop", vec![invoke("w", json!(1))]).await;
    let events = claim(store, "n1").await;
    let commit = EventCommit {
        event: events[0].clone(),
        outcome: EventOutcome::Retry {
            at: Utc::now() - chrono::Duration::seconds(1),
            error: "boom".into(),
        },
        record: None,
    };
    store.outbox.commit("n1", &[commit]).await.expect("commit");
    let again = claim(store, "n2").await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, events[0].id);
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[0].scheduled_at, events[0].scheduled_at);
}

pub async fn dead_writes_a_dead_letter_and_fans_out_but_a_dead_dead_letter_event_does_not(
    store: &Store,
) {
    setup(store, "shop", &["w", "dl1", "dl2"]).await;
    trigger(store, "shop", "w", topic("orders"), 1).await;
    let t1 = trigger(store, "shop", "dl1", TriggerSpec::DeadLetter {}, 2).await;
    trigger(store, "shop", "dl2", TriggerSpec::DeadLetter {}, 2).await;
    emit(store, "shop", vec![publish("orders", json!({"id": 7}))]).await;
    let events = claim(store, "n1").await;
    assert_eq!(events.len(), 1);
    let lost = store
        .outbox
        .commit("n1", &[dead(&events[0], "line 1: boom")])
        .await
        .expect("commit");
    assert!(lost.is_empty());

    let letters = store
        .dead_letters
        .list(&app("shop"), None, 10)
        .await
        .expect("list");
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.event_id, events[0].id);
    assert_eq!(letter.error, "line 1: boom");
    assert_eq!(letter.attempts, 1);
    assert_eq!(letter.kind, EventKind::Topic);
    assert_eq!(letter.source.as_deref(), Some("orders"));
    assert_eq!(letter.payload, json!({"id": 7}));

    let fanned = claim(store, "n1").await;
    assert_eq!(scripts_of(&fanned), ["dl1", "dl2"]);
    for e in &fanned {
        assert_eq!(e.kind, EventKind::DeadLetter);
        let got: DeadLetter = serde_json::from_value(e.payload.clone()).expect("a dead letter");
        assert_eq!(&got, letter);
    }
    let from_t1 = fanned
        .iter()
        .find(|e| e.trigger == Some(t1.id))
        .expect("dl1's event");
    assert_eq!(from_t1.max_attempts, 2);

    // A dead-letter handler that runs out of attempts: a dead letter, and no new event.
    let lost = store
        .outbox
        .commit(
            "n1",
            &fanned.iter().map(|e| dead(e, "again")).collect::<Vec<_>>(),
        )
        .await
        .expect("commit");
    assert!(lost.is_empty());
    assert!(claim(store, "n1").await.is_empty(), "recursion stops");
    assert_eq!(pending(store, "shop").await, 0);
    let letters = store
        .dead_letters
        .list(&app("shop"), None, 10)
        .await
        .expect("list");
    assert_eq!(letters.len(), 3);
}

pub async fn a_commit_with_a_lost_lease_skips_only_that_event(store: &Store) {
    setup(store, "shop", &["w", "out"]).await;
    emit(
        store,
        "shop",
        vec![invoke("w", json!(1)), invoke("w", json!(2))],
    )
    .await;
    let mine = store
        .outbox
        .claim_due("n1", 10, Duration::from_millis(50))
        .await
        .expect("claim");
    assert_eq!(mine.len(), 2);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let stolen = store.outbox.claim_due("n2", 1, LONG).await.expect("claim");
    assert_eq!(stolen.len(), 1);
    let kept = mine
        .iter()
        .find(|e| e.id != stolen[0].id)
        .expect("the other event");

    let batch = mine
        .iter()
        .map(|e| done(e, emits(vec![invoke("out", e.payload.clone())])))
        .collect::<Vec<_>>();
    let records: Vec<InvocationId> = batch
        .iter()
        .filter_map(|c| c.record.as_ref().map(|r| r.id))
        .collect();
    let lost = store.outbox.commit("n1", &batch).await.expect("commit");
    assert_eq!(lost, [stolen[0].id]);

    // Only the kept event's emit and record went in; the stolen one is still n2's.
    let out = claim(store, "n3").await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].script, Some(script("out")));
    assert_eq!(out[0].payload, kept.payload);
    let mut recorded = 0;
    for id in records {
        if store
            .invocations
            .get(&app("shop"), id)
            .await
            .expect("get")
            .is_some()
        {
            recorded += 1;
        }
    }
    assert_eq!(recorded, 1);
    let lost = store
        .outbox
        .commit("n2", &[done(&stolen[0], Effects::default())])
        .await
        .expect("commit");
    assert!(lost.is_empty(), "the new holder still commits");
}

/// A batch mixes events of several claims; one claim ran out and its rows were claimed
/// again. The stale claim's events commit nothing (no KV write, no emitted row, no record,
/// no deletion), however many of them, and the live claim's events commit everything.
pub async fn a_batch_whose_stale_claims_rows_were_taken_again_commits_only_the_live_claims_events(
    store: &Store,
) {
    setup(store, "shop", &["w", "out"]).await;
    emit(
        store,
        "shop",
        (1..=8).map(|n| invoke("w", json!(n))).collect(),
    )
    .await;
    let stale = store
        .outbox
        .claim_due("n1", 4, Duration::from_millis(50))
        .await
        .expect("claim");
    let live = store.outbox.claim_due("n1", 4, LONG).await.expect("claim");
    assert_eq!((stale.len(), live.len()), (4, 4));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let taken = claim(store, "n2").await;
    let ids = |events: &[Event]| events.iter().map(|e| e.id).collect::<HashSet<_>>();
    assert_eq!(
        ids(&taken),
        ids(&stale),
        "only the stale claim's rows were due again"
    );

    let effects = |e: &Event| Effects {
        kv: vec![
            KvWrite::Incr {
                key: "count".into(),
                by: 1,
            },
            KvWrite::Set {
                key: format!("k{}", e.payload),
                value: e.payload.clone(),
                ttl: None,
            },
        ],
        emitted: vec![invoke("out", e.payload.clone())],
        ..Effects::default()
    };
    // Interleaved, as runs finish in any order.
    let batch: Vec<EventCommit> = stale
        .iter()
        .zip(&live)
        .flat_map(|(a, b)| [done(a, effects(a)), done(b, effects(b))])
        .collect();
    let mut lost = store.outbox.commit("n1", &batch).await.expect("commit");
    lost.sort();
    let mut expected: Vec<_> = stale.iter().map(|e| e.id).collect();
    expected.sort();
    assert_eq!(
        lost, expected,
        "exactly the stale claim's events are refused"
    );

    let kv = async |key: &str| {
        store
            .kv
            .get(&app("shop"), key)
            .await
            .expect("kv get")
            .map(|e| e.value)
    };
    assert_eq!(
        kv("count").await,
        Some(json!(4)),
        "one increment per live event"
    );
    for e in &live {
        assert_eq!(
            kv(&format!("k{}", e.payload)).await,
            Some(e.payload.clone())
        );
    }
    for e in &stale {
        assert_eq!(
            kv(&format!("k{}", e.payload)).await,
            None,
            "no write of a stale run"
        );
    }
    for c in &batch {
        let record = c.record.as_ref().expect("a record");
        let found = store
            .invocations
            .get(&app("shop"), record.id)
            .await
            .expect("get");
        let is_live = live.iter().any(|e| e.id == c.event.id);
        assert_eq!(found.is_some(), is_live, "a record only of a live run");
    }
    let out = claim(store, "n3").await;
    let mut emitted: Vec<_> = out.iter().map(|e| e.payload.clone()).collect();
    emitted.sort_by_key(|p| p.as_i64());
    let mut want: Vec<_> = live.iter().map(|e| e.payload.clone()).collect();
    want.sort_by_key(|p| p.as_i64());
    assert_eq!(emitted, want, "only the live runs' emits went in");
    assert!(out.iter().all(|e| e.script == Some(script("out"))));

    // The stale claim's rows are still the new claim's to finish.
    let lost = store
        .outbox
        .commit(
            "n2",
            &taken
                .iter()
                .map(|e| done(e, effects(e)))
                .collect::<Vec<_>>(),
        )
        .await
        .expect("commit");
    assert!(lost.is_empty(), "{lost:?}");
    assert_eq!(kv("count").await, Some(json!(8)));
}

/// The next due time is that of the first row without a lease, or a lease's end when it
/// comes sooner: a dispatcher sleeps until either, never past a due row.
pub async fn next_due_at_is_the_sooner_of_the_first_free_row_and_the_first_lease_end(
    store: &Store,
) {
    setup(store, "shop", &["w"]).await;
    trigger(store, "shop", "w", queue("jobs"), 3).await;
    let hour = Duration::from_secs(3600);
    emit(store, "shop", vec![invoke("w", json!(1))]).await;
    let before = Utc::now();
    let leased = store
        .outbox
        .claim_due("n1", 10, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(leased.len(), 1);
    emit(
        store,
        "shop",
        vec![send("jobs", json!(2), Some(hour), None)],
    )
    .await;
    let due = |at: Option<chrono::DateTime<Utc>>| at.expect("a due time");
    let next = due(store.outbox.next_due_at().await.expect("next due"));
    assert!(
        next >= before + chrono::Duration::seconds(59)
            && next <= Utc::now() + chrono::Duration::seconds(61),
        "the lease's end, before the delayed row: {next}"
    );

    store
        .outbox
        .commit("n1", &[done(&leased[0], Effects::default())])
        .await
        .expect("commit");
    let next = due(store.outbox.next_due_at().await.expect("next due"));
    assert!(
        next >= before + chrono::Duration::seconds(3599),
        "then the delayed row: {next}"
    );
    emit(store, "shop", vec![invoke("w", json!(3))]).await;
    let next = due(store.outbox.next_due_at().await.expect("next due"));
    assert!(next <= Utc::now(), "a row due now comes first: {next}");
}

/// Leases are per claim, not per node: a run whose row was claimed again after its lease
/// ran out (its node hung or lost the database, or was restarted under the same
/// `PICLOUD_NODE_ID`) cannot finish, retry, release or dead-letter the row, even when the
/// new claim came from the same node id; nothing of that run is committed. Only the new
/// claim finishes the rows.
pub async fn a_stale_claim_cannot_finish_retry_release_or_dead_letter_a_row_claimed_again(
    store: &Store,
) {
    setup(store, "shop", &["w", "out"]).await;
    emit(
        store,
        "shop",
        (1..=4).map(|n| invoke("w", json!(n))).collect(),
    )
    .await;
    let stale = store
        .outbox
        .claim_due("n1", 10, Duration::from_millis(50))
        .await
        .expect("claim");
    assert_eq!(stale.len(), 4);
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The same node id claims them again, as a node restarted with a fixed id would.
    let fresh = claim(store, "n1").await;
    assert_eq!(fresh.len(), 4);
    let tokens: HashSet<_> = stale.iter().chain(&fresh).map(|e| e.lease).collect();
    assert_eq!(tokens.len(), 2, "one fresh token per claim: {tokens:?}");
    assert!(
        !tokens.contains(&None),
        "a claimed event carries its claim's token"
    );

    let of = |events: &[Event], n: i64| {
        events
            .iter()
            .find(|e| e.payload == json!(n))
            .cloned()
            .expect("the event")
    };
    let effects = |e: &Event| Effects {
        kv: vec![KvWrite::Incr {
            key: "count".into(),
            by: 1,
        }],
        emitted: vec![invoke("out", e.payload.clone())],
        ..Effects::default()
    };
    // Done, retry, release and dead: every way a run can end.
    let outcomes = |events: &[Event]| {
        let (one, two, three, four) = (of(events, 1), of(events, 2), of(events, 3), of(events, 4));
        vec![
            done(&one, effects(&one)),
            EventCommit {
                outcome: EventOutcome::Retry {
                    at: Utc::now(),
                    error: "boom".into(),
                },
                record: Some(record_of(&two, InvocationStatus::Error)),
                event: two,
            },
            EventCommit {
                event: three,
                outcome: EventOutcome::Release { at: Utc::now() },
                record: None,
            },
            dead(&four, "gave up"),
        ]
    };
    let count = async || {
        store
            .kv
            .get(&app("shop"), "count")
            .await
            .expect("kv get")
            .map(|e| e.value)
    };
    let letters = async || {
        store
            .dead_letters
            .list(&app("shop"), None, 10)
            .await
            .expect("dead letters")
            .len()
    };

    let old = outcomes(&stale);
    let mut lost = store.outbox.commit("n1", &old).await.expect("commit");
    lost.sort();
    let mut all: Vec<_> = stale.iter().map(|e| e.id).collect();
    all.sort();
    assert_eq!(lost, all, "every part of the stale claim is refused");
    assert_eq!(
        count().await,
        None,
        "the stale run's writes were not applied"
    );
    assert_eq!(letters().await, 0, "no dead letter from the stale claim");
    for record in old.iter().filter_map(|c| c.record.as_ref()) {
        let found = store
            .invocations
            .get(&app("shop"), record.id)
            .await
            .expect("get");
        assert_eq!(found, None, "no record of a refused run");
    }
    assert_eq!(
        pending(store, "shop").await,
        4,
        "nothing finished or emitted"
    );
    assert!(
        claim(store, "n2").await.is_empty(),
        "nothing was retried or released: the rows are still the new claim's"
    );

    // An event that no claim handed out holds nothing either.
    let unclaimed = Event {
        lease: None,
        ..of(&fresh, 1)
    };
    let lost = store
        .outbox
        .commit("n1", &[done(&unclaimed, effects(&unclaimed))])
        .await
        .expect("commit");
    assert_eq!(lost, [unclaimed.id]);
    assert_eq!(count().await, None);

    let lost = store
        .outbox
        .commit("n1", &outcomes(&fresh))
        .await
        .expect("commit");
    assert!(
        lost.is_empty(),
        "the new claim finishes every row: {lost:?}"
    );
    assert_eq!(count().await, Some(json!(1)));
    assert_eq!(letters().await, 1);
    assert_eq!(
        pending(store, "shop").await,
        3,
        "the retried and the released rows, and the done run's emit"
    );
}

pub async fn an_event_whose_writes_fail_is_retried_alone_and_the_batch_commits(store: &Store) {
    setup(store, "shop", &["w", "out"]).await;
    store
        .outbox
        .apply(
            &app("shop"),
            &Effects {
                kv: vec![KvWrite::Set {
                    key: "text".into(),
                    value: json!("not a number"),
                    ttl: None,
                }],
                ..Effects::default()
            },
        )
        .await
        .expect("apply");
    emit(
        store,
        "shop",
        vec![invoke("w", json!("bad")), invoke("w", json!("good"))],
    )
    .await;
    let events = claim(store, "n1").await;
    assert_eq!(events.len(), 2);
    let batch = events
        .iter()
        .map(|e| {
            let key = if e.payload == json!("bad") {
                "text"
            } else {
                "n"
            };
            done(
                e,
                Effects {
                    kv: vec![KvWrite::Incr {
                        key: key.into(),
                        by: 1,
                    }],
                    emitted: vec![invoke("out", e.payload.clone())],
                    ..Effects::default()
                },
            )
        })
        .collect::<Vec<_>>();
    let lost = store.outbox.commit("n1", &batch).await.expect("commit");
    assert!(lost.is_empty());
    let n = store.kv.get(&app("shop"), "n").await.expect("get");
    assert_eq!(n.map(|e| e.value), Some(json!(1)));
    let text = store.kv.get(&app("shop"), "text").await.expect("get");
    assert_eq!(text.map(|e| e.value), Some(json!("not a number")));
    let out = claim(store, "n1").await;
    assert_eq!(out.len(), 1, "only the good event's emit went in");
    assert_eq!(out[0].payload, json!("good"));
    assert_eq!(
        pending(store, "shop").await,
        2,
        "the bad event waits for a retry"
    );
}

pub async fn a_batch_of_hot_key_increments_and_sets_applies_every_events_writes_once(
    store: &Store,
) {
    setup(store, "shop", &["w"]).await;
    let total = 70;
    emit(
        store,
        "shop",
        (0..total).map(|i| invoke("w", json!(i))).collect(),
    )
    .await;
    let events = store
        .outbox
        .claim_due("n1", 100, LONG)
        .await
        .expect("claim");
    assert_eq!(events.len(), total);
    let batch = events
        .iter()
        .map(|e| {
            let i = e.payload.as_i64().expect("a number");
            done(
                e,
                Effects {
                    kv: vec![
                        KvWrite::Incr {
                            key: "count".into(),
                            by: 2,
                        },
                        KvWrite::Set {
                            key: format!("k{i}"),
                            value: json!(i),
                            ttl: None,
                        },
                        KvWrite::Set {
                            key: "last".into(),
                            value: json!(i),
                            ttl: None,
                        },
                    ],
                    ..Effects::default()
                },
            )
        })
        .collect::<Vec<_>>();
    let lost = store.outbox.commit("n1", &batch).await.expect("commit");
    assert!(lost.is_empty());
    let get = |key: String| async move {
        store
            .kv
            .get(&app("shop"), &key)
            .await
            .expect("get")
            .map(|e| e.value)
    };
    assert_eq!(get("count".into()).await, Some(json!(2 * total)));
    for i in [0, 63, 64, 69] {
        assert_eq!(get(format!("k{i}")).await, Some(json!(i)));
    }
    let last = batch.last().map(|c| c.event.payload.clone());
    assert_eq!(get("last".into()).await, last, "the batch's last set wins");
    assert_eq!(pending(store, "shop").await, 0);

    // A key set by one event and incremented by the next, and increments of both signs,
    // are applied in order.
    emit(
        store,
        "shop",
        (0..4).map(|i| invoke("w", json!(i))).collect(),
    )
    .await;
    let events = claim(store, "n1").await;
    assert_eq!(events.len(), 4);
    let writes = |i: i64| match i {
        0 => KvWrite::Set {
            key: "mix".into(),
            value: json!(10),
            ttl: None,
        },
        1 => KvWrite::Incr {
            key: "mix".into(),
            by: 5,
        },
        2 => KvWrite::Incr {
            key: "count".into(),
            by: -7,
        },
        _ => KvWrite::Incr {
            key: "count".into(),
            by: 3,
        },
    };
    let batch = events
        .iter()
        .map(|e| {
            let i = e.payload.as_i64().expect("a number");
            done(
                e,
                Effects {
                    kv: vec![writes(i)],
                    ..Effects::default()
                },
            )
        })
        .collect::<Vec<_>>();
    let lost = store.outbox.commit("n1", &batch).await.expect("commit");
    assert!(lost.is_empty());
    assert_eq!(get("mix".into()).await, Some(json!(15)));
    assert_eq!(get("count".into()).await, Some(json!(2 * total - 4)));
    assert_eq!(pending(store, "shop").await, 0);
}

pub async fn a_thousand_rows_claimed_by_four_concurrent_claimers_go_out_once(store: &Store) {
    setup(store, "shop", &["w"]).await;
    let total = 1000;
    emit(
        store,
        "shop",
        (0..total).map(|i| invoke("w", json!(i))).collect(),
    )
    .await;
    let mut tasks = Vec::new();
    for n in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let node = format!("node-{n}");
            let mut got = Vec::new();
            loop {
                let batch = store
                    .outbox
                    .claim_due(&node, 25, LONG)
                    .await
                    .expect("claim");
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|e| e.id));
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("claimer"));
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), total, "every row claimed");
    assert_eq!(unique.len(), total, "no row claimed twice");
}

pub async fn next_due_at_is_none_for_an_empty_outbox_and_the_oldest_row_otherwise(store: &Store) {
    assert_eq!(store.outbox.next_due_at().await.expect("due"), None);
    setup(store, "shop", &["w"]).await;
    let before = Utc::now() - chrono::Duration::seconds(1);
    emit(store, "shop", vec![invoke("w", json!(1))]).await;
    let due = store
        .outbox
        .next_due_at()
        .await
        .expect("due")
        .expect("some");
    assert!(due >= before && due <= Utc::now(), "{due}");
    let events = claim(store, "n1").await;
    store
        .outbox
        .commit("n1", &[done(&events[0], Effects::default())])
        .await
        .expect("commit");
    assert_eq!(store.outbox.next_due_at().await.expect("due"), None);
}

pub async fn inserted_wakes_after_a_commit_that_inserted_rows(store: &Store) {
    setup(store, "shop", &["w"]).await;
    emit(store, "shop", vec![invoke("w", json!(1))]).await;
    let events = claim(store, "n1").await;
    // Take any wake-up the insert above left behind.
    let _ = tokio::time::timeout(Duration::from_millis(200), store.outbox.inserted()).await;
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move { store.outbox.inserted().await })
    };
    store
        .outbox
        .commit(
            "n1",
            &[done(&events[0], emits(vec![invoke("w", json!(2))]))],
        )
        .await
        .expect("commit");
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken within 5 s")
        .expect("waiter");
}

pub async fn invoke_async_and_email_become_rows_with_five_attempts(store: &Store) {
    setup(store, "shop", &["w"]).await;
    let message = EmailMessage {
        to: vec!["a@example.com".into()],
        subject: "hi".into(),
        text: Some("hello".into()),
        html: None,
        from: None,
        reply_to: None,
    };
    emit(
        store,
        "shop",
        vec![
            invoke("w", json!({"x": 1})),
            Emit::Email {
                message: message.clone(),
            },
        ],
    )
    .await;
    let events = claim(store, "n1").await;
    assert_eq!(events.len(), 2);
    let email = events
        .iter()
        .find(|e| e.kind == EventKind::Email)
        .expect("the email");
    assert_eq!(email.script, None);
    assert_eq!(email.max_attempts, 5);
    let got: EmailMessage = serde_json::from_value(email.payload.clone()).expect("an email");
    assert_eq!(got, message);
    let inv = events
        .iter()
        .find(|e| e.kind == EventKind::Invoke)
        .expect("the invoke");
    assert_eq!(inv.script, Some(script("w")));
    assert_eq!(inv.trigger, None);
    assert_eq!(inv.max_attempts, 5);
}

pub async fn applying_effects_to_a_missing_app_is_not_found(store: &Store) {
    let err = store
        .outbox
        .apply(&app("ghost"), &emits(vec![invoke("w", json!(1))]))
        .await
        .expect_err("no app");
    assert!(matches!(err, StoreError::NotFound("app")), "{err:?}");
}

pub async fn a_runs_effects_never_reach_an_app_deleted_and_created_again_under_its_name(
    store: &Store,
) {
    let set = |value: i64| shared::Effects {
        kv: vec![shared::KvWrite::Set {
            key: "k".into(),
            value: json!(value),
            ttl: None,
        }],
        ..shared::Effects::default()
    };
    let first = store.apps.create(&app("shop")).await.expect("create");
    store
        .outbox
        .apply_to(&first, &set(1))
        .await
        .expect("the app the run was routed to");
    store.apps.delete(&app("shop")).await.expect("delete");
    let second = store.apps.create(&app("shop")).await.expect("create again");
    assert_ne!(first.created_at, second.created_at);
    let err = store
        .outbox
        .apply_to(&first, &set(2))
        .await
        .expect_err("the first app is gone");
    assert!(matches!(err, StoreError::NotFound("app")), "{err:?}");
    assert!(
        store
            .kv
            .get(&app("shop"), "k")
            .await
            .expect("get")
            .is_none()
    );
    store
        .outbox
        .apply_to(&second, &set(3))
        .await
        .expect("the new app");
    let entry = store
        .kv
        .get(&app("shop"), "k")
        .await
        .expect("get")
        .expect("k");
    assert_eq!(entry.value, json!(3));
}

pub async fn deleting_an_app_removes_its_outbox_rows_and_dead_letters(store: &Store) {
    setup(store, "shop", &["w"]).await;
    setup(store, "keep", &["w"]).await;
    emit(
        store,
        "shop",
        vec![invoke("w", json!(1)), invoke("w", json!(2))],
    )
    .await;
    emit(store, "keep", vec![invoke("w", json!(3))]).await;
    let events = claim(store, "n1").await;
    let shop_event = events
        .iter()
        .find(|e| e.app == app("shop"))
        .expect("a shop event");
    store
        .outbox
        .commit("n1", &[dead(shop_event, "boom")])
        .await
        .expect("commit");
    assert_eq!(
        store
            .dead_letters
            .list(&app("shop"), None, 10)
            .await
            .expect("list")
            .len(),
        1
    );
    store.apps.delete(&app("shop")).await.expect("delete app");
    assert_eq!(pending(store, "shop").await, 0);
    assert!(
        store
            .dead_letters
            .list(&app("shop"), None, 10)
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(pending(store, "keep").await, 1);
    // The other app's leased events still commit; the deleted app's are skipped.
    let batch: Vec<_> = events.iter().map(|e| done(e, Effects::default())).collect();
    let lost = store.outbox.commit("n1", &batch).await.expect("commit");
    assert_eq!(
        lost.len(),
        2,
        "both of the deleted app's events are skipped"
    );
    assert_eq!(pending(store, "keep").await, 0);
}
