//! The queue history: each app's queue depth (its outbox rows) and dead letters, one
//! sample a minute while it is active, the source of the dashboard's queue charts
//! (`GET /api/v1/apps/{app}/queue/history`).
//!
//! What must stay true:
//! - it never ticks: `QueueSampler` waits on the notification bus. An invocation notice
//!   (records an app's runs committed, on any node) marks the app active and, when no
//!   sample is set yet, sets one for the start of the next minute; then it counts every
//!   active app's rows and stores them as the samples of the minute they ran in (so a
//!   minute's sample is its value at the minute's end). An idle server never wakes it;
//!   after the last run, it wakes once more, at the next minute's start;
//! - nothing on the event path waits for it or pays for it: it only hears the notices the
//!   invocation relay sends anyway;
//! - the database counts, so a sample is the app's whichever nodes ran its events; two
//!   nodes sampling one minute write the same row (the later replaces the earlier);
//! - a minute without a sample had no run: its value is the last sample's (the reader
//!   carries it forward). Admin changes that no run follows (a purge, a deleted dead
//!   letter) sample at once (`sample_now`);
//! - writing an app's samples deletes its samples older than `KEEP`.
use std::collections::BTreeSet;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use shared::bus::{Channel, Heard, INVOCATIONS_MISSED};
use shared::{AppName, Store, StoreError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long samples are kept.
pub const KEEP: TimeDelta = TimeDelta::hours(24);
/// Past the minute's start, so the clock the sleep ran on and the wall clock agree on
/// which minute it is.
const PAST_THE_MINUTE: std::time::Duration = std::time::Duration::from_millis(50);

/// Samples active apps' queues after their runs, until shutdown.
pub struct QueueSampler;

impl QueueSampler {
    /// Spawn the sampler on the current runtime; the task ends when `shutdown` is
    /// cancelled or the bus closes.
    pub fn start(store: Store, shutdown: CancellationToken) -> JoinHandle<()> {
        let bus = store.bus.subscribe();
        tokio::spawn(run(store, bus, shutdown, next_minute))
    }

    /// [`QueueSampler::start`] with a sample due `after` the first notice instead of at
    /// the next minute's start: for tests, which should not wait for a minute to turn.
    #[doc(hidden)]
    pub fn start_paced(
        store: Store,
        shutdown: CancellationToken,
        after: std::time::Duration,
    ) -> JoinHandle<()> {
        let bus = store.bus.subscribe();
        let due = move || tokio::time::Instant::now() + after;
        tokio::spawn(run(store, bus, shutdown, due))
    }
}

async fn run(
    store: Store,
    mut bus: shared::bus::BusReceiver,
    shutdown: CancellationToken,
    next_due: impl Fn() -> tokio::time::Instant,
) {
    let mut active: BTreeSet<AppName> = BTreeSet::new();
    // When the next sample is due, and the minute it is the sample of.
    let mut due: Option<(tokio::time::Instant, DateTime<Utc>)> = None;
    loop {
        let sample_due = async move {
            match due {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = sample_due => {
                let Some((_, minute)) = due.take() else { continue };
                let apps: Vec<AppName> = std::mem::take(&mut active).into_iter().collect();
                if let Err(error) = sample(&store, &apps, minute).await {
                    tracing::warn!(error = ?error, "the apps' queues could not be sampled");
                }
            }
            heard = bus.recv() => match heard {
                None => return,
                Some(Heard::Notice { channel: Channel::Invocations, payload, .. }) => {
                    if let Some(app) = notice_app(&payload) {
                        active.insert(app);
                        due.get_or_insert_with(|| (next_due(), this_minute(Utc::now())));
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

/// The start of the next minute (wall clock), on the runtime's clock.
fn next_minute() -> tokio::time::Instant {
    let now = Utc::now();
    let next = this_minute(now) + TimeDelta::minutes(1);
    let wait = (next - now).to_std().unwrap_or_default();
    tokio::time::Instant::now() + wait + PAST_THE_MINUTE
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
        let wait = next_minute() - tokio::time::Instant::now();
        assert!(
            wait <= std::time::Duration::from_secs(60) + PAST_THE_MINUTE,
            "{wait:?}"
        );
    }
}
