//! KV entries. Values are JSON; an entry whose `expires_at` is at or before now is
//! invisible to every read and is overwritten by the next write of its key.
//!
//! What must stay true:
//! - every statement is scoped by app; prefixes are ranges (`key >= p AND key < end`),
//!   never `LIKE` patterns, so `%`, `_` and `\` in keys are plain characters;
//! - `Incr` is one upsert whose arithmetic runs in SQL on the stored integer, so
//!   concurrent increments never lose an update; a stored value that is not a JSON
//!   integer, or a sum outside the 64-bit range, refuses the increment with
//!   `Conflict("kv integer")` and is left as it was;
//! - writes only happen through `apply_kv`, inside the caller's transaction.
use async_trait::async_trait;
use shared::event::KvWrite;
use shared::store::{KvEntry, KvRepository};
use shared::{AppName, StoreError};
use sqlx::Pool;

use crate::error::db;
use crate::sql::{Cols, Db, sql};
use crate::{app_missing, expiry, now, prefix_end};

/// The statements of `Kv`, with their arguments in placeholder order. Values go in and
/// come out as JSON text.
pub(crate) trait KvSql: Db {
    /// (app, key, now) -> an entry row (key, value, updated_at, expires_at) if live
    const GET: &'static str;
    /// (app, prefix, prefix end or NULL, after or NULL, now, limit) -> live entry rows by key
    const LIST: &'static str;
    /// (app, key, now): delete a live entry.
    const DELETE_LIVE: &'static str;
    /// (app, key)
    const DELETE: &'static str;
    /// (app, key, value, updated_at, expires_at): insert or replace.
    const SET: &'static str;
    /// (app, key, by, now): no row changed when the live value is no integer or the sum
    /// would overflow; an expired entry counts as missing.
    const INCR: &'static str;
    /// (app, now): drop the app's expired entries.
    const PURGE_EXPIRED: &'static str;
}

pub(crate) struct Kv<DB: Db>(pub(crate) Pool<DB>);

fn row_to_entry(row: &impl Cols) -> Result<KvEntry, StoreError> {
    Ok(KvEntry {
        key: row.string("key")?,
        value: row.json("value")?,
        updated_at: row.ts("updated_at")?,
        expires_at: row.opt_ts("expires_at")?,
    })
}

/// Apply `writes` in order inside the caller's transaction, then drop the app's expired
/// entries.
///
/// # Errors
/// `NotFound("app")` when the app does not exist; `Conflict("kv integer")` when `Incr`
/// meets a live value that is not a JSON integer.
pub(crate) async fn apply_kv<DB: KvSql>(
    conn: &mut DB::Connection,
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
                let json = serde_json::to_string(value).map_err(StoreError::backend)?;
                sql::<DB>(DB::SET)
                    .bind(app.as_str())
                    .bind(key)
                    .bind(json)
                    .bind(at)
                    .bind(expiry(at, *ttl))
                    .execute(&mut *conn)
                    .await
                    .map_err(app_missing)?;
            }
            KvWrite::Delete { key } => {
                sql::<DB>(DB::DELETE)
                    .bind(app.as_str())
                    .bind(key)
                    .execute(&mut *conn)
                    .await
                    .map_err(db)?;
            }
            KvWrite::Incr { key, by } => {
                let changed = sql::<DB>(DB::INCR)
                    .bind(app.as_str())
                    .bind(key)
                    .bind(*by)
                    .bind(at)
                    .execute(&mut *conn)
                    .await
                    .map_err(app_missing)?;
                if changed == 0 {
                    return Err(StoreError::Conflict("kv integer"));
                }
            }
        }
    }
    sql::<DB>(DB::PURGE_EXPIRED)
        .bind(app.as_str())
        .bind(at)
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}

#[async_trait]
impl<DB: KvSql> KvRepository for Kv<DB> {
    async fn get(&self, app: &AppName, key: &str) -> Result<Option<KvEntry>, StoreError> {
        let row = sql::<DB>(DB::GET)
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
        let rows = sql::<DB>(DB::LIST)
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
        let deleted = sql::<DB>(DB::DELETE_LIVE)
            .bind(app.as_str())
            .bind(key)
            .bind(now())
            .execute(&self.0)
            .await
            .map_err(db)?;
        Ok(deleted > 0)
    }
}
