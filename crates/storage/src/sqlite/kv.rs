//! KV entries on SQLite. Values are JSON text; an entry whose `expires_at` is at or before
//! now is invisible to every read and is overwritten by the next write of its key.
//!
//! What must stay true:
//! - every statement is scoped by app; prefixes are ranges (`key >= p AND key < end`),
//!   never `LIKE` patterns, so `%`, `_` and `\` in keys are plain characters;
//! - `Incr` is one upsert whose arithmetic runs in SQL on the stored integer, so
//!   concurrent increments never lose an update; a stored value that is not a JSON integer,
//!   or a sum outside the 64-bit range (SQLite would silently make it a float), refuses the
//!   increment with `Conflict("kv integer")` and is left as it was;
//! - writes only happen through `apply_kv`, inside the caller's transaction.
use async_trait::async_trait;
use shared::event::KvWrite;
use shared::store::{KvEntry, KvRepository};
use shared::{AppName, StoreError};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};

use super::{parse_ts, ts};
use crate::error::db;
use crate::{app_missing, expiry, now, prefix_end};

const GET: &str = "SELECT key, value, updated_at, expires_at FROM kv
     WHERE app = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)";
const LIST: &str = "SELECT key, value, updated_at, expires_at FROM kv
     WHERE app = ?1 AND key >= ?2 AND (?3 IS NULL OR key < ?3) AND (?4 IS NULL OR key > ?4)
       AND (expires_at IS NULL OR expires_at > ?5)
     ORDER BY key LIMIT ?6";
const DELETE_LIVE: &str =
    "DELETE FROM kv WHERE app = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)";
const DELETE: &str = "DELETE FROM kv WHERE app = ?1 AND key = ?2";
const SET: &str = "INSERT INTO kv (app, key, value, updated_at, expires_at)
     VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (app, key) DO UPDATE SET
         value = excluded.value, updated_at = excluded.updated_at,
         expires_at = excluded.expires_at";
/// An expired entry counts as missing (starts from 0, loses its expiry); a live one keeps
/// its expiry. The `WHERE` refuses a live non-integer, which changes no row.
const INCR: &str = "INSERT INTO kv (app, key, value, updated_at, expires_at)
     VALUES (?1, ?2, ?3, ?4, NULL)
     ON CONFLICT (app, key) DO UPDATE SET
         value = CASE WHEN kv.expires_at IS NOT NULL AND kv.expires_at <= ?4
                      THEN ?3 ELSE CAST(kv.value AS INTEGER) + ?3 END,
         updated_at = ?4,
         expires_at = CASE WHEN kv.expires_at IS NOT NULL AND kv.expires_at <= ?4
                           THEN NULL ELSE kv.expires_at END
     WHERE (kv.expires_at IS NOT NULL AND kv.expires_at <= ?4)
        OR (json_type(kv.value) = 'integer'
            AND CASE WHEN ?3 >= 0 THEN CAST(kv.value AS INTEGER) <= 9223372036854775807 - ?3
                     ELSE CAST(kv.value AS INTEGER) >= -9223372036854775807 - 1 - ?3 END)";
const PURGE_EXPIRED: &str =
    "DELETE FROM kv WHERE app = ?1 AND expires_at IS NOT NULL AND expires_at <= ?2";

pub(super) struct SqliteKv(pub(super) SqlitePool);

fn row_to_entry(row: &SqliteRow) -> Result<KvEntry, StoreError> {
    let value: String = row.try_get("value").map_err(db)?;
    let expires_at: Option<String> = row.try_get("expires_at").map_err(db)?;
    Ok(KvEntry {
        key: row.try_get("key").map_err(db)?,
        value: serde_json::from_str(&value).map_err(StoreError::backend)?,
        updated_at: parse_ts(row.try_get("updated_at").map_err(db)?)?,
        expires_at: expires_at.as_deref().map(parse_ts).transpose()?,
    })
}

/// Apply `writes` in order inside the caller's transaction, then drop the app's expired
/// entries.
///
/// # Errors
/// `NotFound("app")` when the app does not exist; `Conflict("kv integer")` when `Incr`
/// meets a live value that is not a JSON integer.
pub(crate) async fn apply_kv(
    tx: &mut SqliteConnection,
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
                sqlx::query(SET)
                    .bind(app.as_str())
                    .bind(key)
                    .bind(json)
                    .bind(ts(at))
                    .bind(expiry(at, *ttl).map(ts))
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
                    .bind(ts(at))
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
        .bind(ts(at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    Ok(())
}

#[async_trait]
impl KvRepository for SqliteKv {
    async fn get(&self, app: &AppName, key: &str) -> Result<Option<KvEntry>, StoreError> {
        let row = sqlx::query(GET)
            .bind(app.as_str())
            .bind(key)
            .bind(ts(now()))
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
            .bind(ts(now()))
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
            .bind(ts(now()))
            .execute(&self.0)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn store_with_app() -> (tempfile::TempDir, shared::Store, SqlitePool, AppName) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let store = crate::connect(&url).await.expect("connect");
        let pool = SqlitePool::connect(&url).await.expect("pool");
        let app = AppName::parse("shop").expect("app");
        store.apps.create(&app).await.expect("create app");
        (dir, store, pool, app)
    }

    async fn apply(pool: &SqlitePool, app: &AppName, writes: &[KvWrite]) -> Result<(), StoreError> {
        let mut tx = super::super::begin_write(pool).await?;
        apply_kv(&mut tx, app, writes).await?;
        tx.commit().await.map_err(db)
    }

    #[tokio::test]
    async fn twenty_concurrent_increments_through_apply_kv_all_count() {
        let (_dir, store, pool, app) = store_with_app().await;
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (pool, app) = (pool.clone(), app.clone());
                tokio::spawn(async move {
                    apply(
                        &pool,
                        &app,
                        &[KvWrite::Incr {
                            key: "n".into(),
                            by: 2,
                        }],
                    )
                    .await
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("join").expect("incr");
        }
        let entry = store.kv.get(&app, "n").await.expect("get").expect("entry");
        assert_eq!(entry.value, json!(40));
    }

    #[tokio::test]
    async fn an_increment_of_a_string_is_refused_and_rolls_back_the_whole_apply() {
        let (_dir, store, pool, app) = store_with_app().await;
        apply(
            &pool,
            &app,
            &[KvWrite::Set {
                key: "s".into(),
                value: json!("x"),
                ttl: None,
            }],
        )
        .await
        .expect("set");
        let err = apply(
            &pool,
            &app,
            &[
                KvWrite::Set {
                    key: "other".into(),
                    value: json!(1),
                    ttl: None,
                },
                KvWrite::Incr {
                    key: "s".into(),
                    by: 1,
                },
            ],
        )
        .await
        .expect_err("incr of a string");
        assert!(matches!(err, StoreError::Conflict("kv integer")), "{err:?}");
        assert_eq!(
            store
                .kv
                .get(&app, "s")
                .await
                .expect("get")
                .expect("kept")
                .value,
            json!("x")
        );
        assert!(store.kv.get(&app, "other").await.expect("get").is_none());
    }

    #[tokio::test]
    async fn writes_for_a_missing_app_are_not_found() {
        let (_dir, _store, pool, _app) = store_with_app().await;
        let ghost = AppName::parse("ghost").expect("app");
        let err = apply(
            &pool,
            &ghost,
            &[KvWrite::Incr {
                key: "n".into(),
                by: 1,
            }],
        )
        .await
        .expect_err("no app");
        assert!(matches!(err, StoreError::NotFound("app")), "{err:?}");
    }
}
