//! `/api/v1/apps/{app}/invocations/stats`: the app's invocations per minute by status, and
//! their duration percentiles, aggregated by the database (the dashboard's charts).
use std::sync::Arc;

use axum::extract::State;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use shared::store::MinuteStats;
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
    let minutes =
        parse_limit(query.minutes.as_deref(), DEFAULT_MINUTES, MAX_MINUTES).map_err(|_| {
            ApiError::InvalidInput(format!("minutes must be a number from 1 to {MAX_MINUTES}"))
        })?;
    require_app(&deps, &app).await?;
    let now = Utc::now();
    let this_minute = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
    let since = this_minute - TimeDelta::minutes(i64::from(minutes) - 1);
    let minutes = deps.store.invocations.stats(&app, since).await?;
    Ok(ApiJson(InvocationStats { since, minutes }))
}
