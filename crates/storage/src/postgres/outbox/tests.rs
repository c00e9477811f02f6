//! The outbox on PostgreSQL across nodes and clocks.
use std::time::Duration;

use serde_json::{Value, json};
use shared::event::KvWrite;
use shared::store::{EventCommit, EventOutcome};
use shared::{AppName, Effects, Emit, Event, ScriptName, Store};
use sqlx::Connection;

const WAIT: Duration = Duration::from_secs(5);

/// A node whose clock runs 3 s ahead of the database (the database's `now()` is shadowed
/// by one 3 s behind): a row it inserts "now" is due in 3 s on the claim's clock, and
/// `next_due_at` says so on the node's clock, so the dispatcher sleeps instead of waking
/// every few milliseconds to a claim that finds nothing.
#[tokio::test]
async fn next_due_at_is_measured_on_the_database_clock() {
    let db = crate::testing::skewed_postgres_store(3).await;
    let store = &db.store;
    shop_with_events(store, 1).await;
    let claimed = store
        .outbox
        .claim_due("node", 10, Duration::from_secs(60))
        .await
        .expect("claim");
    assert!(claimed.is_empty(), "not due yet on the database's clock");
    let due = store
        .outbox
        .next_due_at()
        .await
        .expect("next due")
        .expect("a row");
    let wait = due - chrono::Utc::now();
    assert!(
        wait > chrono::Duration::seconds(2) && wait <= chrono::Duration::seconds(3),
        "due in {wait} on this node's clock"
    );
    db.close().await;
}

#[tokio::test]
async fn an_insert_on_one_node_wakes_another_node_through_notify() {
    let schema = crate::testing::TestUrl::postgres().await;
    let url = schema.url.clone();
    let a = crate::connect(&url).await.expect("node a");
    let b = crate::connect(&url).await.expect("node b");
    // The first call starts b's listener, which wakes once when it is listening.
    tokio::time::timeout(WAIT, b.outbox.inserted())
        .await
        .expect("b's listener is up");
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.outbox.inserted().await })
    };
    let app = shop_with_events(&a, 1).await;
    tokio::time::timeout(WAIT, waiter)
        .await
        .expect("b woke on a's insert")
        .expect("waiter");
    assert_eq!(b.outbox.pending(&app).await.expect("pending"), 1);

    a.health.close().await;
    tokio::time::timeout(WAIT, b.health.close())
        .await
        .expect("closing the pool ends the listener");
    let schema = url.rsplit_once("search_path%3D").map(|(_, s)| s.to_owned());
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    if let Some(schema) = schema {
        // The schema name is ours (a fixed prefix and hex digits), never input.
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&mut conn)
            .await
            .expect("drop the test schema");
    }
    conn.close().await.ok();
}

/// An app `shop` with a script `w`, and `n` events for `w` (payloads 0 to n - 1).
async fn shop_with_events(store: &Store, n: usize) -> AppName {
    let app = AppName::parse("shop").expect("name");
    let script = ScriptName::parse("w").expect("name");
    store.apps.create(&app).await.expect("app");
    store
        .scripts
        .deploy(&app, &script, "1")
        .await
        .expect("deploy");
    let emitted = (0..n)
        .map(|i| Emit::InvokeAsync {
            script: script.clone(),
            payload: json!(i),
        })
        .collect();
    store
        .outbox
        .apply(
            &app,
            &Effects {
                emitted,
                ..Effects::default()
            },
        )
        .await
        .expect("apply");
    app
}

/// `shop_with_events`, the events claimed by `node`, in payload order.
async fn claimed(store: &Store, n: usize) -> Vec<Event> {
    shop_with_events(store, n).await;
    let mut events = store
        .outbox
        .claim_due("node", 100, Duration::from_secs(60))
        .await
        .expect("claim");
    events.sort_by_key(|e| e.payload.as_i64());
    assert_eq!(events.len(), n);
    events
}

fn done_with(event: &Event, kv: Vec<KvWrite>) -> EventCommit {
    EventCommit {
        event: event.clone(),
        outcome: EventOutcome::Done {
            effects: Effects {
                kv,
                ..Effects::default()
            },
        },
        record: None,
    }
}

fn set(key: &str, value: Value, ttl: Option<Duration>) -> KvWrite {
    KvWrite::Set {
        key: key.into(),
        value,
        ttl,
    }
}

fn incr(key: &str, by: i64) -> KvWrite {
    KvWrite::Incr {
        key: key.into(),
        by,
    }
}

