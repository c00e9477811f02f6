//! Blob names on PostgreSQL: each (app, name) points at one object of the object store.
//!
//! What must stay true:
//! - every statement is scoped by app, prefixes are ranges, never `LIKE` patterns;
//! - whenever a name stops pointing at an object (overwritten or deleted), that object's
//!   key is handed back to the caller, who removes it after the commit. Under READ
//!   COMMITTED two transactions may write one name at once, so a put locks the existing
//!   row (`FOR UPDATE` sees the newest committed object) before replacing it, and inserts
//!   only when no row exists (`ON CONFLICT DO NOTHING`, then retry the lock): the object
//!   each writer replaces is exactly the one it hands back, none is forgotten.
use async_trait::async_trait;
use shared::event::BlobWrite;
use shared::store::{BlobMeta, BlobRepository};
use shared::{AppName, StoreError};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgPool, PgRow};

use crate::error::db;
use crate::{app_missing, now, prefix_end};

const GET: &str = "SELECT name, object, size, content_type, updated_at FROM blobs
     WHERE app = $1 AND name = $2";
const LIST: &str = r#"SELECT name, object, size, content_type, updated_at FROM blobs
     WHERE app = $1 AND name >= ($2::text COLLATE "C")
       AND ($3::text IS NULL OR name < ($3::text COLLATE "C"))
       AND ($4::text IS NULL OR name > ($4::text COLLATE "C"))
     ORDER BY name LIMIT $5"#;
const DELETE: &str = "DELETE FROM blobs WHERE app = $1 AND name = $2 RETURNING object";
const LOCK_OLD: &str = "SELECT object FROM blobs WHERE app = $1 AND name = $2 FOR UPDATE";
const UPDATE: &str = "UPDATE blobs SET object = $3, size = $4, content_type = $5, updated_at = $6
     WHERE app = $1 AND name = $2";
const INSERT_NEW: &str = "INSERT INTO blobs (app, name, object, size, content_type, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (app, name) DO NOTHING";
/// Lock-or-insert rounds before giving up; a second round only happens when another
/// transaction inserted the same name at the same moment, a third when it was also deleted.
const PUT_ROUNDS: usize = 4;

pub(super) struct PgBlobs(pub(super) PgPool);

fn row_to_meta(row: &PgRow) -> Result<BlobMeta, StoreError> {
    let size: i64 = row.try_get("size").map_err(db)?;
    Ok(BlobMeta {
        name: row.try_get("name").map_err(db)?,
        size: u64::try_from(size).map_err(StoreError::backend)?,
        content_type: row.try_get("content_type").map_err(db)?,
        object: row.try_get("object").map_err(db)?,
        updated_at: row.try_get("updated_at").map_err(db)?,
    })
}

/// Point `name` at `object`; returns the object it pointed at before, if any.
async fn put_one(
    tx: &mut PgConnection,
    app: &AppName,
    name: &str,
    object: &str,
    size: i64,
    content_type: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let at = now();
    for _ in 0..PUT_ROUNDS {
        let old: Option<String> = sqlx::query_scalar(LOCK_OLD)
            .bind(app.as_str())
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if let Some(old) = old {
            sqlx::query(UPDATE)
                .bind(app.as_str())
                .bind(name)
                .bind(object)
                .bind(size)
                .bind(content_type)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            return Ok(Some(old));
        }
        let inserted = sqlx::query(INSERT_NEW)
            .bind(app.as_str())
            .bind(name)
            .bind(object)
            .bind(size)
            .bind(content_type)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(app_missing)?;
        if inserted.rows_affected() == 1 {
            return Ok(None);
        }
    }
    Err(StoreError::Busy)
}

/// Apply `writes` in order inside the caller's transaction. Returns the objects no longer
/// referenced: remove them once the transaction commits.
///
/// # Errors
/// `NotFound("app")` when the app does not exist; `Busy` when one name is raced past
/// `PUT_ROUNDS` rounds.
pub(crate) async fn apply_blobs(
    tx: &mut PgConnection,
    app: &AppName,
    writes: &[BlobWrite],
) -> Result<Vec<String>, StoreError> {
    let mut unreferenced = Vec::new();
    for write in writes {
        match write {
            BlobWrite::Put {
                name,
                object,
                size,
                content_type,
            } => {
                let size = i64::try_from(*size).map_err(StoreError::backend)?;
                let old = put_one(tx, app, name, object, size, content_type.as_deref()).await?;
                unreferenced.extend(old.filter(|old| old != object));
            }
            BlobWrite::Delete { name } => {
                let old: Option<String> = sqlx::query_scalar(DELETE)
                    .bind(app.as_str())
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
                unreferenced.extend(old);
            }
        }
    }
    Ok(unreferenced)
}

#[async_trait]
impl BlobRepository for PgBlobs {
    async fn get(&self, app: &AppName, name: &str) -> Result<Option<BlobMeta>, StoreError> {
        let row = sqlx::query(GET)
            .bind(app.as_str())
            .bind(name)
            .fetch_optional(&self.0)
            .await
            .map_err(db)?;
        row.as_ref().map(row_to_meta).transpose()
    }

    async fn list(
        &self,
        app: &AppName,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<BlobMeta>, StoreError> {
        let rows = sqlx::query(LIST)
            .bind(app.as_str())
            .bind(prefix)
            .bind(prefix_end(prefix))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.0)
            .await
            .map_err(db)?;
        rows.iter().map(row_to_meta).collect()
    }

    async fn delete(&self, app: &AppName, name: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar(DELETE)
            .bind(app.as_str())
            .bind(name)
            .fetch_optional(&self.0)
            .await
            .map_err(db)
    }
}
