//! KV entries on PostgreSQL. Values are JSONB; an entry whose `expires_at` is at or before
//! now is invisible to every read and is overwritten by the next write of its key.
//!
//! What must stay true:
//! - every statement is scoped by app; prefixes are ranges (`key >= p AND key < end`),
//!   never `LIKE` patterns, so `%`, `_` and `\` in keys are plain characters;
//! - `Incr` is one upsert whose arithmetic runs in SQL on the stored integer (the row lock
//!   of `ON CONFLICT DO UPDATE` orders concurrent increments), so none is ever lost; a
//!   stored value that is not a JSON integer, or a sum outside the 64-bit range (checked in
//!   `numeric` before the `int8` arithmetic could fail), refuses the increment with
//!   `Conflict("kv integer")` and is left as it was, as on SQLite;
//! - writes only happen through `apply_kv`, inside the caller's transaction.
use async_trait::async_trait;
use serde_json::Value;
use shared::event::KvWrite;
use shared::store::{KvEntry, KvRepository};
use shared::{AppName, StoreError};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::types::Json;

use crate::error::db;
use crate::{app_missing, expiry, now, prefix_end};

const GET: &str = "SELECT key, value, updated_at, expires_at FROM kv
     WHERE app = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > $3)";
const LIST: &str = r#"SELECT key, value, updated_at, expires_at FROM kv
     WHERE app = $1 AND key >= ($2::text COLLATE "C")
       AND ($3::text IS NULL OR key < ($3::text COLLATE "C"))
       AND ($4::text IS NULL OR key > ($4::text COLLATE "C"))
       AND (expires_at IS NULL OR expires_at > $5)
     ORDER BY key LIMIT $6"#;
const DELETE_LIVE: &str =
    "DELETE FROM kv WHERE app = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > $3)";
const DELETE: &str = "DELETE FROM kv WHERE app = $1 AND key = $2";
const SET: &str = "INSERT INTO kv (app, key, value, updated_at, expires_at)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (app, key) DO UPDATE SET
         value = excluded.value, updated_at = excluded.updated_at,
         expires_at = excluded.expires_at";
/// An expired entry counts as missing (starts from 0, loses its expiry); a live one keeps
/// its expiry. The `WHERE` (checked before the new values are computed) refuses a live
/// value that is not a JSON integer, which changes no row.
const INCR: &str = "INSERT INTO kv (app, key, value, updated_at, expires_at)
     VALUES ($1, $2, to_jsonb($3::int8), $4, NULL)
     ON CONFLICT (app, key) DO UPDATE SET
         value = CASE WHEN kv.expires_at IS NOT NULL AND kv.expires_at <= $4
                      THEN to_jsonb($3::int8)
                      ELSE to_jsonb((kv.value #>> '{}')::int8 + $3::int8) END,
         updated_at = $4,
         expires_at = CASE WHEN kv.expires_at IS NOT NULL AND kv.expires_at <= $4
                           THEN NULL ELSE kv.expires_at END
     WHERE (kv.expires_at IS NOT NULL AND kv.expires_at <= $4)
        OR CASE WHEN jsonb_typeof(kv.value) <> 'number' THEN false
                WHEN (kv.value #>> '{}') !~ '^-?[0-9]+$' THEN false
                ELSE (kv.value #>> '{}')::numeric + $3::numeric
                     BETWEEN -9223372036854775808 AND 9223372036854775807 END";
const PURGE_EXPIRED: &str =
    "DELETE FROM kv WHERE app = $1 AND expires_at IS NOT NULL AND expires_at <= $2";

pub(super) struct PgKv(pub(super) PgPool);

fn row_to_entry(row: &PgRow) -> Result<KvEntry, StoreError> {
    let value: Json<Value> = row.try_get("value").map_err(db)?;
    Ok(KvEntry {
        key: row.try_get("key").map_err(db)?,
        value: value.0,
        updated_at: row.try_get("updated_at").map_err(db)?,
        expires_at: row.try_get("expires_at").map_err(db)?,
    })
}

/// Apply `writes` in order inside the caller's transaction, then drop the app's expired
/// entries.
///
/// # Errors
/// `NotFound("app")` when the app does not exist; `Conflict("kv integer")` when `Incr`
/// meets a live value that is not a JSON integer.
pub(crate) async fn apply_kv(
    tx: &mut PgConnection,
    app: &AppName,
    writes: &[KvWrite],
) -> Result<(), StoreError> {
    if writes.is_empty() {
        return Ok(());
    }
    let at = now();
    for write in writes {
        match write {
            KvWrite::Set { key, value, ttl } => {
                sqlx::query(SET)
                    .bind(app.as_str())
                    .bind(key)
                    .bind(Json(value))
                    .bind(at)
                    .bind(expiry(at, *ttl))
                    .execute(&mut *tx)
                    .await
                    .map_err(app_missing)?;
            }
            KvWrite::Delete { key } => {
                sqlx::query(DELETE)
                    .bind(app.as_str())
                    .bind(key)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            KvWrite::Incr { key, by } => {
                let done = sqlx::query(INCR)
                    .bind(app.as_str())
                    .bind(key)
                    .bind(*by)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(app_missing)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::Conflict("kv integer"));
                }
            }
        }
    }
    sqlx::query(PURGE_EXPIRED)
        .bind(app.as_str())
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    Ok(())
}

#[async_trait]
impl KvRepository for PgKv {
    async fn get(&self, app: &AppName, key: &str) -> Result<Option<KvEntry>, StoreError> {
        let row = sqlx::query(GET)
            .bind(app.as_str())
            .bind(key)
            .bind(now())
            .fetch_optional(&self.0)
            .await
            .map_err(db)?;
        row.as_ref().map(row_to_entry).transpose()
    }

    async fn list(
        &self,
        app: &AppName,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<KvEntry>, StoreError> {
        let rows = sqlx::query(LIST)
            .bind(app.as_str())
            .bind(prefix)
            .bind(prefix_end(prefix))
            .bind(after)
            .bind(now())
            .bind(i64::from(limit))
            .fetch_all(&self.0)
            .await
            .map_err(db)?;
        rows.iter().map(row_to_entry).collect()
    }

    async fn delete(&self, app: &AppName, key: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(DELETE_LIVE)
            .bind(app.as_str())
            .bind(key)
            .bind(now())
            .execute(&self.0)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}
