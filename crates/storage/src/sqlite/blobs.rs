//! Blob names on SQLite: each (app, name) points at one object of the object store.
//!
//! What must stay true:
//! - every statement is scoped by app, prefixes are ranges, never `LIKE` patterns;
//! - whenever a name stops pointing at an object (overwritten or deleted), that object's
//!   key is handed back to the caller, who removes it after the commit: no object is
//!   forgotten while referenced, none stays referenced after its removal.
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use shared::event::BlobWrite;
use shared::store::{BlobMeta, BlobRepository};
use shared::{AppName, StoreError};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};

use super::{file_path, parse_ts, ts};
use crate::error::db;
use crate::{app_missing, now, prefix_end};

const GET: &str = "SELECT name, object, size, content_type, updated_at FROM blobs
     WHERE app = ?1 AND name = ?2";
const LIST: &str = "SELECT name, object, size, content_type, updated_at FROM blobs
     WHERE app = ?1 AND name >= ?2 AND (?3 IS NULL OR name < ?3) AND (?4 IS NULL OR name > ?4)
     ORDER BY name LIMIT ?5";
const DELETE: &str = "DELETE FROM blobs WHERE app = ?1 AND name = ?2 RETURNING object";
const OLD_OBJECT: &str = "SELECT object FROM blobs WHERE app = ?1 AND name = ?2";
const UPSERT: &str = "INSERT INTO blobs (app, name, object, size, content_type, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
     ON CONFLICT (app, name) DO UPDATE SET
         object = excluded.object, size = excluded.size,
         content_type = excluded.content_type, updated_at = excluded.updated_at";

pub(super) struct SqliteBlobs(pub(super) SqlitePool);

/// Where `connect` keeps blobs for the SQLite database `url`: `blobs` next to the file;
/// `None` for an in-memory database.
pub(crate) fn default_blob_dir(url: &str) -> Option<PathBuf> {
    let path = file_path(url);
    if path.is_empty() || path.starts_with(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let parent = Path::new(path).parent().unwrap_or(Path::new(""));
    Some(parent.join("blobs"))
}

fn row_to_meta(row: &SqliteRow) -> Result<BlobMeta, StoreError> {
    let size: i64 = row.try_get("size").map_err(db)?;
    Ok(BlobMeta {
        name: row.try_get("name").map_err(db)?,
        size: u64::try_from(size).map_err(StoreError::backend)?,
        content_type: row.try_get("content_type").map_err(db)?,
        object: row.try_get("object").map_err(db)?,
        updated_at: parse_ts(row.try_get("updated_at").map_err(db)?)?,
    })
}

/// Apply `writes` in order inside the caller's transaction (which holds the write lock, so
/// reading the old object and replacing it cannot interleave with another writer).
/// Returns the objects no longer referenced: remove them once the transaction commits.
///
/// # Errors
/// `NotFound("app")` when the app does not exist.
pub(crate) async fn apply_blobs(
    tx: &mut SqliteConnection,
    app: &AppName,
    writes: &[BlobWrite],
) -> Result<Vec<String>, StoreError> {
    let mut unreferenced = Vec::new();
    let at = ts(now());
    for write in writes {
        match write {
            BlobWrite::Put {
                name,
                object,
                size,
                content_type,
            } => {
                let old: Option<String> = sqlx::query_scalar(OLD_OBJECT)
                    .bind(app.as_str())
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
                sqlx::query(UPSERT)
                    .bind(app.as_str())
                    .bind(name)
                    .bind(object)
                    .bind(i64::try_from(*size).map_err(StoreError::backend)?)
                    .bind(content_type.as_deref())
                    .bind(&at)
                    .execute(&mut *tx)
                    .await
                    .map_err(app_missing)?;
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
impl BlobRepository for SqliteBlobs {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_live_next_to_the_database_file_unless_it_is_in_memory() {
        assert_eq!(
            default_blob_dir("sqlite:///var/lib/picloud/p.db"),
            Some(PathBuf::from("/var/lib/picloud/blobs"))
        );
        assert_eq!(default_blob_dir("p.db"), Some(PathBuf::from("blobs")));
        assert_eq!(default_blob_dir("sqlite::memory:"), None);
    }
}
