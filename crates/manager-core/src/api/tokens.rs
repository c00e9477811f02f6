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
use serde_json::json;
use shared::store::{ApiToken, NewToken, TokenDeleted, TokenRole};
use shared::{AppName, ErrorBody, TokenId};
use utoipa::ToSchema;
use utoipa::openapi::{RefOr, Schema};

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

/// The body as the document states it: `apps` only with role `deploy` or `read`.
impl utoipa::PartialSchema for CreateToken {
    fn schema() -> RefOr<Schema> {
        let name_char = r"[^\u0000-\u001F\u007F-\u009F]";
        shared::schema::raw(json!({
            "type": "object",
            "required": ["name"],
            "additionalProperties": false,
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS,
                    "pattern": format!(r"^{name_char}*[^\s\u0000-\u001F\u007F-\u009F]{name_char}*$"),
                    "description": "1 to 64 characters (after trimming spaces), without control characters."},
                "role": {"$ref": "#/components/schemas/TokenRole", "default": "admin"},
                "apps": {"type": "array", "minItems": 1, "maxItems": MAX_SCOPE_APPS,
                    "items": {"$ref": "#/components/schemas/AppName"},
                    "description": "The existing apps the token covers (not with role admin, which covers every app); absent is every app."},
            },
            "anyOf": [
                {"not": {"required": ["apps"]}},
                {"required": ["role", "apps"], "properties": {"role": {"enum": ["deploy", "read"]}}},
            ],
        }))
    }
}

impl ToSchema for CreateToken {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        use utoipa::PartialSchema;
        schemas.push((TokenRole::name().into_owned(), TokenRole::schema()));
        schemas.push((AppName::name().into_owned(), AppName::schema()));
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct TokenPath {
    id: TokenId,
}

/// A new token, with its secret.
#[derive(Serialize, ToSchema)]
pub(super) struct Created {
    id: TokenId,
    name: String,
    role: TokenRole,
    apps: Option<Vec<AppName>>,
    created_at: DateTime<Utc>,
    /// The secret: shown this once.
    token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TokenList {
    tokens: Vec<ApiToken>,
}

/// Create a token.
///
/// Its secret is in this answer only.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    operation_id = "create_token",
    tag = "tokens",
    request_body = CreateToken,
    responses(
        (status = 201, description = "The new token with its secret", body = Created, links(
            ("delete" = (operation_id = "delete_token", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 404, description = "An app in `apps` does not exist (`not_found`)", body = ErrorBody),
        (status = 409, description = "A token of that name exists (`conflict`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("admin")))
)]
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

/// The calling token.
///
/// Its id, name, role and apps (never its secret): what a client shows its user, e.g.
/// which apps a scoped token covers.
#[utoipa::path(
    get,
    path = "/api/v1/token",
    operation_id = "get_current_token",
    tag = "tokens",
    responses(
        (status = 200, description = "The calling token", body = ApiToken),
    ),
    extensions(("x-picloud-access" = json!("any_token")))
)]
pub(super) async fn current(Extension(token): Extension<ApiToken>) -> ApiJson<ApiToken> {
    ApiJson(token)
}

/// List tokens (never their secrets).
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    operation_id = "list_tokens",
    tag = "tokens",
    responses(
        (status = 200, description = "The tokens, oldest first", body = TokenList),
    ),
    extensions(("x-picloud-access" = json!("admin")))
)]
pub(super) async fn list(
    State(deps): State<Arc<ManagerDeps>>,
) -> Result<ApiJson<TokenList>, ApiError> {
    let tokens = deps.store.tokens.list().await?;
    Ok(ApiJson(TokenList { tokens }))
}

/// Delete a token.
///
/// The last admin token cannot be deleted (409).
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    operation_id = "delete_token",
    tag = "tokens",
    params(("id" = TokenId, Path, description = "The token's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such token (`not_found`)", body = ErrorBody),
        (status = 409, description = "It is the last admin token (`conflict`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("admin")))
)]
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
