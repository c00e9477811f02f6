//! The queue history: each app's queue depth (its outbox rows) and dead letters, one
//! sample a minute while it is active, the source of the dashboard's queue charts
//! (`GET /api/v1/apps/{app}/queue/history`).
//!
//! What must stay true:
//! - it never ticks: `QueueSampler` waits on the notification bus. An invocation notice
//!   (records an app's runs committed, on any node) marks the app active; once no notice
//!   came for `SETTLE` (the activity settled), or at the end of the minute the first
//!   notice came in, whichever is first, it counts every active app's rows and stores them
//!   as the samples of that minute (so a minute's sample is its value after its last run:
//!   at the minute's end). An idle server never wakes it; after the last run, it wakes
//!   once more, `SETTLE` later;
//! - nothing on the event path waits for it or pays for it: it only hears the notices the
//!   invocation relay sends anyway;
//! - the database counts, so a sample is the app's whichever nodes ran its events; two
//!   nodes sampling one minute write the same row (the later replaces the earlier, and a
//!   later sample of the same minute on one node does too);
//! - a minute without a sample had no run: its value is the last sample's (the reader
//!   carries it forward). Admin changes that no run follows (a purge, a deleted dead
//!   letter) sample at once (`sample_now`);
//! - writing an app's samples deletes its samples older than `KEEP`.
use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use shared::bus::{BusReceiver, Channel, Heard, INVOCATIONS_MISSED};
use shared::{AppName, Store, StoreError};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long samples are kept.
pub const KEEP: TimeDelta = TimeDelta::hours(24);
/// How long without an invocation notice ends a spell of activity: its sample is taken
/// then, not at the minute's end, so a server that went idle is done within a second.
const SETTLE: Duration = Duration::from_secs(1);
/// Past the minute's start, so the clock the sleep ran on and the wall clock agree on
/// which minute it is.
const PAST_THE_MINUTE: Duration = Duration::from_millis(50);

/// Samples active apps' queues after their runs, until shutdown.
pub struct QueueSampler;

impl QueueSampler {
    /// Spawn the sampler on the current runtime; the task ends when `shutdown` is
    /// cancelled or the bus closes.
    pub fn start(store: Store, shutdown: CancellationToken) -> JoinHandle<()> {
        Self::start_paced(store, shutdown, SETTLE)
    }

    /// [`QueueSampler::start`] with the activity settled `settle` after the last notice
    /// instead of `SETTLE`: for tests, which should not wait.
    #[doc(hidden)]
    pub fn start_paced(
        store: Store,
        shutdown: CancellationToken,
        settle: Duration,
    ) -> JoinHandle<()> {
        let bus = store.bus.subscribe();
        let take = move |apps: Vec<AppName>, minute| {
            let store = store.clone();
            async move {
                if let Err(error) = sample(&store, &apps, minute).await {
                    tracing::warn!(error = ?error, "the apps' queues could not be sampled");
                }
            }
        };
        tokio::spawn(watch(bus, shutdown, settle, minute_now, take))
    }
}

/// The sampler's loop: `sample(apps, minute)` for the apps active since the last one,
/// `settle` after the last notice or at the end of the first notice's minute (`minute()`
/// says which minute it is, and when it ends on the runtime's clock).
async fn watch<F, Fut>(
    mut bus: BusReceiver,
    shutdown: CancellationToken,
    settle: Duration,
    minute: impl Fn() -> (DateTime<Utc>, Instant),
    mut sample: F,
) where
    F: FnMut(Vec<AppName>, DateTime<Utc>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut active: BTreeSet<AppName> = BTreeSet::new();
    // The minute the pending sample is of and when it ends; when the last notice came.
    let mut pending: Option<(DateTime<Utc>, Instant)> = None;
    let mut last_notice = Instant::now();
    loop {
        let due = pending.map(|(_, ends)| ends.min(last_notice + settle));
        let sample_due = async move {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = sample_due => {
                let Some((of, _)) = pending.take() else { continue };
                let apps: Vec<AppName> = std::mem::take(&mut active).into_iter().collect();
                sample(apps, of).await;
            }
            heard = bus.recv() => match heard {
                None => return,
                Some(Heard::Notice { channel: Channel::Invocations, payload, .. }) => {
                    if let Some(app) = notice_app(&payload) {
                        active.insert(app);
                        last_notice = Instant::now();
                        pending.get_or_insert_with(&minute);
                    }
                }
                // A lost notice's app is marked by its next one.
                Some(_) => {}
            },
        }
    }
}

/// The app a `Channel::Invocations` notice (`<app> <id> ...`) names.
fn notice_app(payload: &str) -> Option<AppName> {
    if payload == INVOCATIONS_MISSED {
        return None;
    }
    let name = payload.split(' ').next()?;
    AppName::parse(name).ok()
}

/// This minute (wall clock), and the start of the next one on the runtime's clock.
fn minute_now() -> (DateTime<Utc>, Instant) {
    let now = Utc::now();
    let minute = this_minute(now);
    let wait = (minute + TimeDelta::minutes(1) - now)
        .to_std()
        .unwrap_or_default();
    (minute, Instant::now() + wait + PAST_THE_MINUTE)
}

/// The start of the minute `at` is in.
pub(crate) fn this_minute(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::minutes(1)).unwrap_or(at)
}

