//! Cron triggers: when a schedule fires (`next_fire`, `due_slot`) and the scheduler that
//! fires them (`CronScheduler`).
//!
//! What must stay true:
//! - Schedules are croner patterns of 5 fields (minute first) or 6 (second first), read in
//!   an IANA time zone. A wall-clock time that does not exist (a spring-forward gap) fires
//!   at the first instant after the gap; one that exists twice (fall-back) fires once.
//! - After downtime a trigger fires ONCE, for its latest missed slot, never once per
//!   missed slot (`due_slot`).
//! - A slot is fired through `TriggerRepository::fire_cron`, which moves `last_fired_at`
//!   and inserts the outbox event in one guarded transaction: two schedulers on one
//!   database never both fire a slot.
//! - The scheduler never ticks: it sleeps until the earliest next fire, a catalog change
//!   (Triggers or App) or shutdown.
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use shared::store::{Trigger, TriggerSpec};
use shared::{CatalogChange, CatalogListener, Store};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Why a schedule or a time zone was refused; the text is shown to the user as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("invalid cron schedule '{schedule}': {reason}")]
    Schedule { schedule: String, reason: String },
    #[error("unknown time zone '{0}'")]
    TimeZone(String),
}

/// The longest schedule or zone name echoed back in an error.
const ECHO_MAX: usize = 100;

fn echo(raw: &str) -> String {
    raw.chars().take(ECHO_MAX).collect()
}

/// A parsed schedule in its time zone.
struct Schedule {
    cron: Cron,
    tz: Tz,
}

/// Parse and validate a schedule and its time zone (what the triggers API checks).
///
/// # Errors
/// A pattern that is not 5 or 6 valid fields, or a name that is not an IANA time zone.
pub fn validate(schedule: &str, tz: &str) -> Result<(), CronError> {
    parse(schedule, tz).map(drop)
}

fn parse(schedule: &str, tz: &str) -> Result<Schedule, CronError> {
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
    let cron = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(schedule)
        .map_err(|e| bad(e.to_string()))?;
    let tz = Tz::from_str(tz).map_err(|_| CronError::TimeZone(echo(tz)))?;
    Ok(Schedule { cron, tz })
}

impl Schedule {
    /// The first slot strictly after `after`; `None` when the pattern never matches again.
    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.trunc_subsecs(0).with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The last slot at or before `at`, if one is found.
    fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = at.trunc_subsecs(0).with_timezone(&self.tz);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
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
    Ok(parse(schedule, tz)?.next_after(after))
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
    let parsed = parse(schedule, tz)?;
    Ok(slot_due(&parsed, last_fired.unwrap_or(created_at), now))
}

fn slot_due(
    schedule: &Schedule,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let first = schedule.next_after(since)?;
    if first > now {
        return None;
    }
    // The backward search is the cheap way to skip every missed slot; it can only improve
    // on `first` when it lands between `first` and `now`.
    match schedule.latest_at_or_before(now) {
        Some(latest) if latest > first && latest <= now => Some(latest),
        _ => Some(first),
    }
}

/// Fires cron triggers on time. Start it with `start`; subscribe it to the catalog so a
/// trigger created or deleted reaches it at once.
pub struct CronScheduler {
    wake: Arc<Notify>,
    done: CancellationToken,
}

/// How long to wait after the store failed before trying again (doubles up to the cap).
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(60);

impl CronScheduler {
    /// Spawn the scheduler on the current runtime; it runs until `shutdown` is cancelled.
    pub fn start(store: Store, shutdown: CancellationToken) -> Arc<CronScheduler> {
        let scheduler = Arc::new(CronScheduler {
            wake: Arc::new(Notify::new()),
            done: CancellationToken::new(),
        });
        let wake = scheduler.wake.clone();
        let done = scheduler.done.clone();
        tokio::spawn(async move {
            run(store, wake, shutdown).await;
            done.cancel();
        });
        scheduler
    }

    /// Resolves once the scheduler's task has ended (after shutdown).
    pub async fn stopped(&self) {
        self.done.cancelled().await;
    }

