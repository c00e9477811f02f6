//! When a pooled PostgreSQL connection is pinged before it is handed out.
//!
//! sqlx pings every idle connection on acquire by default (`test_before_acquire`): one
//! round trip before every pooled statement or transaction, under load too, where the
//! connection came back a few milliseconds ago. The ping is there for a connection that
//! broke while it was idle (a restarted or failed-over server, a terminated session), so
//! the PostgreSQL pool pings only:
//! - a connection idle for `PING_IDLE_AFTER` or longer (a quiet server pings as before);
//! - a connection that went idle before the last lost connection this process saw (any
//!   statement that met one, mapped through `error::db`): after one connection is found
//!   broken, every other connection that was idle then is pinged before its next use, so
//!   a retry gets a working connection (or a new one), not the next broken one.
//!
//! A connection that breaks within a second of its last use and is then used again fails
//! that use, as one that breaks between the ping and the statement always could; the
//! event commit tries again once when that happens (`outbox`), on a pinged connection.
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A connection idle this long is pinged before it is handed out.
pub(crate) const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The process's reference instant for `LOST_AT`.
static BASE: OnceLock<Instant> = OnceLock::new();
/// When a connection was last found lost: microseconds after `BASE`, plus one (0: never).
static LOST_AT: AtomicU64 = AtomicU64::new(0);

fn base() -> Instant {
    *BASE.get_or_init(Instant::now)
}

/// A statement met a lost connection (`error::lost_connection`): connections idle since
/// before now are pinged before their next use.
pub(crate) fn connection_lost() {
    let since = base().elapsed().as_micros();
    let stamp = u64::try_from(since).unwrap_or(u64::MAX - 1) + 1;
    LOST_AT.fetch_max(stamp, Ordering::Relaxed);
}

/// When a connection was last found lost, if ever.
fn lost_at() -> Option<Instant> {
    match LOST_AT.load(Ordering::Relaxed) {
        0 => None,
        stamp => Some(base() + Duration::from_micros(stamp - 1)),
    }
}

/// Whether a connection idle for `idle_for` is pinged before it is handed out.
pub(crate) fn needs_ping(idle_for: Duration) -> bool {
    stale(Instant::now(), idle_for, lost_at())
}

fn stale(now: Instant, idle_for: Duration, lost: Option<Instant>) -> bool {
    if idle_for >= PING_IDLE_AFTER {
        return true;
    }
    match (lost, now.checked_sub(idle_for)) {
        (Some(lost), Some(idle_since)) => idle_since <= lost,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_pinged_after_a_second_idle_or_when_idle_since_a_loss() {
        let now = Instant::now() + Duration::from_secs(10);
        let ms = Duration::from_millis;
        assert!(!stale(now, ms(5), None), "busy, nothing lost: no ping");
        assert!(stale(now, PING_IDLE_AFTER, None), "idle a second");
        assert!(stale(now, ms(5_000), Some(now - ms(9_000))));
        // A loss 20 ms ago: a connection idle for 30 ms was idle then, one idle for 10 ms
        // came back after it (it worked after the loss).
        let lost = Some(now - ms(20));
        assert!(stale(now, ms(30), lost));
        assert!(stale(now, ms(20), lost));
        assert!(!stale(now, ms(10), lost));
    }

    #[test]
    fn a_lost_connection_is_remembered_for_the_connections_idle_then() {
        connection_lost();
        let after = Instant::now();
        let lost = lost_at().expect("stamped");
        assert!(lost <= after);
        // Idle since before the stamp: pinged.
        assert!(needs_ping(
            after.elapsed() + Duration::from_millis(1) + (after - lost)
        ));
    }
}
