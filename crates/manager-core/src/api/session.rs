//! `/api/v1/sessions` and `/api/v1/session`: the dashboard's sign-in.
//!
//! Signing in with a token opens a session: a fresh random secret goes to the browser in an
//! `HttpOnly`, `SameSite=Strict` cookie scoped to `/api/v1`, and only its hash is stored, with
//! an expiry. The session acts as the token that opened it (its role and apps) and dies with
//! it. Every state-changing request made with the cookie must carry `X-CSRF-Token`, a value
//! derived from the session's secret that page scripts read from `GET /api/v1/session`
//! (which another origin cannot read). Bearer-token calls are unchanged.
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::ErrorBody;
use shared::store::ApiToken;
use utoipa::ToSchema;

use super::ManagerDeps;
use super::error::ApiError;
use super::json::ApiJson;
use crate::auth::{self, ActiveSession};

/// Signing in: an API token's secret.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SignIn {
    /// An API token's secret.
    token: String,
}

/// A dashboard session: the token it acts as, its CSRF token and its end.
#[derive(Serialize, ToSchema)]
pub(super) struct SessionInfo {
    token: ApiToken,
    /// Send it back as `X-CSRF-Token` on every POST, PUT, PATCH and DELETE.
    csrf_token: String,
    expires_at: DateTime<Utc>,
}

/// Sign in to the dashboard.
///
/// Opens a session acting as the token: `201` sets an HttpOnly, SameSite=Strict cookie
/// (`picloud_session`, `Path=/api/v1`); a token that is not valid gets `401` and no session.
#[utoipa::path(
    post,
    path = "/api/v1/sessions",
    operation_id = "create_session",
    tag = "sessions",
    security(()),
    request_body = SignIn,
    responses(
        (status = 201, description = "The session; its cookie is in `Set-Cookie`", body = SessionInfo),
        (status = 401, description = "The token is not valid (`unauthorized`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("public")))
)]
#[tracing::instrument(skip_all)]
pub(super) async fn create(
    State(deps): State<Arc<ManagerDeps>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SignIn>,
) -> Result<Response, ApiError> {
    let Some(token) = deps
        .store
        .tokens
        .find_by_hash(&auth::hash_token(body.token.trim()))
        .await?
    else {
        tracing::info!("sign-in with a token that is not valid");
        return Err(ApiError::Unauthorized);
    };
    let secret = auth::generate_session_secret();
    let now = Utc::now();
    let expires_at = now + auth::SESSION_TTL;
    deps.store
        .tokens
        .create_session(&auth::hash_token(&secret), token.id, now, expires_at)
        .await?;
    tracing::info!(token = %token.id, "session opened");
    let cookie = auth::session_cookie(&secret, is_https(&headers));
    let info = SessionInfo {
        csrf_token: auth::csrf_token(&secret),
        token,
        expires_at,
    };
    Ok(with_cookie(
        (StatusCode::CREATED, ApiJson(info)).into_response(),
        &cookie,
    ))
}

/// The calling session.
///
/// The signed-in token, the CSRF token to send as `X-CSRF-Token` and the expiry; `404`
/// for a bearer-token call.
#[utoipa::path(
    get,
    path = "/api/v1/session",
    operation_id = "get_session",
    tag = "sessions",
    responses(
        (status = 200, description = "The session", body = SessionInfo),
        (status = 404, description = "The call has no session (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("any_token")))
)]
pub(super) async fn current(
    Extension(token): Extension<ApiToken>,
    session: Option<Extension<ActiveSession>>,
) -> Result<ApiJson<SessionInfo>, ApiError> {
    let Some(Extension(session)) = session else {
        return Err(no_session());
    };
    Ok(ApiJson(SessionInfo {
        token,
        csrf_token: session.csrf_token,
        expires_at: session.expires_at,
    }))
}

/// Sign out.
///
/// Ends the calling session on the server: its cookie no longer works anywhere.
#[utoipa::path(
    delete,
    path = "/api/v1/session",
    operation_id = "delete_session",
    tag = "sessions",
    responses(
        (status = 204, description = "Signed out; the cookie is cleared"),
        (status = 404, description = "The call has no session (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("any_token")))
)]
pub(super) async fn delete(
    State(deps): State<Arc<ManagerDeps>>,
    headers: HeaderMap,
    session: Option<Extension<ActiveSession>>,
) -> Result<Response, ApiError> {
    let Some(Extension(session)) = session else {
        return Err(no_session());
    };
    deps.store
        .tokens
        .delete_session(&session.secret_hash)
        .await?;
    Ok(with_cookie(
        StatusCode::NO_CONTENT.into_response(),
        &auth::cleared_cookie(is_https(&headers)),
    ))
}

fn no_session() -> ApiError {
    ApiError::NotFound {
        kind: "session",
        name: "current".into(),
    }
}

/// Behind a TLS-terminating proxy the cookie is also `Secure`.
fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}
