//! The realtime replay buffer's retention: each app keeps its newest `retention_count`
//! events, and none older than `retention_secs` (`[realtime]`).
//!
//! What must stay true: the prune never ticks. It prunes at start, then sleeps until
//! - realtime events are committed (a bus notice, from any node; or `Missed`): an app may
//!   be over its count now, so it prunes `prune_interval_secs` later, once for whatever
//!   was committed by then (a burst of publishes is one prune);
//! - or the oldest buffered event expires, but not sooner than `prune_interval_secs`
//!   after the last prune (so an event lives at most that long past its retention).
//!
//! With nothing buffered and nothing published it has no timer at all: an idle server
//! does not wake for it. Events enter the buffer only through the outbox's commit, which
//! sends the notice after it commits, so no event can be missed: the receiver is
//! subscribed before the first prune, and a lost notice is heard as `Missed`.
use std::time::Duration;

use chrono::{DateTime, Utc};
use shared::Store;
use shared::bus::{BusReceiver, Channel, Heard};
use tokio_util::sync::CancellationToken;

/// What the buffer keeps and how often it may be pruned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retention {
    /// Each app's newest this many events.
    pub(crate) keep: u64,
    /// None older than this.
    pub(crate) max_age: Duration,
    /// The shortest time between two prunes (also the wait after a failed one).
    pub(crate) every: Duration,
}

impl Retention {
    pub(crate) fn of(settings: &crate::config::RealtimeSettings) -> Retention {
        Retention {
            keep: settings.retention_count,
            max_age: Duration::from_secs(settings.retention_secs),
            every: Duration::from_secs(settings.prune_interval_secs.max(1)),
        }
    }
}

/// Keep the buffer within `retention` until `shutdown`; `on_wake` is called each time the
/// task wakes to prune (tests count them).
pub(crate) async fn run(
    store: Store,
    retention: Retention,
    shutdown: CancellationToken,
    mut on_wake: impl FnMut() + Send,
) {
    let mut heard = store.bus.subscribe();
    loop {
        on_wake();
        let expiry = prune(&store, &retention).await;
        let expires = async {
            match expiry {
                Some(wait) => tokio::time::sleep(wait.max(retention.every)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = expires => continue,
            () = published(&mut heard) => {}
        }
        // Events were committed: prune once the burst has had `every` to finish.
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(retention.every) => {}
        }
        // What was heard meanwhile is covered by the prune that follows.
        while heard.try_recv_now().is_some() {}
    }
}

/// Returns when realtime events were committed (or notices may have been lost); never
/// when the bus is gone (the store is closing; shutdown ends the task).
async fn published(heard: &mut BusReceiver) {
    loop {
        match heard.recv().await {
            Some(
                Heard::Notice {
                    channel: Channel::Realtime,
                    ..
                }
                | Heard::Missed,
            ) => return,
            Some(Heard::Notice { .. }) => {}
            None => std::future::pending().await,
        }
    }
}

/// Prune now; return how long until the oldest remaining event expires (`None`: the
/// buffer is empty), or until a retry when the store failed.
async fn prune(store: &Store, retention: &Retention) -> Option<Duration> {
    let max_age = chrono::TimeDelta::from_std(retention.max_age).unwrap_or(chrono::TimeDelta::MAX);
    let older_than = Utc::now()
        .checked_sub_signed(max_age)
        .unwrap_or(DateTime::UNIX_EPOCH);
    match store.realtime.prune(retention.keep, older_than).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(removed = n, "pruned the realtime replay buffer"),
        Err(e) => {
            tracing::warn!(error = %e, "realtime replay buffer prune failed");
            return Some(retention.every);
        }
    }
    match store.realtime.oldest().await {
        Ok(oldest) => oldest.map(|at| until_expiry(at, max_age, Utc::now())),
        Err(e) => {
            tracing::warn!(error = %e, "realtime replay buffer prune failed");
            Some(retention.every)
        }
    }
}

