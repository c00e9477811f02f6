//! The group commit of HTTP runs' effects: runs that finish while a commit is in flight
//! are committed together by the next one, in ONE transaction
//! (`OutboxRepository::apply_group`), each run's part all or nothing; a run whose part
//! fails gets its own error and the others commit.
//!
//! What must stay true:
//! - a run is answered only after its own effects are committed: `commit` returns when
//!   the transaction that holds them has committed, or with the error that kept them out;
//! - a run with no commit in flight is committed at once (nothing waits for company), and
//!   an idle committer waits on its queue: no timer, no polling;
//! - SQLite commits one group at a time (one writer); PostgreSQL up to `POSTGRES_COMMITTERS`
//!   side by side, as the event dispatcher does.
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use metrics::{Histogram, histogram};
use shared::store::{App, KeyAnswer, KeyHold, StoredAnswer, SyncCommit};
use shared::{Effects, Store, StoreError};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Runs committed in one transaction at most.
const MAX_GROUP: usize = 128;
/// Groups committed at once on PostgreSQL (SQLite: one).
const POSTGRES_COMMITTERS: usize = 4;

/// `picloud_http_commit_group_size`: runs per group commit (resolved once, after the
/// server has installed its recorder).
static GROUP_SIZE: LazyLock<Histogram> =
    LazyLock::new(|| histogram!("picloud_http_commit_group_size"));

/// A run's answer for its idempotency key, stored with its effects.
pub(super) struct Answer {
    pub(super) hold: KeyHold,
    pub(super) answer: StoredAnswer,
    /// Replayed until then.
    pub(super) expires_at: DateTime<Utc>,
}

/// One run waiting for its group's commit.
struct Pending {
    app: App,
    effects: Effects,
    answer: Option<Answer>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// This node's committer of HTTP runs' effects; its task ends when this is dropped.
pub(super) struct Committer {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Committer {
    /// Spawns the committer's task on the current runtime.
    pub(super) fn start(store: Store) -> Self {
        let committers = match store.health.backend() {
            "sqlite" => 1,
            _ => POSTGRES_COMMITTERS,
        };
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(commit_loop(store, pending, committers));
        Committer { queue }
    }

    /// Commit a run's effects (and its key's answer) to `app`; returns once they are
    /// committed, or with the error that kept them out (as `apply_to` and
    /// `apply_answered` give it).
    pub(super) async fn commit(
        &self,
        app: App,
        effects: Effects,
        answer: Option<Answer>,
    ) -> Result<(), StoreError> {
        let (done, committed) = oneshot::channel();
        let pending = Pending {
            app,
            effects,
            answer,
            done,
        };
        self.queue.send(pending).map_err(|_| stopped())?;
        // Dropped unanswered only if its group's task panicked: nothing is known committed.
        committed.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::backend(std::io::Error::other("the HTTP group commit stopped"))
}

/// Takes every run that queued up while the committers were busy and commits them as one
/// group; waits on the queue when there is nothing to commit.
async fn commit_loop(
    store: Store,
    mut pending: mpsc::UnboundedReceiver<Pending>,
    committers: usize,
) {
    let mut buf = Vec::new();
    if committers == 1 {
        // One group at a time: committed here, without a task of its own per group (a
        // group that panicked leaves its runs unanswered, as its task would, and the loop
        // goes on).
        while pending.recv_many(&mut buf, MAX_GROUP).await > 0 {
            let group = commit_group(&store, std::mem::take(&mut buf));
            let _ = AssertUnwindSafe(group).catch_unwind().await;
        }
        return;
    }
    let busy = Arc::new(Semaphore::new(committers));
    loop {
        let Ok(turn) = busy.clone().acquire_owned().await else {
            break;
        };
        if pending.recv_many(&mut buf, MAX_GROUP).await == 0 {
            break;
        }
        let group = std::mem::take(&mut buf);
        let store = store.clone();
        tokio::spawn(async move {
            commit_group(&store, group).await;
            drop(turn);
        });
    }
}

/// Commits one group and answers each of its runs.
async fn commit_group(store: &Store, group: Vec<Pending>) {
    GROUP_SIZE.record(group.len() as f64);
    let results = {
        let answers: Vec<Option<KeyAnswer<'_>>> = group
            .iter()
            .map(|p| {
                p.answer.as_ref().map(|a| KeyAnswer {
                    hold: &a.hold,
                    answer: &a.answer,
                    expires_at: a.expires_at,
                })
            })
            .collect();
        let commits: Vec<SyncCommit<'_>> = group
            .iter()
            .zip(&answers)
            .map(|(p, answer)| SyncCommit {
                app: &p.app,
                effects: &p.effects,
                answer: answer.as_ref(),
            })
            .collect();
        store.outbox.apply_group(&commits).await
    };
    for (pending, result) in group.into_iter().zip(results) {
        // A run whose caller's task is gone has nobody to tell.
        let _ = pending.done.send(result);
    }
}
