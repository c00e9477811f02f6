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

/// The key check's rule, once the recorded fingerprint differs from the key's: with no
/// secret stored any key is fine; with one, only a database from before fingerprints
/// (`recorded` is `None`) may prove the key by opening it.
///
/// # Errors
/// `KeyMismatch` when a stored secret rules the key out; the backend's error when the
/// sample row cannot be read.
pub(crate) fn check_key<R: sqlx::Row>(
    recorded: Option<&str>,
    sample: Option<R>,
    secrets: &crate::crypto::SecretBox,
) -> Result<(), shared::StoreError>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    use crate::error::db;
    let Some(row) = sample else { return Ok(()) };
    let opens = recorded.is_none() && {
        let app: String = row.try_get("app").map_err(db)?;
        let name: String = row.try_get("name").map_err(db)?;
        let nonce: Vec<u8> = row.try_get("nonce").map_err(db)?;
        let ciphertext: Vec<u8> = row.try_get("ciphertext").map_err(db)?;
        shared::AppName::parse(&app)
            .is_ok_and(|app| secrets.open(&app, &name, &nonce, &ciphertext).is_ok())
    };
    if opens {
        Ok(())
    } else {
        Err(shared::StoreError::backend(crate::crypto::KeyMismatch))
    }
}
