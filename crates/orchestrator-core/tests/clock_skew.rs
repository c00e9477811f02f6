//! A node whose clock runs ahead of PostgreSQL's: the rows it inserts "now" are not due on
//! the database's clock yet. The dispatcher must sleep until they are, not try claims every
//! few milliseconds. The database's `now()` is shadowed by one 3 s behind (a function in
//! the test schema, which comes before pg_catalog on the search path); claims are counted
//! by a wrapper that hands every call to the real store.
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use executor_core::{Executor, ExecutorConfig};
use orchestrator_core::{DispatchConfig, IngressConfig, MailboxMailer, Orchestrator};
use serde_json::json;
use shared::store::{App, EventCommit, KeyAnswer, OutboxRepository, SyncCommit};
use shared::{AppName, Effects, Emit, Event, EventId, ScriptName, StoreError};

const SKEW_SECS: u32 = 3;

/// The real outbox, with its claims counted.
struct CountingClaims {
    inner: Arc<dyn OutboxRepository>,
    claims: AtomicU32,
}

#[async_trait]
impl OutboxRepository for CountingClaims {
    async fn claim_due(
        &self,
        node: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<Event>, StoreError> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        self.inner.claim_due(node, limit, lease).await
    }
    async fn commit(&self, node: &str, batch: &[EventCommit]) -> Result<Vec<EventId>, StoreError> {
        self.inner.commit(node, batch).await
    }
    async fn apply(&self, app: &AppName, effects: &Effects) -> Result<(), StoreError> {
        self.inner.apply(app, effects).await
    }
    async fn apply_to(&self, app: &App, effects: &Effects) -> Result<(), StoreError> {
        self.inner.apply_to(app, effects).await
    }
    async fn apply_answered(
        &self,
        app: &App,
        effects: &Effects,
        answer: &KeyAnswer<'_>,
    ) -> Result<(), StoreError> {
        self.inner.apply_answered(app, effects, answer).await
    }
    async fn apply_group(&self, group: &[SyncCommit<'_>]) -> Vec<Result<(), StoreError>> {
        self.inner.apply_group(group).await
    }
    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.inner.next_due_at().await
    }
    async fn inserted(&self) {
        self.inner.inserted().await;
    }
    async fn pending(&self, app: &AppName) -> Result<u64, StoreError> {
        self.inner.pending(app).await
    }
}

#[tokio::test]
async fn a_node_ahead_of_the_database_sleeps_until_its_row_is_due_instead_of_spinning() {
    let mut db = storage::testing::skewed_postgres_store(SKEW_SECS).await;
    let counting = Arc::new(CountingClaims {
        inner: db.store.outbox.clone(),
        claims: AtomicU32::new(0),
    });
    db.store.outbox = counting.clone();
    let store = db.store.clone();
    let app = AppName::parse("shop").expect("app");
    let script = ScriptName::parse("w").expect("script");
    store.apps.create(&app).await.expect("app");
    store
        .scripts
        .deploy(&app, &script, "event.payload")
        .await
        .expect("deploy");
    let executor = Executor::start(
        ExecutorConfig {
            threads: 1,
            queue_capacity: 8,
            ..ExecutorConfig::default()
        },
        store.clone(),
        tokio::runtime::Handle::current(),
    );
    let node = Orchestrator::start(
        store.clone(),
        executor,
        Arc::new(MailboxMailer::new(store.clone())),
        IngressConfig::default(),
        DispatchConfig {
            node_id: "ahead".into(),
            ..DispatchConfig::default()
        },
    )
    .await
    .expect("start");
    let mut recorded = node.subscribe_recorded();
    store
        .outbox
        .apply(
            &app,
            &Effects {
                emitted: vec![Emit::InvokeAsync {
                    script,
                    payload: json!(1),
                }],
                ..Effects::default()
            },
        )
        .await
        .expect("insert");
    let record = tokio::time::timeout(Duration::from_secs(30), recorded.recv())
        .await
        .expect("the event ran once the database's clock reached it")
        .expect("a record");
    assert_eq!(record.trigger, "invoke");
    let claims = counting.claims.load(Ordering::SeqCst);
    // At start, on each wake-up (the listener coming up, the local and the NOTIFY word
    // of the insert, the due time, the commit): a handful, where a spin makes hundreds.
    assert!(claims <= 30, "{claims} claims in {SKEW_SECS} s");
    node.finish().await;
    db.close().await;
}
