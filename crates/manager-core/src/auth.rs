//! Bearer tokens for the admin API.
//!
//! A token is `pct_` + 64 hex characters of 32 random bytes. Only its SHA-256 hash is
//! stored; the secret exists in the one answer that creates it (or in the operator's
//! `PICLOUD_ADMIN_TOKEN`). SHA-256 of a short string takes microseconds, so it is computed
//! inline rather than on a blocking thread: a slow password hash is not needed because the
//! secret has 256 bits of entropy.
//!
//! The dashboard's sessions (`api::session`) authenticate the same way: a cookie carrying a
//! random secret whose hash is stored, acting as the token that opened it. A request made
//! with the cookie that changes state must carry the session's CSRF token.
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use rand::Rng;
use sha2::{Digest, Sha256};
use shared::store::{Bootstrap, NewToken};
use shared::{Store, StoreError};

use crate::api::{ApiError, ManagerDeps};

/// The name of the token created at first start or taken from the environment.
const ADMIN_TOKEN_NAME: &str = "admin";

/// The SHA-256 of a token secret, as lowercase hex: what the store keeps.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A fresh secret: `pct_` + 64 hex characters of 32 random bytes.
pub(crate) fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    format!("pct_{}", hex::encode(bytes))
}

/// Make sure an admin token exists at start (role `admin`, every app).
///
/// If `from_env` is `Some` (and not blank), it is installed as the bootstrap token under
/// the name `admin` and `None` is returned: a changed value revokes the token of the
/// previous one, and a token revoked through the API stays revoked while the value stays
/// the same (`TokenRepository::install_bootstrap`). Otherwise, when no token exists at
/// all, one is created (name `admin`) and its secret returned for the caller to print once.
///
/// # Errors
/// When the store fails.
pub async fn bootstrap_admin_token(
    store: &Store,
    from_env: Option<&str>,
) -> Result<Option<String>, StoreError> {
    if let Some(secret) = from_env.map(str::trim).filter(|s| !s.is_empty()) {
        let hash = hash_token(secret);
        match store
            .tokens
            .install_bootstrap(ADMIN_TOKEN_NAME, &hash)
            .await?
        {
            Bootstrap::Installed { revoked } => {
                tracing::info!(
                    revoked_previous = revoked,
                    "installed the admin token from the environment"
                );
            }
            Bootstrap::Unchanged => {
                if store.tokens.find_by_hash(&hash).await?.is_none() {
                    tracing::warn!(
                        "the admin token from the environment was revoked through the API \
                         and stays revoked; set a new value to install another"
                    );
                }
            }
        }
        return Ok(None);
    }
    if store.tokens.count().await? > 0 {
        return Ok(None);
    }
    let secret = generate_token();
    store
        .tokens
        .create(&NewToken::admin(ADMIN_TOKEN_NAME, &hash_token(&secret)))
        .await?;
    Ok(Some(secret))
}

/// The name of the dashboard's session cookie.
pub(crate) const SESSION_COOKIE: &str = "picloud_session";
/// The header a session's state-changing requests carry.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts from sign-in.
pub(crate) const SESSION_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(12);

/// A fresh session secret: `pcs_` + 64 hex characters of 32 random bytes.
pub(crate) fn generate_session_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    format!("pcs_{}", hex::encode(bytes))
}

/// The CSRF token of a session: derived from its secret, so it needs no storage and no
/// other session's value passes.
pub(crate) fn csrf_token(session_secret: &str) -> String {
    hex::encode(Sha256::digest(
        format!("picloud-csrf:{session_secret}").as_bytes(),
    ))
}

/// The `Set-Cookie` value that gives the browser its session.
pub(crate) fn session_cookie(secret: &str, secure: bool) -> String {
    let max_age = SESSION_TTL.num_seconds();
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={secret}; Path=/api/v1; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    )
}

/// The `Set-Cookie` value that makes the browser forget its session.
pub(crate) fn cleared_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}=; Path=/api/v1; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

/// What `require_token` knows of the session a request came with (absent for bearer calls).
#[derive(Debug, Clone)]
pub(crate) struct ActiveSession {
    pub(crate) secret_hash: String,
    pub(crate) csrf_token: String,
    pub(crate) expires_at: chrono::DateTime<Utc>,
}

