//! Bearer tokens for the admin API.
//!
//! A token is `pct_` + 64 hex characters of 32 random bytes. Only its SHA-256 hash is
//! stored; the secret exists in the one answer that creates it (or in the operator's
//! `PICLOUD_ADMIN_TOKEN`). SHA-256 of a short string takes microseconds, so it is computed
//! inline rather than on a blocking thread: a slow password hash is not needed because the
//! secret has 256 bits of entropy.
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
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

/// The middleware on every authenticated route: `Authorization: Bearer <token>` whose
/// hash is stored, or `401` with `WWW-Authenticate: Bearer`.
pub(crate) async fn require_token(
    State(deps): State<Arc<ManagerDeps>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(secret) = bearer_secret(&req) else {
        return ApiError::Unauthorized.into_response();
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
}
