//! Blob names' statements on SQLite. A write transaction holds the write lock, so the
//! "lock" that reads the old object is a plain read.
use std::path::{Path, PathBuf};

use sqlx::Sqlite;

use super::file_path;
use crate::repo::blobs::BlobsSql;

impl BlobsSql for Sqlite {
    const GET: &'static str = "SELECT name, object, size, content_type, updated_at FROM blobs
     WHERE app = ?1 AND name = ?2";
    const LIST: &'static str = "SELECT name, object, size, content_type, updated_at FROM blobs
     WHERE app = ?1 AND name >= ?2 AND (?3 IS NULL OR name < ?3) AND (?4 IS NULL OR name > ?4)
     ORDER BY name LIMIT ?5";
    const DELETE: &'static str = "DELETE FROM blobs WHERE app = ?1 AND name = ?2 RETURNING object";
    const LOCK_OLD: &'static str = "SELECT object FROM blobs WHERE app = ?1 AND name = ?2";
    const UPDATE: &'static str = "UPDATE blobs
     SET object = ?3, size = ?4, content_type = ?5, updated_at = ?6
     WHERE app = ?1 AND name = ?2";
    const INSERT_NEW: &'static str = "INSERT INTO blobs
         (app, name, object, size, content_type, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
     ON CONFLICT (app, name) DO NOTHING";
}

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
