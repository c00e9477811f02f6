//! When a cron schedule fires: pure functions of a schedule, a time zone and `now`
//! (`validate`, `next_fire`, `due_slot`), so every rule here is unit-tested without a clock.
//!
//! What must stay true:
//! - Schedules are croner patterns of 5 fields (minute first) or 6 (second first), read in
//!   an IANA time zone as a list of wall-clock slots. Croner matches the pattern on a clock
//!   without daylight saving; this module alone maps a wall-clock slot to an instant.
//! - Each wall-clock slot fires exactly once. A slot that does not exist (the hour a
//!   spring-forward day skips) fires at the first instant after the gap; slots that land
//!   on the same instant that way fire once, together. A slot that exists twice (the hour
//!   a fall-back day repeats) fires at its first occurrence only.
//! - A schedule with no slot in the next `HORIZON_YEARS` years is refused (`validate`).
//! - After downtime a trigger fires ONCE, for its latest missed slot, never once per
//!   missed slot (`due_slot`).
use std::str::FromStr;

use chrono::{DateTime, Datelike, LocalResult, NaiveDateTime, SubsecRound, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Why a schedule or a time zone was refused; the text is shown to the user as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("invalid cron schedule '{schedule}': {reason}")]
    Schedule { schedule: String, reason: String },
    #[error("unknown time zone '{0}'")]
    TimeZone(String),
    #[error("cron schedule '{0}' never fires: it has no slot in the next {HORIZON_YEARS} years")]
    NeverFires(String),
}

/// How far ahead `validate` looks for a slot (a 29 February schedule fires at least every
/// eight years).
pub const HORIZON_YEARS: i64 = 10;

/// The longest schedule or zone name echoed back in an error.
const ECHO_MAX: usize = 100;

/// The most slots one search steps over: only the slots of a repeated hour are stepped
/// over (an every-second schedule has 3600 of them), so this bound is never reached by a
/// real zone; it keeps a search finite whatever the zone data says.
const MAX_STEPS: u32 = 4 * 3600;

fn echo(raw: &str) -> String {
    raw.chars().take(ECHO_MAX).collect()
}

/// A parsed schedule in its time zone.
pub struct Schedule {
    /// The pattern with its seconds field (`0` added to a 5-field one), so that a year
    /// field can be appended for a bounded search.
    six_fields: String,
    tz: Tz,
}

/// Parse and validate a schedule and its time zone (what the triggers API checks): it must
/// parse and have a slot within `HORIZON_YEARS` after `now`.
///
/// # Errors
/// A pattern that is not 5 or 6 valid fields, a name that is not an IANA time zone, or a
/// schedule that never fires (`0 0 30 2 *`).
pub fn validate(schedule: &str, tz: &str, now: DateTime<Utc>) -> Result<(), CronError> {
    let parsed = Schedule::parse(schedule, tz)?;
    let horizon = now + chrono::Duration::days(HORIZON_YEARS * 366);
    match parsed.next_after(now) {
        Some(next) if next <= horizon => Ok(()),
        _ => Err(CronError::NeverFires(echo(schedule))),
    }
}

