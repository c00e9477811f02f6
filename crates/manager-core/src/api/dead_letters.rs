//! `/api/v1/apps/{app}/dead-letters`: events that ran out of attempts, newest first, paged
//! by id. A dead letter can be inspected, replayed (back into the outbox as a new event,
//! attempt 1, and the dead letter removed, in one store transaction), deleted or purged.
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shared::{AppName, DeadLetter, DeadLetterId, EventId};

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
    before: Option<String>,
    limit: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct DeadLetterPage {
    dead_letters: Vec<DeadLetter>,
    /// The id to pass as `before` for the next page; `null` on the last page.
    next_before: Option<DeadLetterId>,
}

#[derive(Debug, Serialize)]
pub(super) struct Replayed {
    event_id: EventId,
}

#[derive(Debug, Serialize)]
pub(super) struct Purged {
    purged: u64,
}

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
    require_app(&deps, &app).await?;
    let dead_letters = deps.store.dead_letters.list(&app, before, limit).await?;
    let full = u32::try_from(dead_letters.len()).is_ok_and(|n| n >= limit);
    let next_before = if full {
        dead_letters.last().map(|d| d.id)
    } else {
        None
    };
    Ok(ApiJson(DeadLetterPage {
        dead_letters,
        next_before,
    }))
}

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
    Ok(StatusCode::NO_CONTENT)
}

#[tracing::instrument(skip_all, fields(app = %app))]
pub(super) async fn purge(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
) -> Result<ApiJson<Purged>, ApiError> {
    require_app(&deps, &app).await?;
    let purged = deps.store.dead_letters.purge_app(&app).await?;
    tracing::info!(purged, "dead letters purged");
    Ok(ApiJson(Purged { purged }))
}