/// A group commit's merged writes go in one statement (`postgres::kv::apply_merged`):
/// sets, deletes and increments of distinct keys, over entries that expired (an increment
/// of an expired entry starts from zero and has no expiry; an expired entry nobody writes
/// is purged), with the outcome of applying each event's writes in turn.
#[tokio::test]
async fn a_merged_batch_sets_deletes_increments_and_purges_in_one_statement() {
    let db = crate::testing::TestDb::new(crate::Backend::Postgres).await;
    let store = &db.store;
    let app = AppName::parse("shop").expect("name");
    let events = claimed(store, 3).await;
    let expired = Some(Duration::from_micros(1));
    store
        .outbox
        .apply(
            &app,
            &Effects {
                kv: vec![
                    set("gone", json!(1), None),
                    set("n", json!(5), None),
                    set("old", json!(40), expired),
                    set("stale", json!(1), expired),
                    set("kept", json!("t"), Some(Duration::from_secs(3600))),
                ],
                ..Effects::default()
            },
        )
        .await
        .expect("apply");
    let batch = vec![
        done_with(
            &events[0],
            vec![KvWrite::Delete { key: "gone".into() }, incr("old", 2)],
        ),
        done_with(&events[1], vec![set("new", json!("v"), None), incr("n", 1)]),
        done_with(&events[2], vec![incr("n", 1), incr("old", 3)]),
    ];
    let lost = store.outbox.commit("node", &batch).await.expect("commit");
    assert!(lost.is_empty());
    let get = |key: &'static str| {
        let app = app.clone();
        async move { store.kv.get(&app, key).await.expect("get") }
    };
    assert!(get("gone").await.is_none());
    assert_eq!(get("n").await.map(|e| e.value), Some(json!(7)));
    assert_eq!(get("new").await.map(|e| e.value), Some(json!("v")));
    let old = get("old").await.expect("old");
    assert_eq!((old.value, old.expires_at), (json!(5), None));
    assert!(get("kept").await.and_then(|e| e.expires_at).is_some());
    let mut conn = sqlx::PgConnection::connect(&db.db.url)
        .await
        .expect("connect");
    let stored: Vec<String> = sqlx::query_scalar("SELECT key FROM kv ORDER BY key")
        .fetch_all(&mut conn)
        .await
        .expect("keys");
    assert_eq!(
        stored,
        ["kept", "n", "new", "old"],
        "the expired entry is purged"
    );

    // The statement itself succeeds on such writes (a failure would only show above as
    // the slower event-by-event fallback).
    let writes = [
        vec![KvWrite::Delete { key: "new".into() }, incr("old", 1)],
        vec![set("kept", json!(2), None), incr("n", -7)],
    ];
    let merged = crate::repo::kv::merge(writes.iter().map(|w| (&app, &w[..]))).expect("they merge");
    let mut tx = conn.begin().await.expect("begin");
    crate::postgres::kv::apply_merged(&mut tx, &merged)
        .await
        .expect("one statement");
    tx.commit().await.expect("commit");
    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT key, value::text FROM kv ORDER BY key")
            .fetch_all(&mut conn)
            .await
            .expect("entries");
    let expected = [("kept", "2"), ("n", "0"), ("old", "6")].map(|(k, v)| (k.into(), v.into()));
    assert_eq!(stored, expected);
    conn.close().await.ok();
    db.close().await;
}

/// A write the database refuses inside the merged statement (PostgreSQL's JSONB takes no
/// NUL character) rolls the try back: the event that wrote it is retried alone, the
/// others' writes are committed once.
#[tokio::test]
async fn a_merged_batch_whose_set_is_refused_retries_only_that_event() {
    let db = crate::testing::TestDb::new(crate::Backend::Postgres).await;
    let store = &db.store;
    let app = AppName::parse("shop").expect("name");
    let events = claimed(store, 3).await;
    let batch = vec![
        done_with(&events[0], vec![incr("n", 1), set("a", json!(0), None)]),
        done_with(&events[1], vec![set("bad", json!("a\u{0}b"), None)]),
        done_with(&events[2], vec![incr("n", 1)]),
    ];
    let lost = store.outbox.commit("node", &batch).await.expect("commit");
    assert!(lost.is_empty());
    let get = |key: &'static str| {
        let app = app.clone();
        async move { store.kv.get(&app, key).await.expect("get").map(|e| e.value) }
    };
    assert_eq!(get("n").await, Some(json!(2)));
    assert_eq!(get("a").await, Some(json!(0)));
    assert_eq!(get("bad").await, None);
    assert_eq!(
        store.outbox.pending(&app).await.expect("pending"),
        1,
        "the refused event waits for its retry"
    );
    db.close().await;
}