/// The first time `schedule` fires in `tz` strictly after `after`; `Ok(None)` when it
/// never fires again (for example `0 0 30 2 *`).
///
/// # Errors
/// An invalid schedule or time zone.
pub fn next_fire(
    schedule: &str,
    tz: &str,
    after: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, CronError> {
    Ok(Schedule::parse(schedule, tz)?.next_after(after))
}

/// The slot to fire now: the LATEST slot at or before `now` that is after `last_fired`
/// (or after `created_at` when the trigger never fired). `None` when nothing is due.
/// A schedule that missed many slots (downtime) yields only the latest one.
///
/// # Errors
/// An invalid schedule or time zone.
pub fn due_slot(
    schedule: &str,
    tz: &str,
    last_fired: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, CronError> {
    let parsed = Schedule::parse(schedule, tz)?;
    Ok(parsed.due(last_fired.unwrap_or(created_at), now))
}

impl Schedule {
    /// # Errors
    /// A pattern that is not 5 or 6 valid fields, or a name that is not an IANA time zone.
    pub fn parse(schedule: &str, tz: &str) -> Result<Schedule, CronError> {
        let bad = |reason: String| CronError::Schedule {
            schedule: echo(schedule),
            reason,
        };
        let fields = schedule.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(bad(format!(
                "expected 5 fields (minute hour day month weekday) or 6 (second first), got {fields}"
            )));
        }
        CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(schedule)
            .map_err(|e| bad(e.to_string()))?;
        let tz = Tz::from_str(tz).map_err(|_| CronError::TimeZone(echo(tz)))?;
        let six_fields = if fields == 5 {
            format!("0 {}", schedule.trim())
        } else {
            schedule.trim().to_owned()
        };
        Ok(Schedule { six_fields, tz })
    }

    /// The pattern restricted to `years`. Croner gives up on a pattern that never matches
    /// only at year 5000, scanning day by day: restricted, the days of a dozen years are
    /// scanned at most, and the years past them one step each.
    fn within(&self, years: std::ops::RangeInclusive<i32>) -> Option<Cron> {
        let pattern = format!("{} {}-{}", self.six_fields, years.start(), years.end());
        CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Required)
            .build()
            .parse(&pattern)
            .ok()
    }

    /// The years a forward search from `wall` may look at (a slot later than that counts
    /// as none: `validate` refuses such schedules).
    fn forward_from(&self, wall: NaiveDateTime) -> Option<Cron> {
        let horizon = i32::try_from(HORIZON_YEARS).unwrap_or(10);
        self.within(wall.year() - 1..=wall.year() + horizon + 1)
    }

    /// The first slot strictly after `after`; `None` when the pattern never matches again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let after = after.trunc_subsecs(0);
        let mut cursor = self.wall_clock(after);
        let cron = self.forward_from(cursor)?;
        // Only in the second pass of a repeated hour does a later wall-clock slot map to an
        // earlier instant (its first pass); those are stepped over.
        for _ in 0..MAX_STEPS {
            let slot = wall_slot_after(&cron, cursor)?;
            let at = self.instant(slot)?;
            if at > after {
                return Some(at);
            }
            cursor = slot;
        }
        None
    }

    /// The latest slot at or before `at`, if one is found.
    pub fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let at = at.trunc_subsecs(0);
        let mut cursor = self.wall_clock(at);
        // In the second pass of a repeated hour, the wall-clock slots up to the end of the
        // repeated range already fired (at their first pass, before `at`): search from the
        // wall clock `at` would show without the fall-back.
        if let LocalResult::Ambiguous(earlier, later) = self.tz.from_local_datetime(&cursor)
            && later.to_utc() == at
        {
            cursor += later.to_utc() - earlier.to_utc();
        }
        let horizon = i32::try_from(HORIZON_YEARS).unwrap_or(10);
        let cron = self.within(cursor.year() - horizon - 1..=cursor.year() + 1)?;
        let mut inclusive = true;
        for _ in 0..MAX_STEPS {
            let slot = cron
                .find_previous_occurrence(&cursor.and_utc(), inclusive)
                .ok()?
                .naive_utc();
            let fires = self.instant(slot)?;
            if fires <= at {
                return Some(fires);
            }
            cursor = slot;
            inclusive = false;
        }
        None
    }

    /// The slot to fire at `now` for a trigger last fired (or created) at `since`: the
    /// latest slot in `(since, now]`, or `None`.
    pub fn due(&self, since: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let first = self.next_after(since)?;
        if first > now {
            return None;
        }
        match self.next_after(first) {
            Some(second) if second <= now => {
                // Missed more than one slot: the backward search skips them all at once.
                Some(
                    self.latest_at_or_before(now)
                        .map_or(second, |l| l.max(second)),
                )
            }
            _ => Some(first),
        }
    }

    /// The wall clock in the schedule's zone at `at`.
    fn wall_clock(&self, at: DateTime<Utc>) -> NaiveDateTime {
        at.with_timezone(&self.tz).naive_local()
    }

    /// The instant a wall-clock slot fires at: itself, its first occurrence when the clock
    /// shows it twice, or the end of the gap when the clock skips it.
    fn instant(&self, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => Some(t.to_utc()),
            LocalResult::Ambiguous(earlier, _) => Some(earlier.to_utc()),
            LocalResult::None => Some(self.end_of_gap(wall)),
        }
    }

    /// The first instant whose wall clock is past `wall`, a time inside a gap: the moment
    /// the clock jumps. Offsets are within ±26 hours of UTC, so the jump lies in that
    /// window around `wall` read as UTC, and the wall clock only rises across it.
    fn end_of_gap(&self, wall: NaiveDateTime) -> DateTime<Utc> {
        let window = 26 * 3600;
        let mut lo = wall.and_utc().timestamp() - window; // its wall clock is before `wall`
        let mut hi = wall.and_utc().timestamp() + window; // its wall clock is after `wall`
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let at = DateTime::from_timestamp(mid, 0).unwrap_or_default();
            if self.wall_clock(at) > wall {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        DateTime::from_timestamp(hi, 0).unwrap_or_default()
    }
}

/// The next wall-clock time after `wall` that `cron` names, on a clock without daylight
/// saving (croner searches a UTC clock standing in for the wall clock).
fn wall_slot_after(cron: &Cron, wall: NaiveDateTime) -> Option<NaiveDateTime> {
    cron.find_next_occurrence(&wall.and_utc(), false)
        .ok()
        .map(|t| t.naive_utc())
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
