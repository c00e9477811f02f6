//! `/api/v1/apps/{app}/dead-letters`: events that ran out of attempts, newest first, paged
//! by id. A dead letter can be inspected, replayed (back into the outbox as a new event,
//! attempt 1, and the dead letter removed, in one store transaction), deleted or purged.
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::store::DeadLetterFilter;
use shared::{AppName, DeadLetter, DeadLetterId, ErrorBody, EventId, EventKind, ScriptName};
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use super::json::ApiJson;
use super::{ManagerDeps, parse_limit, require_app};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

#[derive(Debug, Deserialize)]
pub(super) struct AppPath {
    app: AppName,
}

#[derive(Debug, Deserialize)]
pub(super) struct DeadLetterPath {
    app: AppName,
    id: DeadLetterId,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    script: Option<String>,
    kind: Option<String>,
    error: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

/// The filter of a list or a bulk replay, validated one field at a time.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Matching {
    /// Only this script's dead letters.
    #[schema(value_type = Option<ScriptName>)]
    script: Option<String>,
    /// Only this event kind (`topic`, `queue`, `invoke`, `cron`, `dead_letter`, `email`).
    #[schema(value_type = Option<EventKind>)]
    kind: Option<String>,
    /// Only those whose last error contains this text.
    error: Option<String>,
    /// Only those made at or after this RFC 3339 time.
    #[schema(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    since: Option<String>,
    /// Only those made before this RFC 3339 time.
    #[schema(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    until: Option<String>,
}

/// The longest `error` filter text.
const MAX_ERROR_FILTER: usize = 200;