/// A millisecond past the moment an event created `at` is older than `max_age` (so that
/// prune's cutoff includes it); zero when that has passed.
fn until_expiry(at: DateTime<Utc>, max_age: chrono::TimeDelta, now: DateTime<Utc>) -> Duration {
    let expires = at
        .checked_add_signed(max_age)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    (expires - now).to_std().unwrap_or(Duration::ZERO) + Duration::from_millis(1)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use chrono::TimeDelta;
    use serde_json::json;
    use shared::{AppName, ChannelName, Effects, Emit};
    use tokio::task::JoinHandle;

    use super::*;

    #[test]
    fn an_event_is_due_a_millisecond_after_it_expires() {
        let now = DateTime::UNIX_EPOCH + TimeDelta::days(10);
        let day = TimeDelta::days(1);
        assert_eq!(
            until_expiry(now - TimeDelta::hours(1), day, now),
            Duration::from_secs(23 * 3600) + Duration::from_millis(1)
        );
        assert_eq!(
            until_expiry(now - TimeDelta::days(2), day, now),
            Duration::from_millis(1)
        );
        assert_eq!(
            until_expiry(now, TimeDelta::MAX, now),
            (DateTime::<Utc>::MAX_UTC - now).to_std().unwrap() + Duration::from_millis(1)
        );
    }

    fn app(name: &str) -> AppName {
        AppName::parse(name).unwrap()
    }

    fn topic(name: &str) -> ChannelName {
        ChannelName::parse(name).unwrap()
    }

    async fn publish(store: &Store, n: usize) {
        let effects = Effects {
            emitted: (0..n)
                .map(|i| Emit::Publish {
                    topic: topic("orders"),
                    payload: json!(i),
                })
                .collect(),
            ..Effects::default()
        };
        store.outbox.apply(&app("shop"), &effects).await.unwrap();
    }

    async fn buffered(store: &Store) -> usize {
        store
            .realtime
            .events_after(&app("shop"), 0, 1000)
            .await
            .unwrap()
            .len()
    }

    fn start(
        store: &Store,
        retention: Retention,
    ) -> (Arc<AtomicU64>, CancellationToken, JoinHandle<()>) {
        let wakes = Arc::new(AtomicU64::new(0));
        let shutdown = CancellationToken::new();
        let counted = Arc::clone(&wakes);
        let task = tokio::spawn(run(store.clone(), retention, shutdown.clone(), move || {
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        (wakes, shutdown, task)
    }

    /// Wait (bounded, for a loaded machine) until `what` holds.
    async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
        testkit::eventually(what, Duration::from_secs(10), async || {
            check().await.then_some(())
        })
        .await;
    }

    /// A store with app `shop` whose topic `orders` is exposed to browsers.
    async fn shop_with_orders() -> storage::testing::TestDb {
        let db = storage::testing::sqlite_store().await;
        db.store.apps.create(&app("shop")).await.unwrap();
        assert!(
            db.store
                .realtime
                .expose(&app("shop"), &topic("orders"))
                .await
                .unwrap()
        );
        db
    }

    #[tokio::test]
    async fn an_empty_buffer_is_never_pruned_again_and_publishes_are_pruned_once_per_burst() {
        let db = shop_with_orders().await;
        let store = db.store.clone();
        // A prune every 10 ms at most; events live a day.
        let retention = Retention {
            keep: 3,
            max_age: Duration::from_secs(86_400),
            every: Duration::from_millis(10),
        };
        let (wakes, shutdown, task) = start(&store, retention);
        eventually("the prune at start", async || {
            wakes.load(Ordering::SeqCst) == 1
        })
        .await;
        // Idle and empty: no timer, so no wake-up in 30 of its intervals (each was one
        // before).
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(wakes.load(Ordering::SeqCst), 1);

        // A burst over the count: pruned to the newest 3 after the burst's notices.
        publish(&store, 5).await;
        publish(&store, 2).await;
        eventually("pruned to 3", async || buffered(&store).await == 3).await;
        // The second publish's notice may come after the prune that covered it: one more.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after_burst = wakes.load(Ordering::SeqCst);
        assert!((2..=3).contains(&after_burst), "{after_burst} wake-ups");
        // The 3 left expire in a day: no wake-up before then.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(wakes.load(Ordering::SeqCst), after_burst);
        // Notices on the other channels are no reason to prune.
        store.bus.notify(Channel::Outbox, "1").await.unwrap();
        store.bus.notify(Channel::Catalog, "x").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(wakes.load(Ordering::SeqCst), after_burst);
        shutdown.cancel();
        task.await.unwrap();
        db.close().await;
    }

    #[tokio::test]
    async fn buffered_events_are_pruned_when_the_oldest_expires_then_the_prune_sleeps() {
        let db = shop_with_orders().await;
        let store = db.store.clone();
        publish(&store, 2).await;
        // Events live 200 ms; the count is no limit.
        let retention = Retention {
            keep: 1000,
            max_age: Duration::from_millis(200),
            every: Duration::from_millis(10),
        };
        let (wakes, shutdown, task) = start(&store, retention);
        eventually("the events expired and went", async || {
            buffered(&store).await == 0
        })
        .await;
        let woken = wakes.load(Ordering::SeqCst);
        // At start (the events were there before it: no notice), then at the expiry.
        assert_eq!(woken, 2, "{woken} wake-ups");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(wakes.load(Ordering::SeqCst), woken, "empty again: no timer");
        shutdown.cancel();
        task.await.unwrap();
        db.close().await;
    }
}
