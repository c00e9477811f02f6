//! The event dispatcher end to end, with its real parts: SQLite and PostgreSQL stores from
//! `storage::testing`, the real executor, the `MailboxMailer`. Events are inserted the way
//! a script's commit inserts them (`store.outbox.apply`), and the tests wait on the
//! orchestrator's record broadcast (sent after each commit), never on sleeps to "let it
//! finish".
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use executor_core::{Executor, ExecutorConfig, Limits};
use orchestrator_core::mailer::{MailError, MailSender, MailboxMailer};
use orchestrator_core::{DispatchConfig, INVOCATION_ID_HEADER, IngressConfig, Orchestrator};
use serde_json::{Value, json};
use shared::store::{HttpMethod, NewTrigger, TriggerSpec};
use shared::{
    AppName, ChannelName, Effects, EmailMessage, Emit, InvocationRecord, InvocationStatus,
    RoutePath, ScriptName, Store,
};
use storage::testing::{TestDb, postgres_store, sqlite_store};
use tokio::sync::{broadcast, mpsc};

const SHOP: &str = "shop";
/// How long any single wait in these tests may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

fn app() -> AppName {
    AppName::parse(SHOP).expect("app name")
}

fn dispatch(node: &str) -> DispatchConfig {
    DispatchConfig {
        node_id: node.to_owned(),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..DispatchConfig::default()
    }
}

async fn executor(store: &Store) -> Arc<Executor> {
    executor_with(store, 2, 256)
}

fn executor_with(store: &Store, threads: usize, queue_capacity: usize) -> Arc<Executor> {
    Executor::start(
        ExecutorConfig {
            threads,
            queue_capacity,
            limits: Limits {
                timeout: Duration::from_secs(5),
                ..Limits::default()
            },
            ..ExecutorConfig::default()
        },
        store.clone(),
        tokio::runtime::Handle::current(),
    )
}

/// One node: an orchestrator (with its dispatcher) on `store`.
async fn start_node(store: &Store, config: DispatchConfig) -> Arc<Orchestrator> {
    start_node_with(store, config, Arc::new(MailboxMailer::new(store.clone()))).await
}

async fn start_node_with(
    store: &Store,
    config: DispatchConfig,
    mailer: Arc<dyn MailSender>,
) -> Arc<Orchestrator> {
    Orchestrator::start(
        store.clone(),
        executor(store).await,
        mailer,
        IngressConfig::default(),
        config,
    )
    .await
    .expect("start orchestrator")
}

async fn new_app(db: &TestDb) -> Store {
    db.store.apps.create(&app()).await.expect("create app");
    db.store.clone()
}

async fn deploy(store: &Store, script: &str, source: &str) {
    let script = ScriptName::parse(script).expect("script name");
    store
        .scripts
        .deploy(&app(), &script, source)
        .await
        .expect("deploy");
}

async fn trigger(store: &Store, script: &str, spec: TriggerSpec, max_attempts: u32) {
    store
        .triggers
        .create(NewTrigger {
            app: app(),
            script: ScriptName::parse(script).expect("script name"),
            spec,
            max_attempts,
        })
        .await
        .expect("create trigger");
}

fn channel(name: &str) -> ChannelName {
    ChannelName::parse(name).expect("channel name")
}

fn topic(name: &str) -> TriggerSpec {
    TriggerSpec::Topic {
        topic: channel(name),
    }
}

fn queue(name: &str) -> TriggerSpec {
    TriggerSpec::Queue {
        queue: channel(name),
    }
}

async fn emit(store: &Store, emitted: Vec<Emit>) {
    let effects = Effects {
        emitted,
        ..Effects::default()
    };
    store
        .outbox
        .apply(&app(), &effects)
        .await
        .expect("insert events");
}

fn send(queue: &str, payload: Value, delay: Option<Duration>) -> Emit {
    Emit::Send {
        queue: channel(queue),
        payload,
        delay,
        idempotency_key: None,
    }
}

