//! `/api/v1/apps/{app}/invocations/stats`: the app's invocations per minute by status, and
//! their duration percentiles, aggregated by the database; `/api/v1/apps/{app}/queue/history`:
//! its queue depth and dead letters per minute (`crate::queue_history`). The dashboard's
//! charts.
use std::sync::Arc;

use axum::extract::State;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use shared::store::{MinuteStats, QueueSample};
use shared::{AppName, ErrorBody};
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use super::json::ApiJson;
use super::{ManagerDeps, parse_limit, require_app};

const DEFAULT_MINUTES: u32 = 60;
const MAX_MINUTES: u32 = 24 * 60;

#[derive(Debug, Deserialize)]
pub(super) struct AppPath {
    app: AppName,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StatsQuery {
    minutes: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct InvocationStats {
    /// The first minute covered (UTC); the last is the current one.
    since: DateTime<Utc>,
    /// One entry per minute that had runs, oldest first.
    minutes: Vec<MinuteStats>,
}

/// Invocations per minute.
///
/// Counts by status (and how many were HTTP runs) and duration percentiles (p50, p95, p99,
/// nearest rank) per minute over the last `minutes` minutes, from the stored records (so
/// records not stored, over the app's bounds, are not counted).
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/invocations/stats",
    operation_id = "invocation_stats",
    tag = "invocations",
    params(("app" = AppName, Path, description = "The app's name"),
        ("minutes" = Option<u32>, Query, minimum = 1, maximum = 1440, description = "How many minutes back, the current one included (default 60)")),
    responses(
        (status = 200, description = "Per-minute figures", body = InvocationStats),
        (status = 400, description = "A bad `minutes` (`invalid_input`)", body = ErrorBody),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn invocations(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> Result<ApiJson<InvocationStats>, ApiError> {
    let (since, _) = window(query.minutes.as_deref())?;
    require_app(&deps, &app).await?;
    let minutes = deps.store.invocations.stats(&app, since).await?;
    Ok(ApiJson(InvocationStats { since, minutes }))
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct QueueHistory {
    /// The first minute asked for (UTC); the last is the current one.
    since: DateTime<Utc>,
    /// One entry per minute, oldest first, the current minute last (counted now). A
    /// minute without a sample of its own has the last sample's values (samples are
    /// taken after the app's runs, at most one a minute, so a minute without one changed
    /// nothing); minutes before the app's first sample are left out. An app with no
    /// sample in the last day has every minute at its current values.
    minutes: Vec<QueueSample>,
}

/// Queue depth and dead letters per minute.
///
/// The app's events not yet done (its outbox rows: due, running, waiting for a retry or
/// a later time, parked) and its dead letters, per minute over the last `minutes` minutes
/// (up to a day), counted by the database after the app's runs (so the same on every
/// node).
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/queue/history",
    operation_id = "queue_history",
    tag = "dead letters",
    params(("app" = AppName, Path, description = "The app's name"),
        ("minutes" = Option<u32>, Query, minimum = 1, maximum = 1440, description = "How many minutes back, the current one included (default 60)")),
    responses(
        (status = 200, description = "Per-minute queue depth and dead letters", body = QueueHistory),
        (status = 400, description = "A bad `minutes` (`invalid_input`)", body = ErrorBody),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn queue(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> Result<ApiJson<QueueHistory>, ApiError> {
    let (since, this_minute) = window(query.minutes.as_deref())?;
    require_app(&deps, &app).await?;
    let samples = deps.store.dead_letters.queue_history(&app, since).await?;
    let now = deps.store.dead_letters.queue_now(&app, this_minute).await?;
    Ok(ApiJson(QueueHistory {
        since,
        minutes: per_minute(&samples, since, now),
    }))
}

/// Every minute from `since` to `now.minute`, each with the last sample at or before it;
/// `now` is the last.
fn per_minute(samples: &[QueueSample], since: DateTime<Utc>, now: QueueSample) -> Vec<QueueSample> {
    let mut minutes = Vec::new();
    let mut last: Option<&QueueSample> = None;
    let mut next = samples.iter().peekable();
    let mut minute = since;
    while minute < now.minute {
        while let Some(s) = next.next_if(|s| s.minute <= minute) {
            last = Some(s);
        }
        let carried = if samples.is_empty() { Some(&now) } else { last };
        if let Some(s) = carried {
            minutes.push(QueueSample { minute, ..*s });
        }
        minute += TimeDelta::minutes(1);
    }
    minutes.push(now);
    minutes
}

/// The window `minutes` asks for: its first minute and the current one.
fn window(minutes: Option<&str>) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let minutes = parse_limit(minutes, DEFAULT_MINUTES, MAX_MINUTES).map_err(|_| {
        ApiError::InvalidInput(format!("minutes must be a number from 1 to {MAX_MINUTES}"))
    })?;
    let this_minute = crate::queue_history::this_minute(Utc::now());
    let since = this_minute - TimeDelta::minutes(i64::from(minutes) - 1);
    Ok((since, this_minute))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(m: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 / 60 * 60, 0).expect("a time")
            + TimeDelta::minutes(m)
    }

    fn s(m: i64, depth: u64, dead: u64) -> QueueSample {
        QueueSample {
            minute: at(m),
            queue_depth: depth,
            dead_letters: dead,
        }
    }

    fn values(minutes: &[QueueSample]) -> Vec<(i64, u64, u64)> {
        minutes
            .iter()
            .map(|q| {
                (
                    (q.minute - at(0)).num_minutes(),
                    q.queue_depth,
                    q.dead_letters,
                )
            })
            .collect()
    }

    #[test]
    fn each_minute_carries_the_last_sample_forward_and_ends_with_now() {
        // The sample before the window leads; minutes between samples keep the last one.
        let got = per_minute(&[s(-3, 7, 1), s(2, 0, 4)], at(0), s(4, 5, 4));
        assert_eq!(
            values(&got),
            [(0, 7, 1), (1, 7, 1), (2, 0, 4), (3, 0, 4), (4, 5, 4)]
        );
        // Minutes before the first sample are unknown: left out.
        let got = per_minute(&[s(2, 3, 0)], at(0), s(3, 1, 0));
        assert_eq!(values(&got), [(2, 3, 0), (3, 1, 0)]);
        // No sample in the last day: nothing changed, every minute is now's.
        let got = per_minute(&[], at(0), s(2, 0, 9));
        assert_eq!(values(&got), [(0, 0, 9), (1, 0, 9), (2, 0, 9)]);
        // A window of one minute is now alone.
        assert_eq!(
            values(&per_minute(&[s(0, 1, 1)], at(0), s(0, 2, 2))),
            [(0, 2, 2)]
        );
    }
}