/// A claim writes no indexed column and the table leaves room on each page (migration
/// 0018), so every row a claim takes gets its new version on its own page, as a heap-only
/// tuple: no index entry is added or left dead behind it.
#[tokio::test]
async fn a_claim_updates_its_rows_in_place_without_new_index_entries() {
    let db = crate::testing::TestDb::new(crate::Backend::Postgres).await;
    shop_with_events(&db.store, 60).await;
    let mut conn = sqlx::PgConnection::connect(&db.db.url)
        .await
        .expect("connect");
    let mut tx = conn.begin().await.expect("begin");
    let claimed = sqlx::query(super::due::CLAIM)
        .bind("node")
        .bind(100_i64)
        .bind(60.0_f64)
        .bind(uuid::Uuid::new_v4())
        .execute(&mut *tx)
        .await
        .expect("claim")
        .rows_affected();
    let (hot,): (i64,) =
        sqlx::query_as("SELECT pg_stat_get_xact_tuples_hot_updated('outbox'::regclass)")
            .fetch_one(&mut *tx)
            .await
            .expect("hot updates");
    tx.commit().await.expect("commit");
    assert_eq!(claimed, 60);
    assert_eq!(hot, 60, "every claimed row was updated in place");
    conn.close().await.ok();
    db.close().await;
}

/// The claim is planned on every call: a connection whose first claims met an empty
/// outbox keeps no plan of it (PostgreSQL caches a generic plan after five runs of a named
/// statement, and one made for an empty table reads a whole backlog on every claim).
#[tokio::test]
async fn claims_are_planned_per_call_and_leave_no_cached_plan() {
    let db = crate::testing::TestDb::new(crate::Backend::Postgres).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.db.url)
        .await
        .expect("pool");
    let lease = Duration::from_secs(60);
    for _ in 0..8 {
        let token = shared::LeaseToken(uuid::Uuid::new_v4());
        let rows = super::due::claim(&pool, "node", token, 10, lease)
            .await
            .expect("claim");
        assert!(rows.is_empty());
        super::due::next_due_at(&pool).await.expect("next due");
    }
    shop_with_events(&db.store, 3).await;
    let token = shared::LeaseToken(uuid::Uuid::new_v4());
    let rows = super::due::claim(&pool, "node", token, 10, lease)
        .await
        .expect("claim");
    assert_eq!(rows.len(), 3);
    let cached: Vec<String> = sqlx::query_scalar("SELECT statement FROM pg_prepared_statements")
        .fetch_all(&pool)
        .await
        .expect("prepared statements");
    assert!(
        !cached.iter().any(|s| s.contains("outbox")),
        "no outbox statement is cached: {cached:?}"
    );
    pool.close().await;
    db.close().await;
}

/// A record of a successful run of `event`.
fn record_of(event: &Event) -> shared::InvocationRecord {
    shared::InvocationRecord {
        id: shared::InvocationId::new(),
        app: event.app.clone(),
        script: ScriptName::parse("w").expect("name"),
        version: Some(1),
        trigger: "invoke".into(),
        status: shared::InvocationStatus::Ok,
        started_at: chrono::Utc::now(),
        duration_ms: 1,
        http_status: None,
        summary: "invoke".into(),
        logs: Vec::new(),
        error: None,
        request_id: None,
        attempt: Some(1),
        trace_id: None,
    }
}

