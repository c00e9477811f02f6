//! The `server_meta` rows both backends keep (migration 0004): facts a server checks when
//! it starts, not app data.
//!
//! - `secrets_key_fingerprint`: checked at connect, so a missing or replaced key file is an
//!   error at start (`crypto::KeyMismatch`) while secrets exist, instead of every secret
//!   turning unreadable while the API still lists it;
//! - `bootstrap_token_hash`: the admin token last installed from `PICLOUD_ADMIN_TOKEN`,
//!   revoked when that value changes (`TokenRepository::install_bootstrap`).

/// The row holding `crypto::key_fingerprint` of the key that sealed the secrets.
pub(crate) const KEY_FINGERPRINT: &str = "secrets_key_fingerprint";
/// The row holding the hash of the bootstrap admin token.
pub(crate) const BOOTSTRAP_TOKEN: &str = "bootstrap_token_hash";
