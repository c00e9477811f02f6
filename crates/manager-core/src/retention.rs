//! The dead-letter retention sweeper: dead letters older than the retention (30 days by
//! default) are purged.
//!
//! What must stay true: the sweeper never ticks. It purges, then sleeps until the oldest
//! remaining dead letter expires, or for one whole retention when there is none (a dead
//! letter created meanwhile expires no earlier than that).
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
        tokio::spawn(async move {
            loop {
                let wait = match sweep(&store, retention).await {
                    Ok(wait) => wait,
                    Err(e) => {
                        tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "dead-letter retention sweep failed");
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
}

/// Purge what has expired; return how long until the next dead letter expires.
async fn sweep(store: &Store, retention: Duration) -> Result<Duration, shared::StoreError> {
    let retention_chrono = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let now = Utc::now();
    let cutoff = now
        .checked_sub_signed(retention_chrono)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let purged = store.dead_letters.purge_before(cutoff).await?;
    if purged > 0 {
        tracing::info!(purged, "expired dead letters purged");
    }
    let wait = match store.dead_letters.oldest().await? {
        Some(oldest) => {
            let expires = oldest
                .checked_add_signed(retention_chrono)
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            // A millisecond past the expiry, so the next sweep's cutoff includes it.
            // and never less than `MIN_WAIT`, so a dead letter that will not go away (a
            // clock skew between database and server) cannot spin the loop.
            (expires - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .max(MIN_WAIT)
                + Duration::from_millis(1)
        }
        None => retention,
    };
    Ok(wait)
}