/// A batch of events done under their claims, with no blob writes or emitted events, is
/// one statement (`commit::commit_at_once`): rows, merged KV writes and records together.
/// When one row is no longer held, or an increment meets a non-integer, the statement
/// fails as a whole (nothing of it stays) and the batch goes through a transaction, which
/// commits each held event's part exactly once; a batch with emitted events never tries.
#[tokio::test]
async fn a_batch_of_done_events_commits_in_one_statement_or_not_at_all() {
    let db = crate::testing::TestDb::new(crate::Backend::Postgres).await;
    let store = &db.store;
    let app = AppName::parse("shop").expect("name");
    let events = claimed(store, 4).await;
    store
        .outbox
        .apply(
            &app,
            &Effects {
                kv: vec![set("text", json!("t"), None)],
                ..Effects::default()
            },
        )
        .await
        .expect("apply");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.db.url)
        .await
        .expect("pool");
    let get = |key: &'static str| {
        let app = app.clone();
        async move { store.kv.get(&app, key).await.expect("get").map(|e| e.value) }
    };
    let pending = || async { store.outbox.pending(&app).await.expect("pending") };

    let mut first = done_with(&events[0], vec![incr("n", 1)]);
    let record = record_of(&events[0]);
    first.record = Some(record.clone());
    let batch = [first, done_with(&events[1], vec![incr("n", 2)])];
    assert!(super::commit::commit_at_once(&pool, "node", &batch).await);
    assert_eq!(get("n").await, Some(json!(3)));
    assert_eq!(pending().await, 2, "both rows went with their effects");
    let stored = store.invocations.get(&app, record.id).await.expect("get");
    assert_eq!(stored.map(|r| r.id), Some(record.id));

    // events[0]'s row is gone: the statement undoes events[2]'s part too.
    let lost = [
        done_with(&events[2], vec![incr("n", 10)]),
        done_with(&events[0], vec![incr("n", 100)]),
    ];
    assert!(!super::commit::commit_at_once(&pool, "node", &lost).await);
    // An increment of a non-integer: the same.
    let refused = [
        done_with(&events[2], vec![incr("n", 10)]),
        done_with(&events[3], vec![incr("text", 1)]),
    ];
    assert!(!super::commit::commit_at_once(&pool, "node", &refused).await);
    assert_eq!(get("n").await, Some(json!(3)));
    assert_eq!(get("text").await, Some(json!("t")));
    assert_eq!(pending().await, 2, "nothing of either try stayed");
    // Emitted events are not for this statement.
    let emits = [EventCommit {
        event: events[2].clone(),
        outcome: EventOutcome::Done {
            effects: Effects {
                emitted: vec![Emit::InvokeAsync {
                    script: ScriptName::parse("w").expect("name"),
                    payload: json!("next"),
                }],
                ..Effects::default()
            },
        },
        record: None,
    }];
    assert!(!super::commit::commit_at_once(&pool, "node", &emits).await);
    assert_eq!(pending().await, 2);

    // Through the outbox: the lost lease is reported, the refused increment waits for its
    // retry, the held event's part is committed once.
    let not_held = store.outbox.commit("node", &lost).await.expect("commit");
    assert_eq!(not_held, vec![events[0].id]);
    assert_eq!(get("n").await, Some(json!(13)));
    let again = store
        .outbox
        .commit("node", &refused[1..])
        .await
        .expect("commit");
    assert!(again.is_empty());
    assert_eq!(get("text").await, Some(json!("t")));
    assert_eq!(get("n").await, Some(json!(13)));
    assert_eq!(pending().await, 1, "the refused event waits for its retry");
    pool.close().await;
    db.close().await;
}

/// The pool pings a connection only when it may have broken while idle (`crate::pool`):
/// a connection terminated right after its last use fails the next statement on it, and
/// that failure has every connection idle since then pinged before its next use, so the
/// next try gets a new one. The failed statement left nothing: the count is exact.
#[tokio::test]
async fn a_connection_terminated_while_idle_fails_one_statement_and_the_next_is_pinged() {
    let db = crate::testing::TestDb::new(crate::Backend::Postgres).await;
    let store = &db.store;
    let app = AppName::parse("shop").expect("name");
    let events = claimed(store, 2).await;
    let pool = crate::postgres::pool_options()
        .max_connections(1)
        .connect(&db.db.url)
        .await
        .expect("pool");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .expect("pid");
    while pool.num_idle() < 1 {
        tokio::task::yield_now().await;
    }
    let mut admin = sqlx::PgConnection::connect(&db.db.url)
        .await
        .expect("connect");
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
        .bind(pid)
        .fetch_one(&mut admin)
        .await
        .expect("terminate");
    assert!(ended);
    let batch = [
        done_with(&events[0], vec![incr("n", 1)]),
        done_with(&events[1], vec![incr("n", 1)]),
    ];
    assert!(
        !super::commit::commit_at_once(&pool, "node", &batch).await,
        "the terminated connection was handed out without a ping (idle under a second)"
    );
    assert!(super::commit::commit_at_once(&pool, "node", &batch).await);
    let new_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .expect("pid");
    assert_ne!(new_pid, pid);
    let n = store.kv.get(&app, "n").await.expect("get").map(|e| e.value);
    assert_eq!(n, Some(json!(2)), "each increment once");
    assert_eq!(store.outbox.pending(&app).await.expect("pending"), 0);
    admin.close().await.ok();
    pool.close().await;
    db.close().await;
}

/// A store whose connections carry their own `application_name`, and an admin connection
/// that terminates them (not its LISTEN connection) as a failed-over server would.
struct Killable {
    schema: crate::testing::TestUrl,
    name: String,
    store: Store,
    admin: sqlx::PgConnection,
}