impl Matching {
    fn into_filter(self, limit: u32) -> Result<DeadLetterFilter, ApiError> {
        let bad = ApiError::InvalidInput;
        let short = |v: &str| v.chars().take(80).collect::<String>();
        let time = |name: &str, raw: Option<String>| -> Result<Option<DateTime<Utc>>, ApiError> {
            raw.map(|v| {
                DateTime::parse_from_rfc3339(&v)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        bad(format!(
                            "{name} must be an RFC 3339 time, got '{}'",
                            short(&v)
                        ))
                    })
            })
            .transpose()
        };
        let script = self
            .script
            .map(|s| ScriptName::parse(&s).map_err(|e| bad(e.0)))
            .transpose()?;
        let kind = self
            .kind
            .map(|k| {
                EventKind::parse(&k).ok_or_else(|| {
                    bad(format!(
                        "kind must be topic, queue, invoke, cron, dead_letter or email, got '{}'",
                        short(&k)
                    ))
                })
            })
            .transpose()?;
        let error = self.error.filter(|e| !e.is_empty());
        if error.as_ref().is_some_and(|e| e.len() > MAX_ERROR_FILTER) {
            return Err(bad(format!(
                "error must be at most {MAX_ERROR_FILTER} bytes"
            )));
        }
        Ok(DeadLetterFilter {
            script,
            kind,
            error,
            since: time("since", self.since)?,
            until: time("until", self.until)?,
            before: None,
            limit,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DeadLetterPage {
    dead_letters: Vec<DeadLetter>,
    /// The id to pass as `before` for the next page; `null` on the last page.
    next_before: Option<DeadLetterId>,
    /// How many dead letters match the filter, on every page.
    matching: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Replayed {
    event_id: EventId,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ReplayedAll {
    /// How many dead letters went back into the outbox.
    replayed: u64,
    /// How many matching ones that existed at the call are left (over the per-call
    /// bound); call again for those.
    remaining: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Purged {
    purged: u64,
}

/// List dead letters, newest first.
///
/// Paged by id: pass the previous page's `next_before` as `before`. The filters combine;
/// `matching` counts every dead letter that matches them.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/dead-letters",
    operation_id = "list_dead_letters",
    tag = "dead letters",
    params(("app" = AppName, Path, description = "The app's name"),
        ("script" = Option<ScriptName>, Query, description = "Only this script's dead letters"),
        ("kind" = Option<EventKind>, Query, description = "Only this event kind"),
        ("error" = Option<String>, Query, description = "Only those whose last error contains this text"),
        ("since" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Only those made at or after this RFC 3339 time"),
        ("until" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Only those made before this RFC 3339 time"),
        ("before" = Option<DeadLetterId>, Query, description = "The previous page's `next_before`"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Page size (default 50)")),
    responses(
        (status = 200, description = "A page of dead letters", body = DeadLetterPage, links(
            ("get" = (operation_id = "get_dead_letter", parameters(("app" = "$request.path.app"), ("id" = "$response.body#/dead_letters/0/id")))),
            ("replay" = (operation_id = "replay_dead_letter", parameters(("app" = "$request.path.app"), ("id" = "$response.body#/dead_letters/0/id")))),
            ("delete" = (operation_id = "delete_dead_letter", parameters(("app" = "$request.path.app"), ("id" = "$response.body#/dead_letters/0/id")))),
        )),
        (status = 400, description = "A bad filter (`invalid_input`)", body = ErrorBody),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn list(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<ApiJson<DeadLetterPage>, ApiError> {
    let before = query
        .before
        .map(|raw| {
            raw.parse::<DeadLetterId>().map_err(|_| {
                ApiError::InvalidInput(format!(
                    "before must be a dead letter id, got '{}'",
                    raw.chars().take(80).collect::<String>()
                ))
            })
        })
        .transpose()?;
    let limit = parse_limit(query.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let mut filter = Matching {
        script: query.script,
        kind: query.kind,
        error: query.error,
        since: query.since,
        until: query.until,
    }
    .into_filter(limit)?;
    require_app(&deps, &app).await?;
    let matching = deps
        .store
        .dead_letters
        .count_matching(&app, &filter)
        .await?;
    filter.before = before;
    let dead_letters = deps.store.dead_letters.list_matching(&app, &filter).await?;
    let full = u32::try_from(dead_letters.len()).is_ok_and(|n| n >= limit);
    let next_before = if full {
        dead_letters.last().map(|d| d.id)
    } else {
        None
    };
    Ok(ApiJson(DeadLetterPage {
        dead_letters,
        next_before,
        matching,
    }))
}

/// At most this many dead letters are replayed by one bulk replay.
const MAX_BULK_REPLAY: u64 = 10_000;
/// Dead letters read per page of a bulk replay.
const BULK_PAGE: u32 = 200;

/// Replay every dead letter that matches a filter.
///
/// The body is the filter (`{}`: every dead letter of the app). Each matching dead letter
/// goes back into the outbox (attempt 1) and is deleted, one transaction each, newest
/// first, at most 10000 per call; `remaining` says how many matching ones are left. One
/// that fails again becomes a new dead letter, which this call does not replay again.
#[utoipa::path(
    post,
    path = "/api/v1/apps/{app}/dead-letters/replay",
    operation_id = "replay_dead_letters",
    tag = "dead letters",
    params(("app" = AppName, Path, description = "The app's name")),
    request_body = Matching,
    responses(
        (status = 202, description = "The matching events are queued again", body = ReplayedAll),
        (status = 400, description = "A bad filter (`invalid_input`)", body = ErrorBody),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
#[tracing::instrument(skip_all, fields(app = %app))]
pub(super) async fn replay_matching(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
    ApiJson(body): ApiJson<Matching>,
) -> Result<(StatusCode, ApiJson<ReplayedAll>), ApiError> {
    let mut filter = body.into_filter(BULK_PAGE)?;
    require_app(&deps, &app).await?;
    // Only letters that exist now: a replay that fails again makes a newer one.
    let existing = Some(DeadLetterId::first_at(
        Utc::now() + chrono::TimeDelta::milliseconds(1),
    ));
    filter.before = existing;
    let mut replayed = 0u64;
    'pages: loop {
        let page = deps.store.dead_letters.list_matching(&app, &filter).await?;
        let Some(last) = page.last() else { break };
        filter.before = Some(last.id);
        for letter in &page {
            if replayed >= MAX_BULK_REPLAY {
                break 'pages;
            }
            match deps.store.dead_letters.replay(&app, letter.id).await {
                Ok(_) => replayed += 1,
                // Replayed or deleted by someone else meanwhile.
                Err(shared::StoreError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    filter.before = existing;
    let remaining = deps
        .store
        .dead_letters
        .count_matching(&app, &filter)
        .await?;
    tracing::info!(replayed, remaining, "dead letters replayed");
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(ReplayedAll {
            replayed,
            remaining,
        }),
    ))
}

/// Show one dead letter.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/dead-letters/{id}",
    operation_id = "get_dead_letter",
    tag = "dead letters",
    params(("app" = AppName, Path, description = "The app's name"), ("id" = DeadLetterId, Path, description = "The dead letter's id")),
    responses(
        (status = 200, description = "The dead letter", body = DeadLetter),
        (status = 404, description = "No such app or dead letter (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn get(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(DeadLetterPath { app, id }): ApiPath<DeadLetterPath>,
) -> Result<ApiJson<DeadLetter>, ApiError> {
    match deps.store.dead_letters.get(&app, id).await? {
        Some(dead_letter) => Ok(ApiJson(dead_letter)),
        None => {
            require_app(&deps, &app).await?;
            Err(ApiError::not_found("dead letter", id))
        }
    }
}

/// Replay a dead letter.
///
/// The event goes back into the outbox (attempt 1) and the dead letter is deleted, in one
/// transaction.
#[utoipa::path(
    post,
    path = "/api/v1/apps/{app}/dead-letters/{id}/replay",
    operation_id = "replay_dead_letter",
    tag = "dead letters",
    params(("app" = AppName, Path, description = "The app's name"), ("id" = DeadLetterId, Path, description = "The dead letter's id")),
    responses(
        (status = 202, description = "The event is queued again", body = Replayed),
        (status = 404, description = "No such app or dead letter (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
#[tracing::instrument(skip_all, fields(app = %app, dead_letter = %id))]
pub(super) async fn replay(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(DeadLetterPath { app, id }): ApiPath<DeadLetterPath>,
) -> Result<(StatusCode, ApiJson<Replayed>), ApiError> {
    require_app(&deps, &app).await?;
    let event_id = deps
        .store
        .dead_letters
        .replay(&app, id)
        .await
        .map_err(|e| ApiError::from_store(e, |_| id.to_string()))?;
    tracing::info!(event = %event_id, "dead letter replayed");
    Ok((StatusCode::ACCEPTED, ApiJson(Replayed { event_id })))
}

/// Delete one dead letter.
#[utoipa::path(
    delete,
    path = "/api/v1/apps/{app}/dead-letters/{id}",
    operation_id = "delete_dead_letter",
    tag = "dead letters",
    params(("app" = AppName, Path, description = "The app's name"), ("id" = DeadLetterId, Path, description = "The dead letter's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such app or dead letter (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
#[tracing::instrument(skip_all, fields(app = %app, dead_letter = %id))]
pub(super) async fn delete(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(DeadLetterPath { app, id }): ApiPath<DeadLetterPath>,
) -> Result<StatusCode, ApiError> {
    require_app(&deps, &app).await?;
    deps.store
        .dead_letters
        .delete(&app, id)
        .await
        .map_err(|e| ApiError::from_store(e, |_| id.to_string()))?;
    crate::queue_history::sample_now(&deps.store, &app).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Purge every dead letter of the app.
#[utoipa::path(
    delete,
    path = "/api/v1/apps/{app}/dead-letters",
    operation_id = "purge_dead_letters",
    tag = "dead letters",
    params(("app" = AppName, Path, description = "The app's name")),
    responses(
        (status = 200, description = "How many were deleted", body = Purged),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
#[tracing::instrument(skip_all, fields(app = %app))]
pub(super) async fn purge(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
) -> Result<ApiJson<Purged>, ApiError> {
    require_app(&deps, &app).await?;
    let purged = deps.store.dead_letters.purge_app(&app).await?;
    tracing::info!(purged, "dead letters purged");
    crate::queue_history::sample_now(&deps.store, &app).await;
    Ok(ApiJson(Purged { purged }))
}
