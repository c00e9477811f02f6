//! `/api/v1/tokens`: admin API tokens, each with a role (`admin`, `deploy`, `read`) and a
//! scope (every app, or named apps). A secret is shown once, in the answer that creates
//! it; the store keeps only its hash. Only admin tokens reach these routes, so no token can
//! make one with more rights than itself. The last admin token cannot be deleted (checked
//! and deleted atomically in the store), so the API never locks everyone out.
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::store::{ApiToken, NewToken, TokenDeleted, TokenRole};
use shared::{AppName, TokenId};

use super::ManagerDeps;
use super::error::ApiError;
use super::extract::ApiPath;
use super::json::ApiJson;
use crate::auth::{generate_token, hash_token};

const MAX_NAME_CHARS: usize = 64;
/// More apps than this in one scope is a mistake, not a use.
const MAX_SCOPE_APPS: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateToken {
    name: String,
    /// `admin` when absent.
    #[serde(default)]
    role: Option<TokenRole>,
    /// Every app when absent.
    #[serde(default)]
    apps: Option<Vec<AppName>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct TokenPath {
    id: TokenId,
}

#[derive(Serialize)]
pub(super) struct Created {
    id: TokenId,
    name: String,
    role: TokenRole,
    apps: Option<Vec<AppName>>,
    created_at: DateTime<Utc>,
    /// The secret: shown this once.
    token: String,
}

#[derive(Debug, Serialize)]
pub(super) struct TokenList {
    tokens: Vec<ApiToken>,
}

#[tracing::instrument(skip_all)]
pub(super) async fn create(
    State(deps): State<Arc<ManagerDeps>>,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<(StatusCode, ApiJson<Created>), ApiError> {
    let name = body.name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::InvalidInput(format!(
            "token name must be 1 to {MAX_NAME_CHARS} characters, without control characters"
        )));
    }
    let role = body.role.unwrap_or(TokenRole::Admin);
    let apps = scope(&deps, role, body.apps).await?;
    let secret = generate_token();
    let token = deps
        .store
        .tokens
        .create(&NewToken {
            name: name.to_owned(),
            secret_hash: hash_token(&secret),
            role,
            apps,
        })
        .await
        .map_err(|e| ApiError::from_store(e, |_| name.to_owned()))?;
    tracing::info!(token = %token.id, role = %token.role, "token created");
    Ok((
        StatusCode::CREATED,
        ApiJson(Created {
            id: token.id,
            name: token.name,
            role: token.role,
            apps: token.apps,
            created_at: token.created_at,
            token: secret,
        }),
    ))
}

/// A new token's scope: every app for `admin`; else the named apps, each existing, once.
async fn scope(
    deps: &ManagerDeps,
    role: TokenRole,
    apps: Option<Vec<AppName>>,
) -> Result<Option<Vec<AppName>>, ApiError> {
    let Some(mut apps) = apps else {
        return Ok(None);
    };
    if role == TokenRole::Admin {
        return Err(ApiError::InvalidInput(
            "an admin token covers every app: give apps only with role deploy or read".into(),
        ));
    }
    apps.sort();
    apps.dedup();
    if apps.is_empty() || apps.len() > MAX_SCOPE_APPS {
        return Err(ApiError::InvalidInput(format!(
            "apps must name 1 to {MAX_SCOPE_APPS} apps (leave it out for every app)"
        )));
    }
    for app in &apps {
        super::require_app(deps, app).await?;
    }
    Ok(Some(apps))
}

/// The calling token (never its secret): what a client shows its user, e.g. which apps
/// a scoped token covers.
pub(super) async fn current(Extension(token): Extension<ApiToken>) -> ApiJson<ApiToken> {
    ApiJson(token)
}

pub(super) async fn list(
    State(deps): State<Arc<ManagerDeps>>,
) -> Result<ApiJson<TokenList>, ApiError> {
    let tokens = deps.store.tokens.list().await?;
    Ok(ApiJson(TokenList { tokens }))
}

#[tracing::instrument(skip_all, fields(token = %id))]
pub(super) async fn delete(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(TokenPath { id }): ApiPath<TokenPath>,
) -> Result<StatusCode, ApiError> {
    match deps.store.tokens.delete(id).await {
        Ok(TokenDeleted::Deleted) => Ok(StatusCode::NO_CONTENT),
        Ok(TokenDeleted::LastAdmin) => Err(ApiError::Conflict(
            "the last admin token cannot be deleted".into(),
        )),
        Err(e) => Err(ApiError::from_store(e, |_| id.to_string())),
    }
}
