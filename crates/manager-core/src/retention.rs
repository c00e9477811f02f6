//! Retention sweepers: dead letters older than their retention (30 days by default) and
//! invocation records older than theirs (7 days by default) are purged.
//!
//! What must stay true: a sweeper never ticks. It purges, then sleeps until the oldest
//! remaining row expires, or for one whole retention when there is none (a row created
//! meanwhile expires no earlier than that). Invocation records expire continuously on a
//! busy server, so their sweeper runs at most once an hour (a record lives at most an
//! hour past its retention) and deletes in bounded steps, so a large purge never holds the
//! database's write lock for long.
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use shared::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Purges expired dead letters until shutdown.
pub struct RetentionSweeper;

/// How long to wait after the store failed before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// The shortest sleep between two sweeps.
const MIN_WAIT: Duration = Duration::from_millis(100);

impl RetentionSweeper {
    /// The default retention of dead letters.
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

    /// Spawn the sweeper on the current runtime; the task ends when `shutdown` is cancelled.
    pub fn start(store: Store, retention: Duration, shutdown: CancellationToken) -> JoinHandle<()> {
        run_sweeper("dead-letter", retention, shutdown, move || {
            let store = store.clone();
            async move { sweep(&store, retention).await }
        })
    }
}

/// Purges expired invocation records until shutdown.
pub struct InvocationSweeper;

/// Records deleted per statement.
const PURGE_STEP: u32 = 5_000;
/// While records keep expiring, at most one sweep per this long.
const INVOCATION_SWEEP_EVERY: Duration = Duration::from_secs(60 * 60);

impl InvocationSweeper {
    /// The default retention of invocation records.
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

    /// Spawn the sweeper on the current runtime; the task ends when `shutdown` is cancelled.
    pub fn start(store: Store, retention: Duration, shutdown: CancellationToken) -> JoinHandle<()> {
        let every = INVOCATION_SWEEP_EVERY.min(retention);
        run_sweeper("invocation", retention, shutdown, move || {
            let store = store.clone();
            async move { sweep_invocations(&store, retention, every).await }
        })
    }
}

/// Sweep, sleep as long as the sweep says (or `RETRY_AFTER` when it failed), until
/// shutdown.
fn run_sweeper<F, Fut>(
    what: &'static str,
    retention: Duration,
    shutdown: CancellationToken,
    mut sweep: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Duration, shared::StoreError>> + Send,
{
    tokio::spawn(async move {
        loop {
            let wait = match sweep().await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "{what} retention sweep failed");
                    RETRY_AFTER.min(retention.max(Duration::from_millis(1)))
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
    })
}

/// Purge the records older than `retention` in bounded steps; return how long until the
/// next sweep: when the oldest remaining record expires, but not sooner than `every`.
async fn sweep_invocations(
    store: &Store,
    retention: Duration,
    every: Duration,
) -> Result<Duration, shared::StoreError> {
    let cutoff = cutoff(retention);
    let mut purged = 0;
    loop {
        let step = store.invocations.purge_before(cutoff, PURGE_STEP).await?;
        purged += step;
        if step < u64::from(PURGE_STEP) {
            break;
        }
        // Let the records being written meanwhile take the write lock between steps.
        tokio::task::yield_now().await;
    }
    if purged > 0 {
        tracing::info!(purged, "expired invocation records purged");
    }
    let oldest = store.invocations.oldest().await?;
    Ok(until_next_sweep(oldest, retention, every))
}

/// Everything made before this has expired.
fn cutoff(retention: Duration) -> DateTime<Utc> {
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    Utc::now()
        .checked_sub_signed(retention)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A millisecond past the moment the oldest remaining row expires (so that sweep's cutoff
/// includes it), never sooner than `at_least` (so a row that will not go away, e.g. under
/// clock skew between database and server, cannot spin the loop); one whole retention
/// when nothing is left.
fn until_next_sweep(
    oldest: Option<DateTime<Utc>>,
    retention: Duration,
    at_least: Duration,
) -> Duration {
    let Some(oldest) = oldest else {
        return retention;
    };
    let expires = chrono::Duration::from_std(retention)
        .ok()
        .and_then(|r| oldest.checked_add_signed(r))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    (expires - Utc::now())
        .to_std()
        .unwrap_or(Duration::ZERO)
        .max(at_least)
        + Duration::from_millis(1)
}

/// Purge what has expired; return how long until the next dead letter expires.
async fn sweep(store: &Store, retention: Duration) -> Result<Duration, shared::StoreError> {
    let purged = store.dead_letters.purge_before(cutoff(retention)).await?;
    if purged > 0 {
        tracing::info!(purged, "expired dead letters purged");
    }
    let oldest = store.dead_letters.oldest().await?;
    Ok(until_next_sweep(oldest, retention, MIN_WAIT))
}
