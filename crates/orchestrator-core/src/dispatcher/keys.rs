//! The KV keys of the group commits in flight, so that two commits never write one key
//! side by side.
//!
//! PostgreSQL takes a written key's row lock in a batch's merged KV statement and holds it
//! until the COMMIT has flushed, so group commits that write one key (a hot counter) take
//! turns on its lock, each with the few events that finished while the others ran. Here a
//! batch whose keys meet a commit in flight waits for it instead of starting, and the
//! events that finish meanwhile join it: a hot key gets one large commit at a time, while
//! batches of other keys still commit side by side.
//!
//! Keys are kept as hashes of (app, key): a collision only makes a batch wait.
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use shared::event::KvWrite;
use shared::store::{EventCommit, EventOutcome};
use tokio::sync::Notify;

/// The keys written by the commits in flight.
#[derive(Default)]
pub(super) struct Keys {
    hasher: std::collections::hash_map::RandomState,
    busy: Mutex<HashSet<u64>>,
    /// Told each time a commit in flight ends (a permit is kept when nobody waits).
    freed: Notify,
}

/// The keys of one commit in flight, marked busy until it is dropped.
pub(super) struct Hold {
    keys: Arc<Keys>,
    hashes: Vec<u64>,
}

impl Keys {
    /// Takes from `pending`, in order, the events that may commit now, and marks their keys
    /// busy until the returned `Hold` is dropped; the others stay in `pending`, in order.
    /// An event waits when a key it writes is written by a commit in flight or by an event
    /// that waits before it (so none waits behind later ones for ever). `None` when every
    /// event waits (or there is none).
    pub(super) fn take_ready<T>(
        self: &Arc<Self>,
        pending: &mut Vec<T>,
        commit: impl Fn(&T) -> &EventCommit,
    ) -> Option<(Vec<T>, Hold)> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let mut ready = Vec::new();
        let mut waiting = Vec::new();
        let mut taken: Vec<u64> = Vec::new();
        // Keys of waiting events: later events that write them wait too.
        let mut blocked: HashSet<u64> = HashSet::new();
        let mut mine: Vec<u64> = Vec::new();
        for item in pending.drain(..) {
            mine.clear();
            mine.extend(self.hashes(commit(&item)));
            if mine.iter().any(|h| busy.contains(h) || blocked.contains(h)) {
                blocked.extend(mine.iter().copied());
                waiting.push(item);
            } else {
                taken.extend_from_slice(&mine);
                ready.push(item);
            }
        }
        *pending = waiting;
        if ready.is_empty() {
            return None;
        }
        taken.sort_unstable();
        taken.dedup();
        busy.extend(taken.iter().copied());
        drop(busy);
        let hold = Hold {
            keys: self.clone(),
            hashes: taken,
        };
        Some((ready, hold))
    }

    /// Resolves once a commit in flight has ended since the last call (or right away if
    /// one ended before it).
    pub(super) async fn freed(&self) {
        self.freed.notified().await;
    }

    /// The hashes of the keys the event's commit writes (only a finished run writes any).
    fn hashes<'a>(&'a self, commit: &'a EventCommit) -> impl Iterator<Item = u64> + 'a {
        let writes: &[KvWrite] = match &commit.outcome {
            EventOutcome::Done { effects } => &effects.kv,
            EventOutcome::Retry { .. }
            | EventOutcome::Release { .. }
            | EventOutcome::Dead { .. } => &[],
        };
        let app = commit.event.app.as_str();
        writes.iter().map(move |write| {
            let (KvWrite::Set { key, .. } | KvWrite::Delete { key } | KvWrite::Incr { key, .. }) =
                write;
            self.hasher.hash_one((app, key.as_str()))
        })
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut busy = self.keys.busy.lock().unwrap_or_else(|e| e.into_inner());
        for hash in &self.hashes {
            busy.remove(hash);
        }
        drop(busy);
        self.keys.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::{AppName, Effects, EventId, EventKind};

    fn commit(app: &str, keys: &[&str]) -> EventCommit {
        let kv = keys
            .iter()
            .map(|key| KvWrite::Incr {
                key: (*key).to_owned(),
                by: 1,
            })
            .collect();
        let mut event = crate::dispatcher::tests::event(EventKind::Topic, None);
        event.app = AppName::parse(app).unwrap();
        EventCommit {
            event,
            outcome: EventOutcome::Done {
                effects: Effects {
                    kv,
                    ..Effects::default()
                },
            },
            record: None,
        }
    }

    fn ids(commits: &[EventCommit]) -> Vec<EventId> {
        commits.iter().map(|c| c.event.id).collect()
    }

    fn take(keys: &Arc<Keys>, pending: &mut Vec<EventCommit>) -> Option<(Vec<EventCommit>, Hold)> {
        keys.take_ready(pending, |c| c)
    }

    #[test]
    fn events_of_one_key_commit_together_and_a_second_batch_waits_for_the_first() {
        let keys = Arc::new(Keys::default());
        let mut pending = vec![commit("shop", &["count"]), commit("shop", &["count"])];
        let all = ids(&pending);
        let (first, hold) = take(&keys, &mut pending).expect("nothing in flight");
        assert_eq!(ids(&first), all);
        assert!(pending.is_empty());

        pending.push(commit("shop", &["count"]));
        pending.push(commit("shop", &["count"]));
        assert!(take(&keys, &mut pending).is_none(), "the key is in flight");
        assert_eq!(pending.len(), 2, "the waiting events stay pending");

        drop(hold);
        let (second, _hold) = take(&keys, &mut pending).expect("the key was freed");
        assert_eq!(second.len(), 2);
        assert!(pending.is_empty());
    }

    #[test]
    fn batches_of_other_keys_or_apps_or_without_writes_start_beside_a_commit_in_flight() {
        let keys = Arc::new(Keys::default());
        let mut pending = vec![commit("shop", &["count"])];
        let (_first, _hold) = take(&keys, &mut pending).expect("nothing in flight");

        let hot = commit("shop", &["count"]);
        let other_key = commit("shop", &["k1"]);
        let other_app = commit("blog", &["count"]);
        let no_writes = commit("shop", &[]);
        let mut pending = vec![
            hot.clone(),
            other_key.clone(),
            other_app.clone(),
            no_writes.clone(),
        ];
        let (ready, _second) = take(&keys, &mut pending).expect("unrelated events are ready");
        assert_eq!(
            ids(&ready),
            vec![other_key.event.id, other_app.event.id, no_writes.event.id]
        );
        assert_eq!(ids(&pending), vec![hot.event.id]);
    }

    #[test]
    fn an_event_that_shares_a_key_with_a_waiting_one_waits_with_it() {
        let keys = Arc::new(Keys::default());
        let mut pending = vec![commit("shop", &["a"])];
        let (_first, hold) = take(&keys, &mut pending).expect("nothing in flight");

        // Waits for `a`; `b` then waits behind it, `c` does not.
        let both = commit("shop", &["a", "b"]);
        let b = commit("shop", &["b"]);
        let c = commit("shop", &["c"]);
        let mut pending = vec![both.clone(), b.clone(), c.clone()];
        let (ready, _c) = take(&keys, &mut pending).expect("c is ready");
        assert_eq!(ids(&ready), vec![c.event.id]);
        assert_eq!(ids(&pending), vec![both.event.id, b.event.id]);

        drop(hold);
        let (ready, _ab) = take(&keys, &mut pending).expect("a was freed");
        assert_eq!(ids(&ready), vec![both.event.id, b.event.id]);
    }

    #[tokio::test]
    async fn the_end_of_a_commit_is_told_even_when_nobody_waited_yet() {
        let keys = Arc::new(Keys::default());
        let mut pending = vec![commit("shop", &["count"])];
        let (_batch, hold) = take(&keys, &mut pending).expect("nothing in flight");
        drop(hold);
        tokio::time::timeout(std::time::Duration::from_secs(5), keys.freed())
            .await
            .expect("the freed key was told");
        assert!(keys.busy.lock().unwrap().is_empty());
    }

    #[test]
    fn a_commit_that_panics_frees_its_keys() {
        let keys = Arc::new(Keys::default());
        let mut pending = vec![commit("shop", &["count"])];
        let (_batch, hold) = take(&keys, &mut pending).expect("nothing in flight");
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _hold = hold;
            panic!("a commit failed badly");
        }));
        assert!(unwound.is_err());
        let mut pending = vec![commit("shop", &["count"])];
        assert!(take(&keys, &mut pending).is_some());
    }
}
