//! Scripts' statements on SQLite. Every write transaction holds the write lock, so the
//! existence checks need no locks of their own.
use sqlx::Sqlite;

use crate::repo::scripts::ScriptsSql;

impl ScriptsSql for Sqlite {
    const APP_EXISTS: &'static str = "SELECT 1 FROM apps WHERE name = ?";
    const UPSERT_SCRIPT: &'static str =
        "INSERT INTO scripts (app, name, active_version, latest_version, created_at, updated_at)
     VALUES (?1, ?2, 1, 1, ?3, ?3)
     ON CONFLICT (app, name) DO UPDATE SET
         latest_version = latest_version + 1,
         active_version = latest_version + 1,
         updated_at = excluded.updated_at
     RETURNING latest_version";
    const INSERT_VERSION: &'static str = "INSERT INTO script_versions
         (app, script, version, source, created_at) VALUES (?, ?, ?, ?, ?)";
    const ACTIVE: &'static str = "SELECT v.app, v.script, v.version, v.source, v.created_at
     FROM scripts s JOIN script_versions v
       ON v.app = s.app AND v.script = s.name AND v.version = s.active_version
     WHERE s.app = ? AND s.name = ?";
    const VERSION: &'static str = "SELECT app, script, version, source, created_at
     FROM script_versions WHERE app = ? AND script = ? AND version = ?";
    const GET: &'static str = "SELECT name, active_version, latest_version, created_at, updated_at
     FROM scripts WHERE app = ? AND name = ?";
    const LIST: &'static str = "SELECT name, active_version, latest_version, created_at,
            updated_at
     FROM scripts WHERE app = ? ORDER BY name";
    const VERSIONS: &'static str = "SELECT v.version, v.created_at,
            v.version = s.active_version AS active, length(CAST(v.source AS BLOB)) AS size
     FROM script_versions v JOIN scripts s ON s.app = v.app AND s.name = v.script
     WHERE v.app = ? AND v.script = ? ORDER BY v.version DESC";
    const LOCK_SCRIPT: &'static str = "SELECT 1 FROM scripts WHERE app = ? AND name = ?";
    const SET_ACTIVE: &'static str =
        "UPDATE scripts SET active_version = ?, updated_at = ? WHERE app = ? AND name = ?";
    const DELETE_TRIGGERS: &'static str = "DELETE FROM triggers WHERE app = ? AND script = ?";
    const DELETE_SCRIPT: &'static str = "DELETE FROM scripts WHERE app = ? AND name = ?";
}
