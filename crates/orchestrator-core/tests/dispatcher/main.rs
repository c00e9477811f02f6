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
use testkit::{on_both_backends, with_db};
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
        // The tests wait on records: every run's is stored.
        recorded_successes_per_sec: 0,
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

mod commits;
mod email;
mod http;
mod lifecycle;
mod pubsub;
mod queues;
mod records;
mod retries;
mod throughput;