impl Killable {
    async fn new() -> Self {
        let schema = crate::testing::TestUrl::postgres().await;
        let name = format!("picloud_kill_{}", uuid::Uuid::new_v4().simple());
        let url = format!("{}&application_name={name}", schema.url);
        let store = crate::connect(&url).await.expect("store");
        let admin = sqlx::PgConnection::connect(&schema.url)
            .await
            .expect("connect");
        Killable {
            schema,
            name,
            store,
            admin,
        }
    }

    /// Terminates the store's connections; at least one was open.
    async fn terminate(&mut self) {
        let ended: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FILTER (WHERE pg_terminate_backend(pid, 5000))
             FROM pg_stat_activity WHERE application_name = $1 AND query NOT LIKE 'LISTEN%'",
        )
        .bind(&self.name)
        .fetch_one(&mut self.admin)
        .await
        .expect("terminate");
        assert!(ended >= 1, "the store's connections were terminated");
    }

    async fn close(self) {
        self.store.health.close().await;
        self.admin.close().await.ok();
        self.schema.close().await;
    }
}

/// A group commit that meets connections terminated while idle is committed by the same
/// call, exactly once: the one-statement try fails on a dead connection, the transaction
/// (or the one try again after a lost connection) runs on a pinged one. With an emitted
/// event the batch goes straight to the transaction, whose BEGIN meets the dead connection.
#[tokio::test]
async fn an_outbox_commit_after_its_connections_were_terminated_succeeds_once() {
    let mut killable = Killable::new().await;
    let store = killable.store.clone();
    let app = AppName::parse("shop").expect("name");
    let events = claimed(&store, 4).await;
    let emit = |event: &Event| EventCommit {
        event: event.clone(),
        outcome: EventOutcome::Done {
            effects: Effects {
                kv: vec![incr("n", 1)],
                emitted: vec![Emit::InvokeAsync {
                    script: ScriptName::parse("w").expect("name"),
                    payload: json!("next"),
                }],
                ..Effects::default()
            },
        },
        record: None,
    };
    let batches = [
        vec![
            done_with(&events[0], vec![incr("n", 1)]),
            done_with(&events[1], vec![incr("n", 1)]),
        ],
        vec![emit(&events[2]), emit(&events[3])],
    ];
    for batch in &batches {
        killable.terminate().await;
        let lost = store.outbox.commit("node", batch).await.expect("commit");
        assert!(lost.is_empty());
    }
    let n = store.kv.get(&app, "n").await.expect("get").map(|e| e.value);
    assert_eq!(n, Some(json!(4)), "each increment once");
    assert_eq!(
        store.outbox.pending(&app).await.expect("pending"),
        2,
        "the four rows gone, the two emitted events in"
    );
    killable.close().await;
}

/// A commit whose first attempt met a lost connection may have committed with only its
/// answer lost: the new objects of events the second attempt finds not held may then be
/// referenced by committed blob rows, so they stay (leaked, never lost). Without a lost
/// connection, a not-held event's new object is an orphan and is removed.
#[tokio::test]
async fn after_a_lost_connection_a_not_held_events_new_object_is_kept_not_removed() {
    let mut killable = Killable::new().await;
    let store = killable.store.clone();
    let app = AppName::parse("shop").expect("name");
    let events = claimed(&store, 2).await;
    // Each event under a token that is not its claim's: not held, its object an orphan.
    let not_held = |event: &Event, object: &str| EventCommit {
        event: Event {
            lease: Some(shared::LeaseToken::new()),
            ..event.clone()
        },
        outcome: EventOutcome::Done {
            effects: Effects {
                blobs: vec![shared::BlobWrite::Put {
                    name: "report.txt".into(),
                    object: object.into(),
                    size: 2,
                    content_type: None,
                }],
                ..Effects::default()
            },
        },
        record: None,
    };
    let kept = store
        .objects
        .put(&app, bytes::Bytes::from_static(b"ok"))
        .await
        .expect("put");
    let removed = store
        .objects
        .put(&app, bytes::Bytes::from_static(b"ok"))
        .await
        .expect("put");

    killable.terminate().await;
    let lost = store
        .outbox
        .commit("node", &[not_held(&events[0], &kept)])
        .await
        .expect("commit");
    assert_eq!(lost, vec![events[0].id], "the event was not held");
    assert!(
        store.objects.get(&kept).await.is_ok(),
        "after a lost connection the new object stays"
    );

    let lost = store
        .outbox
        .commit("node", &[not_held(&events[1], &removed)])
        .await
        .expect("commit");
    assert_eq!(lost, vec![events[1].id], "the event was not held");
    assert!(
        store.objects.get(&removed).await.is_err(),
        "with no lost connection the orphan is removed"
    );
    killable.close().await;
}
