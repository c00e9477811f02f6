//! Blob names' statements on PostgreSQL. Under READ COMMITTED a put locks the existing
//! row (`FOR UPDATE` sees the newest committed object) before replacing it.
use sqlx::Postgres;

use crate::repo::blobs::BlobsSql;

impl BlobsSql for Postgres {
    const GET: &'static str = "SELECT name, object, size, content_type, updated_at FROM blobs
     WHERE app = $1 AND name = $2";
    const LIST: &'static str = r#"SELECT name, object, size, content_type, updated_at FROM blobs
     WHERE app = $1 AND name >= ($2::text COLLATE "C")
       AND ($3::text IS NULL OR name < ($3::text COLLATE "C"))
       AND ($4::text IS NULL OR name > ($4::text COLLATE "C"))
     ORDER BY name LIMIT $5"#;
    const DELETE: &'static str = "DELETE FROM blobs WHERE app = $1 AND name = $2 RETURNING object";
    const LOCK_OLD: &'static str =
        "SELECT object FROM blobs WHERE app = $1 AND name = $2 FOR UPDATE";
    const UPDATE: &'static str = "UPDATE blobs
     SET object = $3, size = $4, content_type = $5, updated_at = $6
     WHERE app = $1 AND name = $2";
    const INSERT_NEW: &'static str = "INSERT INTO blobs
         (app, name, object, size, content_type, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (app, name) DO NOTHING";
}