/// The middleware on every authenticated route: `Authorization: Bearer <token>` whose
/// hash is stored, or else a live session cookie (whose state-changing requests must carry
/// the session's `X-CSRF-Token`); otherwise `401` with `WWW-Authenticate: Bearer`.
pub(crate) async fn require_token(
    State(deps): State<Arc<ManagerDeps>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(secret) = bearer_secret(&req) else {
        return match cookie_secret(&req).map(str::to_owned) {
            Some(secret) => by_session(&deps, &secret, req, next).await,
            None => ApiError::Unauthorized.into_response(),
        };
    };
    match deps.store.tokens.find_by_hash(&hash_token(secret)).await {
        Ok(Some(token)) => {
            tracing::debug!(token = %token.id, "authenticated");
            req.extensions_mut().insert(token);
            next.run(req).await
        }
        Ok(None) => ApiError::Unauthorized.into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn by_session(deps: &ManagerDeps, secret: &str, mut req: Request, next: Next) -> Response {
    let secret_hash = hash_token(secret);
    let session = match deps
        .store
        .tokens
        .find_session(&secret_hash, Utc::now())
        .await
    {
        Ok(Some(session)) => session,
        Ok(None) => return ApiError::Unauthorized.into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let csrf = csrf_token(secret);
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let sent = req
            .headers()
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !same_bytes(sent, csrf.as_bytes()) {
            tracing::info!(token = %session.token.id, "refused a session request without its CSRF token");
            return ApiError::Forbidden(
                "this request needs the session's X-CSRF-Token header".into(),
            )
            .into_response();
        }
    }
    tracing::debug!(token = %session.token.id, "authenticated by session");
    req.extensions_mut().insert(ActiveSession {
        secret_hash,
        csrf_token: csrf,
        expires_at: session.expires_at,
    });
    req.extensions_mut().insert(session.token);
    next.run(req).await
}

/// Compares in time that depends only on the lengths.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session cookie's value, if the request has one.
fn cookie_secret(req: &Request) -> Option<&str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == SESSION_COOKIE && !value.is_empty())
        .map(|(_, value)| value)
}

fn bearer_secret(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = value.split_once(' ')?;
    let secret = secret.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !secret.is_empty()).then_some(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_the_prefix_and_64_hex_characters() {
        let t = generate_token();
        let hex_part = t.strip_prefix("pct_").expect("prefix");
        assert_eq!(hex_part.len(), 64);
        assert!(hex_part.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(t, generate_token());
    }

    #[test]
    fn the_hash_is_sha256_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn only_a_nonempty_bearer_credential_is_read() {
        let req = |v: &str| {
            Request::builder()
                .header(header::AUTHORIZATION, v)
                .body(axum::body::Body::empty())
                .expect("request")
        };
        assert_eq!(bearer_secret(&req("Bearer pct_x")), Some("pct_x"));
        assert_eq!(bearer_secret(&req("bearer pct_x")), Some("pct_x"));
        assert_eq!(bearer_secret(&req("Basic pct_x")), None);
        assert_eq!(bearer_secret(&req("Bearer ")), None);
        assert_eq!(bearer_secret(&req("pct_x")), None);
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_csrf_tokens_differ_per_session() {
        let req = Request::builder()
            .header(header::COOKIE, "a=1; picloud_session=pcs_x; b=2")
            .body(axum::body::Body::empty())
            .expect("request");
        assert_eq!(cookie_secret(&req), Some("pcs_x"));
        assert_ne!(csrf_token("pcs_a"), csrf_token("pcs_b"));
        assert!(same_bytes(b"abc", b"abc"));
        assert!(!same_bytes(b"abc", b"abd"));
        assert!(!same_bytes(b"abc", b"ab"));
        let cookie = session_cookie("pcs_x", false);
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Path=/api/v1",
            "Max-Age=43200",
        ] {
            assert!(cookie.contains(part), "{cookie}");
        }
        assert!(!cookie.contains("Secure"));
        assert!(session_cookie("pcs_x", true).ends_with("; Secure"));
    }
}