/// Store `apps`' queues as counted now, as their samples of the minute `at` is in (a
/// later sample of it replaces the earlier).
async fn sample(store: &Store, apps: &[AppName], at: DateTime<Utc>) -> Result<(), StoreError> {
    let minute = this_minute(at);
    store
        .dead_letters
        .sample_queues(apps, minute, minute - KEEP)
        .await
}

/// Sample `app` now: after an admin change no run follows (a purge or a deleted dead
/// letter). A failure is logged, never the caller's.
pub(crate) async fn sample_now(store: &Store, app: &AppName) {
    if let Err(error) = sample(store, std::slice::from_ref(app), Utc::now()).await {
        tracing::warn!(error = ?error, "the app's queue could not be sampled");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use shared::bus::{LocalBus, NotificationBus};

    use super::*;

    #[test]
    fn a_notice_names_its_app_and_the_missed_marker_none() {
        let id = shared::InvocationId::new();
        assert_eq!(
            notice_app(&format!("shop {id} {id}")),
            Some(AppName::parse("shop").expect("a name"))
        );
        assert_eq!(notice_app(INVOCATIONS_MISSED), None);
        assert_eq!(notice_app("Bad/Name x"), None);
        assert_eq!(notice_app(""), None);
    }

    #[test]
    fn the_next_sample_is_due_at_most_a_minute_away() {
        let (minute, ends) = minute_now();
        let wait = ends - Instant::now();
        assert!(
            wait <= Duration::from_secs(60) + PAST_THE_MINUTE,
            "{wait:?}"
        );
        assert_eq!(this_minute(minute), minute);
    }

    /// What a test sampler took: (apps, the minute's number), in order.
    type Taken = Arc<Mutex<Vec<(Vec<String>, i64)>>>;
    /// The test's clock: which minute it is, and how long after a spell's first notice
    /// that minute ends.
    type Clock = Arc<Mutex<(i64, Duration)>>;

    fn sampler(
        bus: &LocalBus,
        shutdown: &CancellationToken,
        settle: Duration,
        clock: &Clock,
    ) -> (Taken, JoinHandle<()>) {
        let clock = Arc::clone(clock);
        let minute = move || {
            let (n, ends_in) = *clock.lock().unwrap();
            (
                DateTime::UNIX_EPOCH + TimeDelta::minutes(n),
                Instant::now() + ends_in,
            )
        };
        let taken = Taken::default();
        let record = Arc::clone(&taken);
        let take = move |apps: Vec<AppName>, of: DateTime<Utc>| {
            let apps = apps.iter().map(ToString::to_string).collect();
            record.lock().unwrap().push((apps, of.timestamp() / 60));
            async {}
        };
        let heard = bus.subscribe();
        let task = tokio::spawn(watch(heard, shutdown.clone(), settle, minute, take));
        (taken, task)
    }

    async fn ran(bus: &LocalBus, app: &str) {
        let notice = format!("{app} {}", shared::InvocationId::new());
        bus.notify(Channel::Invocations, &notice).await.unwrap();
    }

    /// Wait (bounded, for a loaded machine) until `taken` has `n` samples.
    async fn samples(taken: &Taken, n: usize) -> Vec<(Vec<String>, i64)> {
        for _ in 0..1000 {
            if taken.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        taken.lock().unwrap().clone()
    }

    // Current-thread runtimes: a sampler hears the notices sent back to back when the test
    // yields, so what is counted does not depend on how fast the machine is.

    #[tokio::test]
    async fn runs_are_sampled_once_they_settle_and_an_idle_sampler_never_wakes() {
        let bus = LocalBus::default();
        let shutdown = CancellationToken::new();
        // The minute ends in an hour: only the runs settling can take the sample.
        let clock = Clock::new(Mutex::new((7, Duration::from_secs(3600))));
        let (taken, task) = sampler(&bus, &shutdown, Duration::from_millis(100), &clock);
        tokio::task::yield_now().await;
        for _ in 0..100 {
            ran(&bus, "shop").await;
        }
        ran(&bus, "blog").await;
        ran(&bus, "Not/An/App").await;
        let both = vec!["blog".to_owned(), "shop".to_owned()];
        assert_eq!(samples(&taken, 1).await, [(both, 7)]);
        // Idle: no second sample, however long.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(taken.lock().unwrap().len(), 1);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn runs_that_outlast_their_minute_are_sampled_at_its_end_as_its_sample() {
        let bus = LocalBus::default();
        let shutdown = CancellationToken::new();
        // Runs never settle (an hour), so each minute's end takes the sample.
        let clock = Clock::new(Mutex::new((3, Duration::from_millis(50))));
        let (taken, task) = sampler(&bus, &shutdown, Duration::from_secs(3600), &clock);
        tokio::task::yield_now().await;
        ran(&bus, "shop").await;
        let shop = || vec!["shop".to_owned()];
        assert_eq!(samples(&taken, 1).await, [(shop(), 3)]);
        clock.lock().unwrap().0 = 4;
        ran(&bus, "shop").await;
        assert_eq!(samples(&taken, 2).await, [(shop(), 3), (shop(), 4)]);
        shutdown.cancel();
        task.await.unwrap();
    }
}
