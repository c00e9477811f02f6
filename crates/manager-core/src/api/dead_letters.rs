//! `/api/v1/apps/{app}/dead-letters`: events that ran out of attempts, newest first, paged
//! by id. A dead letter can be inspected, replayed (back into the outbox as a new event,
//! attempt 1, and the dead letter removed, in one store transaction), deleted or purged.
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shared::{AppName, DeadLetter, DeadLetterId, ErrorBody, EventId};
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
    before: Option<String>,
    limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DeadLetterPage {
    dead_letters: Vec<DeadLetter>,
    /// The id to pass as `before` for the next page; `null` on the last page.
    next_before: Option<DeadLetterId>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Replayed {
    event_id: EventId,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Purged {
    purged: u64,
}

/// List dead letters, newest first.
///
/// Paged by id: pass the previous page's `next_before` as `before`.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/dead-letters",
    operation_id = "list_dead_letters",
    tag = "dead letters",
    params(("app" = AppName, Path, description = "The app's name"),
        ("before" = Option<DeadLetterId>, Query, description = "The previous page's `next_before`"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Page size (default 50)")),
    responses(
        (status = 200, description = "A page of dead letters", body = DeadLetterPage, links(
            ("get" = (operation_id = "get_dead_letter", parameters(("app" = "$request.path.app"), ("id" = "$response.body#/dead_letters/0/id")))),
            ("replay" = (operation_id = "replay_dead_letter", parameters(("app" = "$request.path.app"), ("id" = "$response.body#/dead_letters/0/id")))),
            ("delete" = (operation_id = "delete_dead_letter", parameters(("app" = "$request.path.app"), ("id" = "$response.body#/dead_letters/0/id")))),
        )),
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
    Ok(ApiJson(Purged { purged }))
}
