//! `/api/v1/apps/{app}/mailbox`: the development mailbox. Without an SMTP server the
//! mailer delivers `email::send` messages here, newest first.
use std::sync::Arc;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{AppName, EmailMessage, ErrorBody};
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Delivered {
    at: DateTime<Utc>,
    message: EmailMessage,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Mailbox {
    messages: Vec<Delivered>,
}

/// The development mailbox, newest first.
///
/// Without an SMTP server, `email::send` delivers here.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/mailbox",
    operation_id = "list_mailbox",
    tag = "mailbox",
    params(("app" = AppName, Path, description = "The app's name"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Page size (default 50)")),
    responses(
        (status = 200, description = "The messages", body = Mailbox),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn list(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<ApiJson<Mailbox>, ApiError> {
    let limit = parse_limit(query.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    require_app(&deps, &app).await?;
    let messages = deps
        .store
        .mailbox
        .list(&app, limit)
        .await?
        .into_iter()
        .map(|(at, message)| Delivered { at, message })
        .collect();
    Ok(ApiJson(Mailbox { messages }))
}