    /// Reload the triggers now (what a catalog change does).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

#[async_trait]
impl CatalogListener for CronScheduler {
    async fn catalog_changed(&self, change: &CatalogChange) {
        match change {
            CatalogChange::Triggers { .. } | CatalogChange::App { .. } => self.wake(),
            CatalogChange::Script { .. } => {}
        }
    }
}

async fn run(store: Store, wake: Arc<Notify>, shutdown: CancellationToken) {
    let mut retry = RETRY_FIRST;
    loop {
        let Fired { next, error } = fire_due(&store).await;
        let next = match error {
            None => {
                retry = RETRY_FIRST;
                next
            }
            Some(e) => {
                tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "cron scheduler could not read or fire triggers");
                let again = Utc::now() + retry;
                retry = (retry * 2).min(RETRY_CAP);
                Some(next.map_or(again, |n| n.min(again)))
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = wake.notified() => {}
            () = sleep_until_or_forever(next) => {}
        }
    }
}

/// What one pass over the cron triggers found.
struct Fired {
    /// When the next slot of any trigger is due.
    next: Option<DateTime<Utc>>,
    /// The first store failure, if any; the pass tried every trigger anyway.
    error: Option<shared::StoreError>,
}

/// Sleep until the wall-clock time `at`, or forever when there is none.
async fn sleep_until_or_forever(at: Option<DateTime<Utc>>) {
    match at {
        Some(at) => {
            let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::time::sleep_until(tokio::time::Instant::now() + wait).await;
        }
        None => std::future::pending().await,
    }
}

/// Fire every cron trigger that is due and say when the next one becomes due. A trigger
/// whose fire failed does not hold up the others; its slot is still due on the retry.
async fn fire_due(store: &Store) -> Fired {
    let triggers = match store.triggers.list_all().await {
        Ok(triggers) => triggers,
        Err(e) => {
            return Fired {
                next: None,
                error: Some(e),
            };
        }
    };
    let now = Utc::now();
    let mut fired = Fired {
        next: None,
        error: None,
    };
    for trigger in &triggers {
        let Some(schedule) = cron_schedule(trigger) else {
            continue;
        };
        let since = trigger.last_fired_at.unwrap_or(trigger.created_at);
        if let Some(slot) = slot_due(&schedule, since, now) {
            match store.triggers.fire_cron(trigger.id, slot).await {
                Ok(moved) => {
                    tracing::debug!(trigger = %trigger.id, app = %trigger.app, %slot, fired = moved, "cron slot due");
                }
                Err(e) => {
                    fired.error.get_or_insert(e);
                }
            }
        }
        if let Some(next) = schedule.next_after(now) {
            fired.next = Some(fired.next.map_or(next, |n| n.min(next)));
        }
    }
    fired
}

/// The parsed schedule of a cron trigger; `None` for other kinds. A schedule stored before
/// it could be validated is logged and skipped, never fired.
fn cron_schedule(trigger: &Trigger) -> Option<Schedule> {
    let TriggerSpec::Cron { schedule, timezone } = &trigger.spec else {
        return None;
    };
    match parse(schedule, timezone) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            tracing::warn!(trigger = %trigger.id, app = %trigger.app, error = %e, "cron trigger skipped");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .expect("a valid time")
    }

    #[test]
    fn five_fields_start_at_the_minute_and_six_at_the_second() {
        let at = utc(2026, 1, 1, 12, 0, 10);
        assert_eq!(
            next_fire("* * * * *", "UTC", at),
            Ok(Some(utc(2026, 1, 1, 12, 1, 0)))
        );
        assert_eq!(
            next_fire("* * * * * *", "UTC", at),
            Ok(Some(utc(2026, 1, 1, 12, 0, 11)))
        );
        // Second 30 of minute 0 of every hour.
        assert_eq!(
            next_fire("30 0 * * * *", "UTC", at),
            Ok(Some(utc(2026, 1, 1, 12, 0, 30)))
        );
        assert_eq!(
            next_fire("30 0 * * * *", "UTC", utc(2026, 1, 1, 12, 0, 40)),
            Ok(Some(utc(2026, 1, 1, 13, 0, 30)))
        );
    }

    #[test]
    fn the_time_zone_moves_the_slot() {
        let at = utc(2026, 1, 1, 0, 0, 0);
        // 09:00 in Berlin in winter is 08:00 UTC.
        assert_eq!(
            next_fire("0 9 * * *", "Europe/Berlin", at),
            Ok(Some(utc(2026, 1, 1, 8, 0, 0)))
        );
    }

