//! Realtime subscription tokens: `base64url(JSON claims) "." base64url(HMAC-SHA256)`, both
//! without padding, the MAC taken over the first part's text. An app's script mints them
//! (`realtime::token`) with the app's key; the stream checks them with the same key, so
//! rotating the key revokes every token made before.
//!
//! What must stay true: a token is accepted only with a valid MAC under the app's current
//! key, before its expiry, for its own app, and only for the topics it names.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::hmac::{constant_time_eq, hmac_sha256};
use crate::ids::{AppName, ChannelName};

/// The longest token accepted; longer input is refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The longest `sub` a token carries.
pub const MAX_SUBJECT_BYTES: usize = 256;
/// Bytes in an app's signing key.
pub const KEY_BYTES: usize = 32;

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub app: AppName,
    pub topics: Vec<ChannelName>,
    /// Who the app minted it for (its own user id, say); opaque to PiCloud.
    pub sub: String,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: i64,
}

/// Why a token was refused. The text is safe to show the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signature is not valid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
}

/// Sign `claims` with `key`.
pub fn mint(key: &[u8], claims: &Claims) -> String {
    let json = serde_json::to_vec(claims).unwrap_or_default();
    let body = URL_SAFE_NO_PAD.encode(json);
    let mac = URL_SAFE_NO_PAD.encode(hmac_sha256(key, body.as_bytes()));
    format!("{body}.{mac}")
}

/// The claims of `token` if `key` signed it and it has not expired at `now` (Unix seconds).
///
/// # Errors
/// `Malformed`, `BadSignature` or `Expired`; the signature is checked before anything in
/// the claims is believed.
pub fn verify(key: &[u8], token: &str, now: i64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let (body, mac) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let mac = URL_SAFE_NO_PAD
        .decode(mac)
        .map_err(|_| TokenError::Malformed)?;
    if !constant_time_eq(&mac, &hmac_sha256(key, body.as_bytes())) {
        return Err(TokenError::BadSignature);
    }
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// How many streams are open per topic of an app, on this node: what the admin API's
/// topic list shows. The orchestrator's realtime hub implements it.
pub trait Subscribers: Send + Sync {
    /// (topic, open streams naming it) for every topic with at least one.
    fn counts(&self, app: &AppName) -> Vec<(ChannelName, usize)>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            app: AppName::parse("shop").unwrap(),
            topics: vec![ChannelName::parse("orders").unwrap()],
            sub: "user-42".into(),
            exp,
        }
    }

    #[test]
    fn a_minted_token_verifies_with_its_key_until_it_expires() {
        let token = mint(b"k1", &claims(100));
        assert_eq!(verify(b"k1", &token, 99), Ok(claims(100)));
        assert_eq!(verify(b"k1", &token, 100), Err(TokenError::Expired));
        assert_eq!(verify(b"k2", &token, 99), Err(TokenError::BadSignature));
    }

    #[test]
    fn a_changed_claim_or_garbage_is_refused() {
        let token = mint(b"k1", &claims(100));
        let (_, mac) = token.split_once('.').unwrap();
        let forged = format!(
            "{}.{mac}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(10_000)).unwrap())
        );
        assert_eq!(verify(b"k1", &forged, 99), Err(TokenError::BadSignature));
        for garbage in [
            "",
            "abc",
            "a.b.c",
            "!!.!!",
            &"x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert!(verify(b"k1", garbage, 0).is_err(), "{garbage:?}");
        }
        // Signed, but not claims.
        let body = URL_SAFE_NO_PAD.encode(b"[1,2]");
        let mac = URL_SAFE_NO_PAD.encode(hmac_sha256(b"k1", body.as_bytes()));
        assert_eq!(
            verify(b"k1", &format!("{body}.{mac}"), 0),
            Err(TokenError::Malformed)
        );
    }
}
