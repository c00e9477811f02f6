//! `/api/v1/apps/{app}/invocations`: the run history, newest first, paged by id (ids are
//! time-ordered, so `before=<last id>` continues where a page stopped).
use std::sync::Arc;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::store::InvocationFilter;
use shared::{AppName, ErrorBody, InvocationId, InvocationRecord, InvocationStatus, ScriptName};
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use super::json::ApiJson;
use super::{ManagerDeps, require_app};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

#[derive(Debug, Deserialize)]
pub(super) struct AppPath {
    app: AppName,
}

#[derive(Debug, Deserialize)]
pub(super) struct InvocationPath {
    app: AppName,
    id: InvocationId,
}

/// The query as sent; `into_filter` validates each parameter with its own message.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    script: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

impl ListQuery {
    fn into_filter(self) -> Result<InvocationFilter, ApiError> {
        let bad = |msg: String| ApiError::InvalidInput(msg);
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
        let status = self
            .status
            .map(|s| {
                InvocationStatus::parse(&s)
                    .ok_or_else(|| bad("status must be ok, error or timeout".into()))
            })
            .transpose()?;
        let since = time("since", self.since)?;
        let until = time("until", self.until)?;
        let before = self
            .before
            .map(|s| {
                s.parse::<InvocationId>().map_err(|_| {
                    bad(format!(
                        "before must be an invocation id, got '{}'",
                        short(&s)
                    ))
                })
            })
            .transpose()?;
        let limit = match self.limit {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => return Err(bad(format!("limit must be a number from 1 to {MAX_LIMIT}"))),
            },
        };
        Ok(InvocationFilter {
            script,
            status,
            since,
            until,
            before,
            limit,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct InvocationPage {
    invocations: Vec<InvocationRecord>,
    /// The id to pass as `before` for the next page; `null` on the last page.
    next_before: Option<InvocationId>,
    /// How many of the app's failure records were not stored (over `[invocations]
    /// failures_per_sec`) since the app was created.
    dropped: u64,
}

/// List invocations, newest first.
///
/// Paged by id: pass the previous page's `next_before` as `before`.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/invocations",
    operation_id = "list_invocations",
    tag = "invocations",
    params(("app" = AppName, Path, description = "The app's name"),
        ("script" = Option<ScriptName>, Query, description = "Only this script's runs"),
        ("status" = Option<InvocationStatus>, Query, description = "Only runs that ended so"),
        ("since" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Only runs that started at or after this RFC 3339 time"),
        ("until" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Only runs that started before this RFC 3339 time"),
        ("before" = Option<InvocationId>, Query, description = "The previous page's `next_before`"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Page size (default 50)")),
    responses(
        (status = 200, description = "A page of invocations", body = InvocationPage, links(
            ("get" = (operation_id = "get_invocation", parameters(("app" = "$request.path.app"), ("id" = "$response.body#/invocations/0/id")))),
        )),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn list(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<ApiJson<InvocationPage>, ApiError> {
    let filter = query.into_filter()?;
    require_app(&deps, &app).await?;
    let invocations = deps.store.invocations.list(&app, &filter).await?;
    let full = u32::try_from(invocations.len()).is_ok_and(|n| n >= filter.limit);
    let next_before = if full {
        invocations.last().map(|r| r.id)
    } else {
        None
    };
    let dropped = deps.store.invocations.dropped(&app).await?;
    Ok(ApiJson(InvocationPage {
        invocations,
        next_before,
        dropped,
    }))
}

/// Show one invocation with its logs.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/invocations/{id}",
    operation_id = "get_invocation",
    tag = "invocations",
    params(("app" = AppName, Path, description = "The app's name"), ("id" = InvocationId, Path, description = "The invocation's id")),
    responses(
        (status = 200, description = "The invocation", body = InvocationRecord),
        (status = 404, description = "No such app or invocation (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn get(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(InvocationPath { app, id }): ApiPath<InvocationPath>,
) -> Result<ApiJson<InvocationRecord>, ApiError> {
    match deps.store.invocations.get(&app, id).await? {
        Some(record) => Ok(ApiJson(record)),
        None => {
            require_app(&deps, &app).await?;
            Err(ApiError::not_found("invocation", id))
        }
    }
}