    #[test]
    fn bad_schedules_and_zones_are_named_in_the_error() {
        let e = validate("x", "UTC").unwrap_err();
        assert!(
            e.to_string().starts_with("invalid cron schedule 'x': "),
            "{e}"
        );
        let e = validate("61 * * * *", "UTC").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid cron schedule '61 * * * *'"),
            "{e}"
        );
        let e = validate("0 0 0 1 1 * 2030", "UTC").unwrap_err();
        assert!(e.to_string().contains("got 7"), "{e}");
        assert_eq!(
            validate("* * * * *", "Mars/X").unwrap_err().to_string(),
            "unknown time zone 'Mars/X'"
        );
        assert!(validate("0 0 * * MON-FRI", "America/New_York").is_ok());
    }

    #[test]
    fn a_slot_in_the_spring_forward_gap_fires_right_after_the_gap() {
        // 2026-03-29: Berlin jumps from 02:00 to 03:00 (01:00 UTC); 02:30 does not exist.
        let before = utc(2026, 3, 29, 0, 0, 0);
        let fire = next_fire("30 2 * * *", "Europe/Berlin", before)
            .expect("valid")
            .expect("fires");
        assert_eq!(fire, utc(2026, 3, 29, 1, 0, 0), "03:00 local = 01:00 UTC");
        // And the next day at 02:30 CEST = 00:30 UTC.
        assert_eq!(
            next_fire("30 2 * * *", "Europe/Berlin", fire),
            Ok(Some(utc(2026, 3, 30, 0, 30, 0)))
        );
        // Catching up after the gap finds that same slot once.
        assert_eq!(
            due_slot(
                "30 2 * * *",
                "Europe/Berlin",
                None,
                before,
                utc(2026, 3, 29, 1, 20, 0)
            ),
            Ok(Some(utc(2026, 3, 29, 1, 0, 0)))
        );
    }

    #[test]
    fn a_slot_in_the_fall_back_overlap_fires_once() {
        // 2026-10-25: Berlin goes from 03:00 CEST back to 02:00 CET; 02:30 exists twice
        // (00:30 UTC and 01:30 UTC). A fixed-time job fires at the first only.
        let before = utc(2026, 10, 24, 22, 0, 0);
        let first = next_fire("30 2 * * *", "Europe/Berlin", before)
            .expect("valid")
            .expect("fires");
        assert_eq!(first, utc(2026, 10, 25, 0, 30, 0));
        let second = next_fire("30 2 * * *", "Europe/Berlin", first)
            .expect("valid")
            .expect("fires");
        assert_eq!(
            second,
            utc(2026, 10, 26, 1, 30, 0),
            "the next day, not 01:30 UTC"
        );
    }

    #[test]
    fn catch_up_after_downtime_fires_only_the_latest_missed_slot() {
        let last = utc(2026, 1, 1, 9, 0, 0);
        let now = utc(2026, 1, 1, 14, 20, 5);
        assert_eq!(
            due_slot("0 * * * *", "UTC", Some(last), last, now),
            Ok(Some(utc(2026, 1, 1, 14, 0, 0)))
        );
        // Every second, hours missed: still one slot, the current second.
        assert_eq!(
            due_slot("* * * * * *", "UTC", Some(last), last, now),
            Ok(Some(now))
        );
    }

    #[test]
    fn nothing_is_due_before_the_next_slot_or_for_a_slot_already_fired() {
        let created = utc(2026, 1, 1, 9, 10, 0);
        assert_eq!(
            due_slot(
                "0 * * * *",
                "UTC",
                None,
                created,
                utc(2026, 1, 1, 9, 59, 59)
            ),
            Ok(None)
        );
        assert_eq!(
            due_slot("0 * * * *", "UTC", None, created, utc(2026, 1, 1, 10, 0, 0)),
            Ok(Some(utc(2026, 1, 1, 10, 0, 0)))
        );
        let fired = utc(2026, 1, 1, 10, 0, 0);
        assert_eq!(
            due_slot(
                "0 * * * *",
                "UTC",
                Some(fired),
                created,
                utc(2026, 1, 1, 10, 30, 0)
            ),
            Ok(None)
        );
    }

    #[test]
    fn a_schedule_that_never_matches_has_no_next_fire() {
        assert_eq!(
            next_fire("0 0 30 2 *", "UTC", utc(2026, 1, 1, 0, 0, 0)),
            Ok(None)
        );
    }
}
