//! `server_meta` on SQLite: the secrets key's fingerprint and the bootstrap token's hash.
use shared::StoreError;
use sqlx::sqlite::SqlitePool;

use super::begin_write;
use crate::crypto::SecretBox;
use crate::error::db;
use crate::meta::{BOOTSTRAP_TOKEN, KEY_FINGERPRINT, check_key};

const GET: &str = "SELECT value FROM server_meta WHERE key = ?";
const SET: &str = "INSERT INTO server_meta (key, value) VALUES (?, ?) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";
const ONE_SECRET: &str = "SELECT app, name, nonce, ciphertext FROM app_secrets LIMIT 1";

/// Refuse a key that cannot open the stored secrets; record the key's fingerprint.
///
/// The fingerprint decides when one is recorded; a database from before fingerprints
/// tries its key on one stored secret instead. With no secrets stored, any key is fine
/// and becomes the recorded one.
pub(super) async fn check_secret_key(
    pool: &SqlitePool,
    secrets: &SecretBox,
    fingerprint: &str,
) -> Result<(), StoreError> {
    let mut tx = begin_write(pool).await?;
    let recorded: Option<String> = sqlx::query_scalar(GET)
        .bind(KEY_FINGERPRINT)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
    if recorded.as_deref() == Some(fingerprint) {
        return Ok(());
    }
    let sample = sqlx::query(ONE_SECRET)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
    check_key(recorded.as_deref(), sample, secrets)?;
    sqlx::query(SET)
        .bind(KEY_FINGERPRINT)
        .bind(fingerprint)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)
}

/// See `TokenRepository::install_bootstrap`.
pub(super) async fn install_bootstrap(
    pool: &SqlitePool,
    name: &str,
    secret_hash: &str,
) -> Result<shared::store::Bootstrap, StoreError> {
    let mut tx = begin_write(pool).await?;
    let previous: Option<String> = sqlx::query_scalar(GET)
        .bind(BOOTSTRAP_TOKEN)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
    if previous.as_deref() == Some(secret_hash) {
        return Ok(shared::store::Bootstrap::Unchanged);
    }
    let revoked = match &previous {
        Some(old) => {
            sqlx::query("DELETE FROM api_tokens WHERE secret_hash = ?")
                .bind(old)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected()
                > 0
        }
        None => false,
    };
    sqlx::query(
        "INSERT INTO api_tokens (id, name, secret_hash, created_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (secret_hash) DO NOTHING",
    )
    .bind(shared::TokenId::new().to_string())
    .bind(name)
    .bind(secret_hash)
    .bind(super::ts(crate::now()))
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    sqlx::query(SET)
        .bind(BOOTSTRAP_TOKEN)
        .bind(secret_hash)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(shared::store::Bootstrap::Installed { revoked })
}