async fn kv(store: &Store, key: &str) -> Option<Value> {
    store
        .kv
        .get(&app(), key)
        .await
        .expect("kv get")
        .map(|e| e.value)
}

/// The next record broadcast that `pred` accepts.
async fn next_record(
    rx: &mut broadcast::Receiver<InvocationRecord>,
    pred: impl Fn(&InvocationRecord) -> bool,
) -> InvocationRecord {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match rx.recv().await {
                Ok(record) if pred(&record) => return record,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the record channel closed"),
            }
        }
    })
    .await
    .expect("a matching invocation record in time")
}

// ---------------------------------------------------------------------------------------

async fn a_published_event_runs_its_subscriber_and_commits_its_kv_write(db: TestDb) {
    let store = new_app(&db).await;
    deploy(
        &store,
        "on_order",
        r#"kv::set("last", event.payload.n); kv::incr("seen", 1); print(event.topic);"#,
    )
    .await;
    trigger(&store, "on_order", topic("orders"), 5).await;
    let node = start_node(&store, dispatch("a")).await;
    let mut records = node.subscribe_recorded();

    emit(
        &store,
        vec![Emit::Publish {
            topic: channel("orders"),
            payload: json!({"n": 7}),
        }],
    )
    .await;
    let record = next_record(&mut records, |r| r.trigger == "topic").await;

    assert_eq!(record.status, InvocationStatus::Ok, "{:?}", record.error);
    assert_eq!(record.attempt, Some(1));
    assert_eq!(record.summary, "topic orders");
    assert_eq!(record.http_status, None);
    assert!(record.version.is_some());
    assert_eq!(
        record.logs.first().map(|l| l.message.as_str()),
        Some("orders")
    );
    assert_eq!(kv(&store, "last").await, Some(json!(7)));
    assert_eq!(kv(&store, "seen").await, Some(json!(1)));
    assert_eq!(store.outbox.pending(&app()).await.expect("pending"), 0);
    let stored = store
        .invocations
        .get(&app(), record.id)
        .await
        .expect("read record");
    assert_eq!(stored.map(|r| r.trigger), Some("topic".to_owned()));
    node.finish().await;
    db.close().await;
}

#[tokio::test]
async fn a_published_event_runs_its_subscriber_and_commits_its_kv_write_on_sqlite() {
    a_published_event_runs_its_subscriber_and_commits_its_kv_write(sqlite_store().await).await;
}

#[tokio::test]
async fn a_published_event_runs_its_subscriber_and_commits_its_kv_write_on_postgres() {
    a_published_event_runs_its_subscriber_and_commits_its_kv_write(postgres_store().await).await;
}

async fn a_throwing_handler_is_retried_then_dead_lettered_and_the_dead_letter_handler_runs(
    db: TestDb,
) {
    let store = new_app(&db).await;
    deploy(
        &store,
        "worker",
        r#"kv::incr("never", 1); throw "boom " + event.attempt;"#,
    )
    .await;
    deploy(
        &store,
        "on_dead",
        r#"print(event.payload.error); kv::incr("dead_seen", 1);"#,
    )
    .await;
    trigger(&store, "worker", queue("jobs"), 3).await;
    trigger(&store, "on_dead", TriggerSpec::DeadLetter {}, 5).await;
    let node = start_node(&store, dispatch("a")).await;
    let mut records = node.subscribe_recorded();

    emit(&store, vec![send("jobs", json!({"job": 1}), None)]).await;

    let mut attempts = Vec::new();
    for _ in 0..3 {
        let record = next_record(&mut records, |r| r.trigger == "queue").await;
        assert_eq!(record.status, InvocationStatus::Error);
        attempts.push((record.attempt, record.error));
    }
    assert_eq!(
        attempts.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
        vec![Some(1), Some(2), Some(3)]
    );
    for (attempt, error) in &attempts {
        let text = error.clone().unwrap_or_default();
        assert!(
            text.contains(&format!("boom {}", attempt.unwrap_or_default())),
            "{text}"
        );
    }

    let handled = next_record(&mut records, |r| r.trigger == "dead_letter").await;
    assert_eq!(handled.status, InvocationStatus::Ok, "{:?}", handled.error);
    assert_eq!(handled.script.as_str(), "on_dead");
    assert!(
        handled.logs.iter().any(|l| l.message.contains("boom 3")),
        "the dead letter handler saw the last error: {:?}",
        handled.logs
    );
    assert_eq!(kv(&store, "dead_seen").await, Some(json!(1)));
    assert_eq!(
        kv(&store, "never").await,
        None,
        "a throwing run commits nothing"
    );

    let dead = store
        .dead_letters
        .list(&app(), None, 10)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
    assert!(dead[0].error.contains("boom 3"), "{}", dead[0].error);
    assert_eq!(dead[0].payload, json!({"job": 1}));
    assert_eq!(store.outbox.pending(&app()).await.expect("pending"), 0);
    node.finish().await;
    db.close().await;
}

