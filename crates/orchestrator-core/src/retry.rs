//! What happens to an event whose run failed: retry later, or dead-letter it.
//!
//! Pure functions of their inputs (the attempt, the clock, a jitter drawn by the caller),
//! so they are tested without timers. What must stay true:
//! - an event is tried at most `max_attempts` times; the failure of the last attempt makes
//!   it a dead letter carrying that failure's text;
//! - the delay before a retry is "full jitter" exponential backoff: uniform in
//!   `[0, min(max, base * 2^(attempt-1))]`, so a burst of failures spreads out instead of
//!   retrying in lockstep, and never exceeds `max`.
use std::time::Duration;

use chrono::{DateTime, Utc};
use shared::Event;
use shared::store::EventOutcome;

/// The delay before retrying after failed attempt `attempt` (1-based): exponential in the
/// attempt, capped at `max`, scaled by `jitter` (clamped to `0..=1`, drawn uniformly by
/// the caller).
pub fn backoff(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(63);
    let factor = 1u64 << exponent;
    let ceiling = u32::try_from(factor)
        .ok()
        .and_then(|f| base.checked_mul(f))
        .map_or(max, |d| d.min(max));
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        1.0
    };
    ceiling.mul_f64(jitter)
}

/// How a failed attempt of `event` ends: `Retry` while attempts remain, `Dead` after the last.
pub(crate) fn after_failure(
    event: &Event,
    error: String,
    now: DateTime<Utc>,
    base: Duration,
    max: Duration,
    jitter: f64,
) -> EventOutcome {
    if event.attempt < event.max_attempts {
        let delay = backoff(event.attempt, base, max, jitter);
        let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        let at = now.checked_add_signed(delay).unwrap_or(now);
        EventOutcome::Retry { at, error }
    } else {
        EventOutcome::Dead { error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::{AppName, EventId, EventKind};

    const BASE: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(300);

    fn event(attempt: u32, max_attempts: u32) -> Event {
        Event {
            id: EventId::new(),
            app: AppName::parse("shop").unwrap(),
            kind: EventKind::Queue,
            script: None,
            trigger: None,
            source: Some("orders".into()),
            payload: serde_json::Value::Null,
            attempt,
            max_attempts,
            scheduled_at: Utc::now(),
            created_at: Utc::now(),
            trace: None,
        }
    }

    #[test]
    fn the_ceiling_doubles_with_each_attempt_at_full_jitter() {
        assert_eq!(backoff(1, BASE, MAX, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(2, BASE, MAX, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(3, BASE, MAX, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(5, BASE, MAX, 1.0), Duration::from_secs(16));
    }

    #[test]
    fn the_delay_never_exceeds_the_maximum_even_for_huge_attempts() {
        assert_eq!(backoff(9, BASE, MAX, 1.0), Duration::from_secs(256));
        assert_eq!(backoff(10, BASE, MAX, 1.0), MAX);
        assert_eq!(backoff(40, BASE, MAX, 1.0), MAX);
        assert_eq!(backoff(u32::MAX, BASE, MAX, 1.0), MAX);
    }

    #[test]
    fn jitter_scales_the_delay_between_zero_and_the_ceiling() {
        assert_eq!(backoff(3, BASE, MAX, 0.0), Duration::ZERO);
        assert_eq!(backoff(3, BASE, MAX, 0.5), Duration::from_secs(2));
        assert_eq!(backoff(3, BASE, MAX, 7.0), Duration::from_secs(4));
        assert_eq!(backoff(3, BASE, MAX, -1.0), Duration::ZERO);
        assert_eq!(backoff(3, BASE, MAX, f64::NAN), Duration::from_secs(4));
    }

    #[test]
    fn attempt_zero_is_treated_like_the_first() {
        assert_eq!(backoff(0, BASE, MAX, 1.0), BASE);
    }

    #[test]
    fn a_failure_before_the_last_attempt_is_retried_after_the_backoff() {
        let now = Utc::now();
        match after_failure(&event(2, 5), "boom".into(), now, BASE, MAX, 1.0) {
            EventOutcome::Retry { at, error } => {
                assert_eq!(error, "boom");
                assert_eq!(at, now + chrono::Duration::seconds(2));
            }
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn the_failure_of_the_last_attempt_is_a_dead_letter_with_its_error() {
        let outcome = after_failure(&event(5, 5), "last".into(), Utc::now(), BASE, MAX, 0.3);
        assert!(matches!(outcome, EventOutcome::Dead { error } if error == "last"));
        let single = after_failure(&event(1, 1), "once".into(), Utc::now(), BASE, MAX, 0.3);
        assert!(matches!(single, EventOutcome::Dead { .. }));
    }

    #[test]
    fn an_event_past_its_attempts_after_overload_retries_is_dead_on_failure() {
        let outcome = after_failure(&event(7, 5), "x".into(), Utc::now(), BASE, MAX, 0.3);
        assert!(matches!(outcome, EventOutcome::Dead { .. }));
    }
}
