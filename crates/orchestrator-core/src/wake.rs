//! Why an idle dispatcher wakes up. There is no polling tick: it sleeps until one of
//! - the outbox says rows were inserted (`OutboxRepository::inserted`: at once on this
//!   node, and through PostgreSQL `LISTEN/NOTIFY` from other nodes);
//! - this node committed a batch (a retry made a row due earlier than the time it was
//!   sleeping to, or a lease it held was released);
//! - the next due time the outbox reported (a delayed send, a retry, an expiring lease);
//! - shutdown.
//!
//! What must stay true: an idle node with an empty outbox sleeps on futures only, and
//! uses no CPU. A due time that is already past (the clock of the database and ours may
//! disagree by a little) is slept for at least `MIN_IDLE`, so such a row can never make
//! the loop spin.
use std::time::Duration;

use chrono::{DateTime, Utc};
use shared::store::OutboxRepository;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The shortest sleep until a due time, whatever the clocks say.
pub(crate) const MIN_IDLE: Duration = Duration::from_millis(5);

/// What ended an idle wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    Inserted,
    Committed,
    Due,
    Shutdown,
}

/// The instant to sleep until for a row due at `next_due` (`None`: no row, sleep until
/// something else wakes us).
pub(crate) fn deadline(
    next_due: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    clock: Instant,
) -> Option<Instant> {
    let due = next_due?;
    let wait = (due - now).to_std().unwrap_or(Duration::ZERO).max(MIN_IDLE);
    Some(clock + wait)
}

/// Sleeps until `at`, or forever without a deadline.
async fn sleep_until_or_forever(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits for the first reason to look at the outbox again.
pub(crate) async fn idle(
    outbox: &dyn OutboxRepository,
    committed: &Notify,
    next_due: Option<DateTime<Utc>>,
    shutdown: &CancellationToken,
) -> Wake {
    let at = deadline(next_due, Utc::now(), Instant::now());
    tokio::select! {
        () = shutdown.cancelled() => Wake::Shutdown,
        () = outbox.inserted() => Wake::Inserted,
        () = committed.notified() => Wake::Committed,
        () = sleep_until_or_forever(at) => Wake::Due,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_due_row_means_no_deadline() {
        assert_eq!(deadline(None, Utc::now(), Instant::now()), None);
    }

    #[test]
    fn a_future_row_is_slept_for_until_it_is_due() {
        let now = Utc::now();
        let clock = Instant::now();
        let at = deadline(Some(now + chrono::Duration::milliseconds(300)), now, clock);
        assert_eq!(at, Some(clock + Duration::from_millis(300)));
    }

    #[test]
    fn a_row_due_in_the_past_still_gets_the_minimum_sleep() {
        let now = Utc::now();
        let clock = Instant::now();
        let at = deadline(Some(now - chrono::Duration::seconds(10)), now, clock);
        assert_eq!(at, Some(clock + MIN_IDLE));
    }
}
