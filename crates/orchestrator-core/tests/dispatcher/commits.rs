//! Group commits and KV keys: two commits that write one key never run side by side, the
//! others still do, and a failed commit holds nothing back.
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use shared::event::KvWrite;
use shared::store::{App, EventCommit, EventOutcome, KeyAnswer, OutboxRepository, SyncCommit};
use shared::{Event, EventId, StoreError};
use testkit::eventually;

use super::*;

/// The outbox with every group commit watched: the KV keys each writes, how many run at
/// once, and whether two that write one key ever ran side by side. Each commit takes
/// `pause` longer, so commits the dispatcher lets overlap do overlap.
struct Watched {
    inner: Arc<dyn OutboxRepository>,
    pause: Duration,
    /// Commits that write `count` to refuse before committing any.
    fail: AtomicUsize,
    watch: Mutex<Watch>,
}

#[derive(Default, Clone)]
struct Watch {
    /// The keys of each commit in flight.
    running: Vec<(usize, HashSet<String>)>,
    next: usize,
    most_at_once: usize,
    /// Keys written by two commits in flight at once.
    shared: Vec<String>,
    /// Commits that wrote `count`.
    hot_commits: usize,
}

fn written(batch: &[EventCommit]) -> HashSet<String> {
    let mut keys = HashSet::new();
    for commit in batch {
        if let EventOutcome::Done { effects } = &commit.outcome {
            for write in &effects.kv {
                let (KvWrite::Set { key, .. }
                | KvWrite::Delete { key }
                | KvWrite::Incr { key, .. }) = write;
                keys.insert(format!("{}/{key}", commit.event.app));
            }
        }
    }
    keys
}

impl Watched {
    fn new(store: &Store, pause: Duration, fail: usize) -> Arc<Self> {
        Arc::new(Watched {
            inner: store.outbox.clone(),
            pause,
            fail: AtomicUsize::new(fail),
            watch: Mutex::new(Watch::default()),
        })
    }

    fn watch(&self) -> std::sync::MutexGuard<'_, Watch> {
        self.watch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What was seen so far.
    fn seen(&self) -> Watch {
        self.watch().clone()
    }
}

#[async_trait]
impl OutboxRepository for Watched {
    async fn claim_due(
        &self,
        node: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<Event>, StoreError> {
        self.inner.claim_due(node, limit, lease).await
    }

    async fn commit(&self, node: &str, batch: &[EventCommit]) -> Result<Vec<EventId>, StoreError> {
        let keys = written(batch);
        let hot = keys.contains(&format!("{SHOP}/count"));
        let me = {
            let mut watch = self.watch();
            let clashes: Vec<String> = watch
                .running
                .iter()
                .flat_map(|(_, other)| other.intersection(&keys).cloned())
                .collect();
            watch.shared.extend(clashes);
            let me = watch.next;
            watch.next += 1;
            watch.running.push((me, keys));
            watch.most_at_once = watch.most_at_once.max(watch.running.len());
            me
        };
        tokio::time::sleep(self.pause).await;
        let refuse = hot
            && self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        let result = if refuse {
            Err(StoreError::Backend("a commit refused by the test".into()))
        } else {
            self.inner.commit(node, batch).await
        };
        let mut watch = self.watch();
        watch.running.retain(|(id, _)| *id != me);
        if hot && result.is_ok() {
            watch.hot_commits += 1;
        }
        result
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

/// `hot` events incrementing `count` and `cold` events each setting its own key, mixed.
async fn hot_and_cold(store: &Store, hot: usize, cold: usize) {
    deploy(store, "counter", r#"kv::incr("count", 1);"#).await;
    deploy(
        store,
        "setter",
        r#"kv::set("k" + event.payload, event.payload);"#,
    )
    .await;
    trigger(store, "counter", queue("hot"), 5).await;
    trigger(store, "setter", queue("cold"), 5).await;
    let mut sends = Vec::new();
    for i in 0..hot.max(cold) {
        if i < hot {
            sends.push(send("hot", json!(i), None));
        }
        if i < cold {
            sends.push(send("cold", json!(i), None));
        }
    }
    for chunk in sends.chunks(100) {
        emit(store, chunk.to_vec()).await;
    }
}

async fn commits_that_write_one_key_never_run_side_by_side_and_the_others_do(db: TestDb) {
    const HOT: usize = 300;
    const COLD: usize = 300;
    let backend = db.backend();
    let mut store = new_app(&db).await;
    let watched = Watched::new(&store, Duration::from_millis(30), 0);
    store.outbox = watched.clone();
    hot_and_cold(&store, HOT, COLD).await;
    let node = start_node(&store, dispatch("a")).await;

    eventually("every event committed", PATIENCE * 4, async || {
        let left = store.outbox.pending(&app()).await.expect("pending");
        (left == 0).then_some(())
    })
    .await;
    node.finish().await;

    assert_eq!(kv(&store, "count").await, Some(json!(HOT)));
    assert_eq!(
        kv(&store, &format!("k{}", COLD - 1)).await,
        Some(json!(COLD - 1))
    );
    let watch = watched.seen();
    assert!(
        watch.shared.is_empty(),
        "two commits wrote {:?} side by side",
        watch.shared
    );
    assert!(
        watch.hot_commits * 2 <= HOT,
        "the hot key's events wait for each other's commit: {} commits for {HOT} events",
        watch.hot_commits
    );
    println!(
        "{backend:?}: {} commits of count for {} events; at most {} commits at once",
        watch.hot_commits, HOT, watch.most_at_once
    );
    if backend == testkit::Backend::Postgres {
        assert!(
            watch.most_at_once >= 2,
            "commits of other keys run beside the hot key's"
        );
    }
    db.close().await;
}

async fn a_failed_commit_of_a_hot_key_holds_back_no_later_commit(db: TestDb) {
    const HOT: usize = 120;
    const COLD: usize = 60;
    let mut store = new_app(&db).await;
    let watched = Watched::new(&store, Duration::from_millis(5), 2);
    store.outbox = watched.clone();
    hot_and_cold(&store, HOT, COLD).await;
    let config = DispatchConfig {
        // The events of the refused commits run again once their lease is over.
        lease: Duration::from_secs(2),
        ..dispatch("a")
    };
    let node = start_node(&store, config).await;

    eventually("every event committed", PATIENCE * 4, async || {
        let left = store.outbox.pending(&app()).await.expect("pending");
        (left == 0).then_some(())
    })
    .await;
    node.finish().await;

    assert_eq!(
        watched.fail.load(Ordering::SeqCst),
        0,
        "two commits were refused"
    );
    assert_eq!(
        kv(&store, "count").await,
        Some(json!(HOT)),
        "every increment once"
    );
    assert_eq!(
        kv(&store, &format!("k{}", COLD - 1)).await,
        Some(json!(COLD - 1))
    );
    let shared = watched.seen().shared;
    assert!(
        shared.is_empty(),
        "two commits wrote {shared:?} side by side"
    );
    db.close().await;
}

on_both_backends!(
    with_db =>
    commits_that_write_one_key_never_run_side_by_side_and_the_others_do,
    a_failed_commit_of_a_hot_key_holds_back_no_later_commit,
);
