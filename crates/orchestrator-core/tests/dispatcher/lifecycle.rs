//! Capacity and shutdown: a full executor delays events; finish ends cleanly.
use super::*;

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
    // Wait until the dispatcher has claimed it (or already ran it on a fast machine).
    testkit::eventually("the claim", Duration::from_secs(10), async || {
        let done = kv(&store, "slow_done").await.is_some();
        (node.events_in_flight() > 0 || done).then_some(())
    })
    .await;
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

/// The outbox, counting claims and reads of the next due time (each read also sent on a
/// watch, so a test can wait for the dispatcher to have looked).
struct Counting {
    inner: Arc<dyn shared::store::OutboxRepository>,
    claims: std::sync::atomic::AtomicU32,
    looked: tokio::sync::watch::Sender<u32>,
}

#[async_trait]
impl shared::store::OutboxRepository for Counting {
    async fn claim_due(
        &self,
        node: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<shared::Event>, shared::StoreError> {
        self.claims
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.claim_due(node, limit, lease).await
    }
    async fn commit(
        &self,
        node: &str,
        batch: &[shared::store::EventCommit],
    ) -> Result<Vec<shared::EventId>, shared::StoreError> {
        self.inner.commit(node, batch).await
    }
    async fn apply(&self, app: &AppName, effects: &Effects) -> Result<(), shared::StoreError> {
        self.inner.apply(app, effects).await
    }
    async fn apply_to(
        &self,
        app: &shared::store::App,
        effects: &Effects,
    ) -> Result<(), shared::StoreError> {
        self.inner.apply_to(app, effects).await
    }
    async fn apply_answered(
        &self,
        app: &shared::store::App,
        effects: &Effects,
        answer: &shared::store::KeyAnswer<'_>,
    ) -> Result<(), shared::StoreError> {
        self.inner.apply_answered(app, effects, answer).await
    }
    async fn apply_group(
        &self,
        group: &[shared::store::SyncCommit<'_>],
    ) -> Vec<Result<(), shared::StoreError>> {
        self.inner.apply_group(group).await
    }
    async fn next_due_at(
        &self,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, shared::StoreError> {
        let next = self.inner.next_due_at().await;
        self.looked.send_modify(|n| *n += 1);
        next
    }
    async fn inserted(&self) {
        self.inner.inserted().await;
    }
    async fn pending(&self, app: &AppName) -> Result<u64, shared::StoreError> {
        self.inner.pending(app).await
    }
}

#[tokio::test]
async fn a_group_commit_makes_the_idle_dispatcher_read_the_next_due_time_not_claim() {
    // SQLite: its inserts wake the dispatcher once each (no bus notices that may repeat).
    let db = sqlite_store().await;
    let mut store = new_app(&db).await;
    let counting = Arc::new(Counting {
        inner: store.outbox.clone(),
        claims: std::sync::atomic::AtomicU32::new(0),
        looked: tokio::sync::watch::channel(0).0,
    });
    store.outbox = counting.clone() as Arc<dyn shared::store::OutboxRepository>;
    deploy(&store, "on_order", "()").await;
    trigger(&store, "on_order", topic("orders"), 5).await;
    let node = start_node(&store, dispatch("a")).await;
    let mut records = node.subscribe_recorded();
    emit(
        &store,
        vec![Emit::Publish {
            topic: channel("orders"),
            payload: json!(1),
        }],
    )
    .await;
    let record = next_record(&mut records, |r| r.trigger == "topic").await;
    assert_eq!(record.status, InvocationStatus::Ok);
    // Each claim that found less than it asked for is followed by one read of the next
    // due time; the commit's wake-up adds one read and no claim. (Before, it claimed
    // again, and reads never outnumbered claims.)
    let claims = || counting.claims.load(std::sync::atomic::Ordering::SeqCst);
    let mut looked = counting.looked.subscribe();
    tokio::time::timeout(PATIENCE, looked.wait_for(|&n| n > claims()))
        .await
        .expect("the commit made the dispatcher read the next due time, without a claim")
        .expect("the watch is open");
    assert_eq!(*looked.borrow(), claims() + 1);
    node.finish().await;
    db.close().await;
}