#[tokio::test]
async fn a_throwing_handler_is_retried_then_dead_lettered_and_the_dead_letter_handler_runs_on_sqlite()
 {
    a_throwing_handler_is_retried_then_dead_lettered_and_the_dead_letter_handler_runs(
        sqlite_store().await,
    )
    .await;
}

#[tokio::test]
async fn a_throwing_handler_is_retried_then_dead_lettered_and_the_dead_letter_handler_runs_on_postgres()
 {
    a_throwing_handler_is_retried_then_dead_lettered_and_the_dead_letter_handler_runs(
        postgres_store().await,
    )
    .await;
}

#[tokio::test]
async fn a_failing_dead_letter_handler_creates_no_further_dead_letter_event() {
    let db = sqlite_store().await;
    let store = new_app(&db).await;
    deploy(&store, "worker", r#"throw "first";"#).await;
    deploy(&store, "on_dead", r#"throw "the handler fails too";"#).await;
    trigger(&store, "worker", queue("jobs"), 1).await;
    trigger(&store, "on_dead", TriggerSpec::DeadLetter {}, 1).await;
    let node = start_node(&store, dispatch("a")).await;
    let mut records = node.subscribe_recorded();

    emit(&store, vec![send("jobs", json!(1), None)]).await;
    let worker = next_record(&mut records, |r| r.trigger == "queue").await;
    assert_eq!(worker.status, InvocationStatus::Error);
    let handler = next_record(&mut records, |r| r.trigger == "dead_letter").await;
    assert_eq!(handler.status, InvocationStatus::Error);

    // The handler's commit is broadcast after it committed: had it inserted another
    // dead_letter event, that row would be in the outbox now.
    assert_eq!(store.outbox.pending(&app()).await.expect("pending"), 0);
    let dead = store
        .dead_letters
        .list(&app(), None, 10)
        .await
        .expect("dead letters");
    assert_eq!(
        dead.len(),
        2,
        "the worker's and the handler's, nothing more"
    );
    assert_eq!(
        dead.iter()
            .filter(|d| d.kind == shared::EventKind::DeadLetter)
            .count(),
        1
    );
    node.finish().await;
    db.close().await;
}

#[tokio::test]
async fn a_delayed_send_runs_only_after_its_delay() {
    let db = sqlite_store().await;
    let store = new_app(&db).await;
    deploy(&store, "worker", r#"kv::set("ran", true);"#).await;
    trigger(&store, "worker", queue("later"), 5).await;
    let node = start_node(&store, dispatch("a")).await;
    let mut records = node.subscribe_recorded();

    let sent = Instant::now();
    let sent_at = chrono::Utc::now();
    emit(
        &store,
        vec![send("later", json!(1), Some(Duration::from_millis(300)))],
    )
    .await;
    let early = tokio::time::timeout(Duration::from_millis(150), records.recv()).await;
    assert!(early.is_err(), "nothing runs before the delay");
    assert_eq!(kv(&store, "ran").await, None);

    let record = next_record(&mut records, |r| r.trigger == "queue").await;
    assert!(
        sent.elapsed() >= Duration::from_millis(290),
        "{:?}",
        sent.elapsed()
    );
    assert!(
        record.started_at - sent_at >= chrono::Duration::milliseconds(290),
        "started {:?} after the send",
        record.started_at - sent_at
    );
    assert!(sent.elapsed() < Duration::from_secs(3), "and soon after it");
    assert_eq!(kv(&store, "ran").await, Some(json!(true)));
    node.finish().await;
    db.close().await;
}

#[tokio::test]
async fn an_event_inserted_after_the_dispatcher_went_idle_runs_within_a_second() {
    let db = postgres_store().await;
    let store = new_app(&db).await;
    deploy(&store, "on_ping", r#"kv::incr("pings", 1);"#).await;
    trigger(&store, "on_ping", topic("ping"), 5).await;
    let node = start_node(&store, dispatch("a")).await;
    let mut records = node.subscribe_recorded();
    // An empty outbox: the dispatcher has nothing due and no timer to wait for.
    assert_eq!(store.outbox.next_due_at().await.expect("next due"), None);
    tokio::time::sleep(Duration::from_millis(300)).await;

    const ROUNDS: usize = 20;
    let mut delays = Vec::with_capacity(ROUNDS);
    for round in 1..=ROUNDS {
        let published = Instant::now();
        let published_at = chrono::Utc::now();
        emit(
            &store,
            vec![Emit::Publish {
                topic: channel("ping"),
                payload: json!(round),
            }],
        )
        .await;
        let record = next_record(&mut records, |r| r.trigger == "topic").await;
        assert!(
            published.elapsed() < Duration::from_secs(1),
            "round {round} took {:?}",
            published.elapsed()
        );
        delays.push(
            (record.started_at - published_at)
                .num_microseconds()
                .unwrap_or(0),
        );
    }
    delays.sort_unstable();
    println!(
        "publish -> start: p50 {} us, max {} us",
        delays[ROUNDS / 2],
        delays[ROUNDS - 1]
    );
    assert_eq!(kv(&store, "pings").await, Some(json!(ROUNDS)));
    node.finish().await;
    db.close().await;
}

/// Counts the successful `queue` records one node broadcasts.
fn count_queue_runs(
    node: &Arc<Orchestrator>,
    ok: mpsc::UnboundedSender<&'static str>,
    name: &'static str,
) {
    let mut rx = node.subscribe_recorded();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(r) if r.trigger == "queue" && r.status == InvocationStatus::Ok => {
                    if ok.send(name).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    panic!("missed {n} records")
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

#[tokio::test]
async fn two_dispatchers_on_one_postgres_schema_apply_each_event_exactly_once() {
    const EVENTS: usize = 1000;
    let schema = storage::testing::TestUrl::postgres().await;
    let url = schema.url.clone();
    // Two nodes: two pools on one schema, as two processes would have.
    let store = storage::connect(&url).await.expect("node a's store");
    let other = storage::connect(&url).await.expect("node b's store");
    store.apps.create(&app()).await.expect("create app");
    deploy(
        &store,
        "count",
        r#"kv::incr("total", 1); kv::incr("e-" + event.payload.i, 1);"#,
    )
    .await;
    trigger(&store, "count", queue("work"), 5).await;
    let small_batches = |node: &str| DispatchConfig {
        batch_size: 25,
        max_in_flight: 16,
        ..dispatch(node)
    };
    let a = start_node(&store, small_batches("node-a")).await;
    let b = start_node(&other, small_batches("node-b")).await;
    let (ok, mut done) = mpsc::unbounded_channel();
    count_queue_runs(&a, ok.clone(), "a");
    count_queue_runs(&b, ok, "b");

    for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(100) {
        let sends = chunk
            .iter()
            .map(|i| send("work", json!({"i": i}), None))
            .collect();
        emit(&store, sends).await;
    }
    let (mut by_a, mut by_b) = (0, 0);
    tokio::time::timeout(Duration::from_secs(120), async {
        while by_a + by_b < EVENTS {
            match done.recv().await.expect("a record") {
                "a" => by_a += 1,
                _ => by_b += 1,
            }
        }
    })
    .await
    .expect("every event ran in time");
    a.finish().await;
    b.finish().await;

    assert!(by_a > 0 && by_b > 0, "both nodes worked: {by_a} and {by_b}");
    assert_eq!(kv(&store, "total").await, Some(json!(EVENTS)));
    let entries = store
        .kv
        .list(&app(), "e-", None, 5000)
        .await
        .expect("kv list");
    assert_eq!(entries.len(), EVENTS);
    assert!(entries.iter().all(|e| e.value == json!(1)));
    assert_eq!(store.outbox.pending(&app()).await.expect("pending"), 0);
    store.health.close().await;
    other.health.close().await;
    schema.close().await;
}

async fn an_expired_lease_is_claimed_again_and_run(db: TestDb) {
    let store = new_app(&db).await;
    deploy(&store, "worker", r#"kv::incr("runs", 1);"#).await;
    trigger(&store, "worker", queue("jobs"), 5).await;
    emit(&store, vec![send("jobs", json!(1), None)]).await;
    // A node claims it and dies without committing.
    let lease = Duration::from_millis(400);
    let claimed = store
        .outbox
        .claim_due("crashed-node", 10, lease)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let claimed_at = Instant::now();

    let node = start_node(&store, dispatch("survivor")).await;
    let mut records = node.subscribe_recorded();
    let record = next_record(&mut records, |r| r.trigger == "queue").await;
    assert_eq!(record.status, InvocationStatus::Ok);
    assert!(
        claimed_at.elapsed() >= Duration::from_millis(380),
        "it ran only after the lease expired ({:?})",
        claimed_at.elapsed()
    );
    assert_eq!(kv(&store, "runs").await, Some(json!(1)));
    assert_eq!(store.outbox.pending(&app()).await.expect("pending"), 0);
    node.finish().await;
    db.close().await;
}

#[tokio::test]
async fn an_expired_lease_is_claimed_again_and_run_on_sqlite() {
    an_expired_lease_is_claimed_again_and_run(sqlite_store().await).await;
}

#[tokio::test]
async fn an_expired_lease_is_claimed_again_and_run_on_postgres() {
    an_expired_lease_is_claimed_again_and_run(postgres_store().await).await;
}

/// The real mailbox mailer, telling the test when it was called.
struct Signalling {
    inner: Arc<dyn MailSender>,
    sent: mpsc::UnboundedSender<EmailMessage>,
}

#[async_trait]
impl MailSender for Signalling {
    async fn send(&self, app: &AppName, message: &EmailMessage) -> Result<(), MailError> {
        let result = self.inner.send(app, message).await;
        let _ = self.sent.send(message.clone());
        result
    }
}

fn message(subject: &str) -> EmailMessage {
    EmailMessage {
        to: vec!["ada@example.com".into()],
        subject: subject.into(),
        text: Some("hello".into()),
        html: None,
        from: None,
        reply_to: None,
    }
}

#[tokio::test]
async fn an_email_event_is_delivered_by_the_mailer_into_the_mailbox() {
    let db = sqlite_store().await;
    let store = new_app(&db).await;
    let (sent, mut calls) = mpsc::unbounded_channel();
    let mailer = Arc::new(Signalling {
        inner: Arc::new(MailboxMailer::new(store.clone())),
        sent,
    });
    let node = start_node_with(&store, dispatch("a"), mailer).await;

    emit(
        &store,
        vec![Emit::Email {
            message: message("welcome"),
        }],
    )
    .await;
    let delivered = tokio::time::timeout(PATIENCE, calls.recv())
        .await
        .expect("the mailer was called in time")
        .expect("a message");
    assert_eq!(delivered.subject, "welcome");
    // finish commits the delivered event.
    node.finish().await;
    let mailbox = store.mailbox.list(&app(), 10).await.expect("mailbox");
    assert_eq!(mailbox.len(), 1);
    assert_eq!(mailbox[0].1, message("welcome"));
    assert_eq!(store.outbox.pending(&app()).await.expect("pending"), 0);
    let filter = shared::store::InvocationFilter {
        limit: 10,
        ..Default::default()
    };
    let records = store.invocations.list(&app(), &filter).await.expect("list");
    assert_eq!(records.len(), 1, "the send left one record");
    assert_eq!(records[0].trigger, "email");
    assert_eq!(records[0].status, InvocationStatus::Ok);
    assert_eq!(records[0].summary, "email to ada@example.com");
    assert_eq!(records[0].attempt, Some(1));
    db.close().await;
}

#[tokio::test]
async fn a_refused_email_leaves_an_error_record_with_the_mailers_reason() {
    let db = sqlite_store().await;
    let store = new_app(&db).await;
    let mailer = Arc::new(Refusing {
        permanent: true,
        calls: std::sync::atomic::AtomicU32::new(0),
    });
    let node = start_node_with(&store, dispatch("a"), mailer).await;
    let mut records = node.subscribe_recorded();
    emit(
        &store,
        vec![Emit::Email {
            message: message("lost"),
        }],
    )
    .await;
    let record = next_record(&mut records, |r| r.trigger == "email").await;
    assert_eq!(record.status, InvocationStatus::Error);
    assert_eq!(record.error.as_deref(), Some("the email has no recipient"));
    assert_eq!(record.script.as_str(), "email");
    node.finish().await;
    db.close().await;
}

/// A mail server that refuses everything, for a passing (or a permanent) reason.
struct Refusing {
    permanent: bool,
    calls: std::sync::atomic::AtomicU32,
}

#[async_trait]
impl MailSender for Refusing {
    async fn send(&self, _app: &AppName, _message: &EmailMessage) -> Result<(), MailError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(if self.permanent {
            MailError::NoRecipient
        } else {
            MailError::Mailbox(shared::StoreError::Busy)
        })
    }
}

/// Sends one email through a refusing mailer and returns its dead letter and the calls.
async fn refused_email(permanent: bool) -> (shared::DeadLetter, u32) {
    let db = sqlite_store().await;
    let store = new_app(&db).await;
    deploy(&store, "on_dead", r#"print(event.payload.kind);"#).await;
    trigger(&store, "on_dead", TriggerSpec::DeadLetter {}, 1).await;
    let mailer = Arc::new(Refusing {
        permanent,
        calls: std::sync::atomic::AtomicU32::new(0),
    });
    let node = start_node_with(&store, dispatch("a"), mailer.clone()).await;
    let mut records = node.subscribe_recorded();

    emit(
        &store,
        vec![Emit::Email {
            message: message("lost"),
        }],
    )
    .await;
    let handled = next_record(&mut records, |r| r.trigger == "dead_letter").await;
    assert_eq!(handled.status, InvocationStatus::Ok, "{:?}", handled.error);
    assert_eq!(
        handled.logs.first().map(|l| l.message.as_str()),
        Some("email")
    );
    let dead = store
        .dead_letters
        .list(&app(), None, 10)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1);
    node.finish().await;
    db.close().await;
    let calls = mailer.calls.load(std::sync::atomic::Ordering::SeqCst);
    (dead.into_iter().next().expect("one dead letter"), calls)
}

#[tokio::test]
async fn an_email_the_mailer_keeps_refusing_is_retried_then_dead_lettered() {
    let (dead, calls) = refused_email(false).await;
    assert_eq!(dead.kind, shared::EventKind::Email);
    assert!(dead.attempts > 1, "retried: {} attempts", dead.attempts);
    assert_eq!(calls, dead.attempts);
    assert!(dead.error.contains("mailbox"), "{}", dead.error);
}

#[tokio::test]
async fn an_email_refused_for_good_is_dead_lettered_without_retries() {
    let (dead, calls) = refused_email(true).await;
    assert_eq!(dead.attempts, 1);
    assert_eq!(calls, 1);
    assert_eq!(dead.error, "the email has no recipient");
}

#[tokio::test]
async fn an_executor_at_capacity_delays_events_but_never_counts_an_attempt_or_dead_letters_them() {
    const EVENTS: usize = 8;
    let db = sqlite_store().await;
    let store = new_app(&db).await;
    deploy(
        &store,
        "busy",
        r#"let i = 0; while i < 20000 { i += 1; } kv::incr("done", 1);"#,
    )
    .await;
    // One attempt only: an overloaded executor must not use it up.
    trigger(&store, "busy", queue("busy"), 1).await;
    let node = Orchestrator::start(
        store.clone(),
        executor_with(&store, 1, 1),
        Arc::new(MailboxMailer::new(store.clone())),
        IngressConfig::default(),
        DispatchConfig {
            max_in_flight: EVENTS,
            ..dispatch("a")
        },
    )
    .await
    .expect("start orchestrator");
    let mut records = node.subscribe_recorded();

    emit(
        &store,
        (0..EVENTS).map(|i| send("busy", json!(i), None)).collect(),
    )
    .await;
    // One thread and a queue of one cannot take EVENTS at once, so most were released and
    // run later: none of that counts as an attempt.
    for _ in 0..EVENTS {
        let record = next_record(&mut records, |r| r.trigger == "queue").await;
        assert_eq!(record.status, InvocationStatus::Ok, "{:?}", record.error);
        assert_eq!(record.attempt, Some(1), "an overload is not an attempt");
    }
    assert_eq!(kv(&store, "done").await, Some(json!(EVENTS)));
    let dead = store
        .dead_letters
        .list(&app(), None, 10)
        .await
        .expect("dead letters");
    assert!(dead.is_empty(), "{dead:?}");
    node.finish().await;
    db.close().await;
}

#[tokio::test]
async fn finish_lets_a_running_event_end_and_commits_it() {
    let db = sqlite_store().await;
    let store = new_app(&db).await;
    deploy(
        &store,
        "slow",
        r#"let i = 0; while i < 300000 { i += 1; } kv::set("slow_done", i);"#,
    )
    .await;
    trigger(&store, "slow", queue("slow"), 5).await;
    let node = start_node(&store, dispatch("a")).await;
    let mut records = node.subscribe_recorded();

    emit(&store, vec![send("slow", json!(1), None)]).await;
    // Let the dispatcher claim it (it wakes on the insert at once).
    tokio::time::sleep(Duration::from_millis(100)).await;
    node.finish().await;

    assert_eq!(kv(&store, "slow_done").await, Some(json!(300000)));
    assert_eq!(store.outbox.pending(&app()).await.expect("pending"), 0);
    let record = records.try_recv().expect("the record was broadcast");
    assert_eq!(record.status, InvocationStatus::Ok);
    db.close().await;
}

#[tokio::test]
async fn finish_returns_promptly_when_the_dispatcher_is_idle() {
    let db = sqlite_store().await;
    let store = new_app(&db).await;
    let node = start_node(&store, dispatch("a")).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), node.finish())
        .await
        .expect("finish returned");
    assert!(started.elapsed() < Duration::from_secs(1));
    db.close().await;
}

// --- sync HTTP effects -----------------------------------------------------------------

async fn http_route(store: &Store, method: &str, path: &str, script: &str, source: &str) {
    deploy(store, script, source).await;
    trigger(
        store,
        script,
        TriggerSpec::Http {
            method: HttpMethod::parse(method).expect("method"),
            path: RoutePath::parse(path).expect("path"),
        },
        1,
    )
    .await;
}

async fn serve(node: &Arc<Orchestrator>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = node.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/{SHOP}")
}

async fn sync_http_effects_are_committed_before_the_response(db: TestDb) {
    let store = new_app(&db).await;
    http_route(
        &store,
        "POST",
        "/greeting",
        "set_greeting",
        r#"kv::set("greeting", request.body); "stored""#,
    )
    .await;
    http_route(
        &store,
        "GET",
        "/greeting",
        "get_greeting",
        r#"kv::get("greeting")"#,
    )
    .await;
    let node = start_node(&store, dispatch("a")).await;
    let url = serve(&node).await;
    let client = reqwest::Client::new();

    for word in ["hello", "again"] {
        let posted = client
            .post(format!("{url}/greeting"))
            .body(word)
            .send()
            .await
            .expect("post");
        assert_eq!(posted.status(), 200);
        // Committed before the answer: visible in the store and to the next request.
        assert_eq!(kv(&store, "greeting").await, Some(json!(word)));
        let got = client
            .get(format!("{url}/greeting"))
            .send()
            .await
            .expect("get");
        assert_eq!(got.status(), 200);
        assert_eq!(got.text().await.expect("body"), word);
    }
    node.finish().await;
    db.close().await;
}

#[tokio::test]
async fn sync_http_effects_are_committed_before_the_response_on_sqlite() {
    sync_http_effects_are_committed_before_the_response(sqlite_store().await).await;
}

#[tokio::test]
async fn sync_http_effects_are_committed_before_the_response_on_postgres() {
    sync_http_effects_are_committed_before_the_response(postgres_store().await).await;
}

#[tokio::test]
async fn effects_that_cannot_be_committed_answer_500_with_the_invocation_id() {
    let db = sqlite_store().await;
    let store = new_app(&db).await;
    http_route(
        &store,
        "POST",
        "/write",
        "writer",
        r#"kv::set("k", 1); "ok""#,
    )
    .await;
    let node = start_node(&store, dispatch("a")).await;
    let url = serve(&node).await;
    let client = reqwest::Client::new();
    let first = client
        .post(format!("{url}/write"))
        .send()
        .await
        .expect("post");
    assert_eq!(first.status(), 200);
    // The app disappears, but its route and compiled script are still in memory (no
    // catalog listener here): the run succeeds and its effects cannot be committed.
    store.apps.delete(&app()).await.expect("delete app");

    let response = client
        .post(format!("{url}/write"))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 500);
    let id = response
        .headers()
        .get(INVOCATION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("an invocation id header");
    let body: Value = response.json().await.expect("json body");
    assert_eq!(body["error"]["code"], "internal");
    let text = body["error"]["message"].as_str().unwrap_or_default();
    assert!(text.contains(&id), "{text}");
    node.finish().await;
    db.close().await;
}

// --- throughput ------------------------------------------------------------------------

async fn many_events_are_dispatched_at_a_useful_rate(db: TestDb, backend: &str) {
    const EVENTS: usize = 3000;
    let store = new_app(&db).await;
    deploy(&store, "noop", r#"event.payload"#).await;
    trigger(&store, "noop", queue("bulk"), 5).await;
    let node = start_node(&store, dispatch("a")).await;
    let mut records = node.subscribe_recorded();
    let started = Instant::now();
    for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(500) {
        let sends = chunk.iter().map(|i| send("bulk", json!(i), None)).collect();
        emit(&store, sends).await;
    }
    let mut ok = 0;
    tokio::time::timeout(Duration::from_secs(120), async {
        while ok < EVENTS {
            match records.recv().await {
                Ok(r) if r.status == InvocationStatus::Ok => ok += 1,
                Ok(r) => panic!("a run failed: {:?}", r.error),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    ok += usize::try_from(n).unwrap_or(0);
                }
                Err(broadcast::error::RecvError::Closed) => panic!("closed"),
            }
        }
    })
    .await
    .expect("every event ran in time");
    let elapsed = started.elapsed();
    node.finish().await;
    println!(
        "{backend}: {EVENTS} events in {elapsed:?} = {:.0} events/s",
        EVENTS as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(store.outbox.pending(&app()).await.expect("pending"), 0);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_events_are_dispatched_at_a_useful_rate_on_sqlite() {
    many_events_are_dispatched_at_a_useful_rate(sqlite_store().await, "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_events_are_dispatched_at_a_useful_rate_on_postgres() {
    many_events_are_dispatched_at_a_useful_rate(postgres_store().await, "postgres").await;
}
