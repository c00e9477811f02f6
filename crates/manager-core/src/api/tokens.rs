//! `/api/v1/tokens`: admin API tokens. A secret is shown once, in the answer that creates
//! it; the store keeps only its hash. The last token cannot be deleted, so the API never
//! locks everyone out.
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::TokenId;
use shared::store::ApiToken;

use super::ManagerDeps;
use super::error::ApiError;
use super::extract::ApiPath;
use super::json::ApiJson;
use crate::auth::{generate_token, hash_token};

const MAX_NAME_CHARS: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateToken {
    name: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct TokenPath {
    id: TokenId,
}

#[derive(Serialize)]
pub(super) struct CreatedToken {
    id: TokenId,
    name: String,
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
) -> Result<(StatusCode, ApiJson<CreatedToken>), ApiError> {
    let name = body.name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::InvalidInput(format!(
            "token name must be 1 to {MAX_NAME_CHARS} characters, without control characters"
        )));
    }
    let secret = generate_token();
    let token = deps
        .store
        .tokens
        .create(name, &hash_token(&secret))
        .await
        .map_err(|e| ApiError::from_store(e, |_| name.to_owned()))?;
    tracing::info!(token = %token.id, "token created");
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedToken {
            id: token.id,
            name: token.name,
            created_at: token.created_at,
            token: secret,
        }),
    ))
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
    let tokens = deps.store.tokens.list().await?;
    if !tokens.iter().any(|t| t.id == id) {
        return Err(ApiError::not_found("token", id));
    }
    if tokens.len() <= 1 {
        return Err(ApiError::Conflict(
            "the last remaining token cannot be deleted".into(),
        ));
    }
    deps.store
        .tokens
        .delete(id)
        .await
        .map_err(|e| ApiError::from_store(e, |_| id.to_string()))?;
    Ok(StatusCode::NO_CONTENT)
}
