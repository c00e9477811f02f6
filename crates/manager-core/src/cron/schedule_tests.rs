//! The schedule rules, each a pure function of `now`; both 2026 daylight-saving days in
//! Europe/Berlin and America/New_York.
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
    let e = validate("x", "UTC", start()).unwrap_err();
    assert!(
        e.to_string().starts_with("invalid cron schedule 'x': "),
        "{e}"
    );
    let e = validate("61 * * * *", "UTC", start()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("invalid cron schedule '61 * * * *'"),
        "{e}"
    );
    let e = validate("0 0 0 1 1 * 2030", "UTC", start()).unwrap_err();
    assert!(e.to_string().contains("got 7"), "{e}");
    assert_eq!(
        validate("* * * * *", "Mars/X", start())
            .unwrap_err()
            .to_string(),
        "unknown time zone 'Mars/X'"
    );
    assert!(validate("0 0 * * MON-FRI", "America/New_York", start()).is_ok());
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

/// A fixed "now" for the tests that need one.
fn start() -> DateTime<Utc> {
    utc(2026, 1, 1, 0, 0, 0)
}

/// Every fire of `schedule` in `tz` in `[from, to)`, walking `next_fire` like the scheduler.
fn fires(schedule: &str, tz: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let parsed = Schedule::parse(schedule, tz).expect("valid");
    let mut out = Vec::new();
    let mut at = from - chrono::Duration::seconds(1);
    while let Some(next) = parsed.next_after(at) {
        if next >= to {
            break;
        }
        out.push(next);
        at = next;
    }
    out
}

#[test]
fn a_schedule_without_a_slot_in_the_horizon_is_refused() {
    for never in ["0 0 30 2 *", "0 0 31 4 *", "0 0 0 31 11 *"] {
        assert_eq!(
            validate(never, "UTC", start()),
            Err(CronError::NeverFires(never.into())),
        );
    }
    let e = validate("0 0 30 2 *", "UTC", start()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cron schedule '0 0 30 2 *' never fires: it has no slot in the next 10 years"
    );
    // Rare but real: 29 February.
    assert!(validate("0 0 29 2 *", "Europe/Berlin", utc(2097, 3, 1, 0, 0, 0)).is_ok());
}

#[test]
fn berlin_spring_forward_fires_each_skipped_slot_right_after_the_gap() {
    // 2026-03-29: 02:00 CET (01:00 UTC) becomes 03:00 CEST; 02:00 and 02:30 do not exist.
    let day = fires(
        "0,30 2 * * *",
        "Europe/Berlin",
        utc(2026, 3, 28, 0, 0, 0),
        utc(2026, 3, 31, 0, 0, 0),
    );
    assert_eq!(
        day,
        [
            utc(2026, 3, 28, 1, 0, 0),  // 02:00 CET
            utc(2026, 3, 28, 1, 30, 0), // 02:30 CET
            utc(2026, 3, 29, 1, 0, 0),  // both slots, at 03:00 CEST, once
            utc(2026, 3, 30, 0, 0, 0),  // 02:00 CEST
            utc(2026, 3, 30, 0, 30, 0), // 02:30 CEST
        ]
    );
    // Every 30 minutes through the night: nothing lost, nothing doubled.
    let night = fires(
        "*/30 * * * *",
        "Europe/Berlin",
        utc(2026, 3, 29, 0, 0, 0),
        utc(2026, 3, 29, 2, 0, 0),
    );
    assert_eq!(
        night,
        [
            utc(2026, 3, 29, 0, 0, 0),  // 01:00 CET
            utc(2026, 3, 29, 0, 30, 0), // 01:30 CET
            utc(2026, 3, 29, 1, 0, 0),  // 02:00, 02:30 and 03:00 CEST
            utc(2026, 3, 29, 1, 30, 0), // 03:30 CEST
        ]
    );
}

#[test]
fn berlin_fall_back_fires_each_repeated_slot_at_its_first_occurrence_only() {
    // 2026-10-25: 03:00 CEST (01:00 UTC) becomes 02:00 CET; 02:00-02:59 happen twice.
    let day = fires(
        "0,30 2 * * *",
        "Europe/Berlin",
        utc(2026, 10, 24, 0, 0, 0),
        utc(2026, 10, 27, 0, 0, 0),
    );
    assert_eq!(
        day,
        [
            utc(2026, 10, 24, 0, 0, 0),  // 02:00 CEST
            utc(2026, 10, 24, 0, 30, 0), // 02:30 CEST
            utc(2026, 10, 25, 0, 0, 0),  // 02:00 CEST, the first of two
            utc(2026, 10, 25, 0, 30, 0), // 02:30 CEST, the first of two
            utc(2026, 10, 26, 1, 0, 0),  // 02:00 CET
            utc(2026, 10, 26, 1, 30, 0), // 02:30 CET
        ]
    );
    let night = fires(
        "*/30 * * * *",
        "Europe/Berlin",
        utc(2026, 10, 24, 23, 30, 0),
        utc(2026, 10, 25, 2, 30, 0),
    );
    assert_eq!(
        night,
        [
            utc(2026, 10, 24, 23, 30, 0), // 01:30 CEST
            utc(2026, 10, 25, 0, 0, 0),   // 02:00 CEST
            utc(2026, 10, 25, 0, 30, 0),  // 02:30 CEST; the CET pass repeats nothing
            utc(2026, 10, 25, 2, 0, 0),   // 03:00 CET
        ]
    );
}

#[test]
fn new_york_transition_days_fire_each_slot_once() {
    // 2026-03-08: 02:00 EST (07:00 UTC) becomes 03:00 EDT.
    assert_eq!(
        fires(
            "15,45 2 * * *",
            "America/New_York",
            utc(2026, 3, 8, 0, 0, 0),
            utc(2026, 3, 9, 0, 0, 0)
        ),
        [utc(2026, 3, 8, 7, 0, 0)]
    );
    // 2026-11-01: 02:00 EDT (06:00 UTC) becomes 01:00 EST; 01:xx happens twice.
    assert_eq!(
        fires(
            "15,45 1 * * *",
            "America/New_York",
            utc(2026, 11, 1, 0, 0, 0),
            utc(2026, 11, 2, 0, 0, 0)
        ),
        [utc(2026, 11, 1, 5, 15, 0), utc(2026, 11, 1, 5, 45, 0)]
    );
}

#[test]
fn catching_up_inside_the_repeated_hour_finds_the_latest_slot_already_passed() {
    // 01:40 UTC is 02:40 CET, the second pass; 02:50 CEST (00:50 UTC) is the latest slot
    // that has passed, although 02:50 is later on the wall clock.
    let since = utc(2026, 10, 24, 22, 0, 0);
    assert_eq!(
        due_slot(
            "*/10 * * * *",
            "Europe/Berlin",
            Some(since),
            since,
            utc(2026, 10, 25, 1, 40, 0)
        ),
        Ok(Some(utc(2026, 10, 25, 0, 50, 0)))
    );
    // And nothing more is due until 03:00 CET.
    assert_eq!(
        next_fire("*/10 * * * *", "Europe/Berlin", utc(2026, 10, 25, 1, 40, 0)),
        Ok(Some(utc(2026, 10, 25, 2, 0, 0)))
    );
}
