//! Scripts' statements on PostgreSQL. The upsert locks the script row, so concurrent
//! deploys of one script get consecutive versions; a rollback locks it too.
use sqlx::Postgres;

use crate::repo::scripts::ScriptsSql;

impl ScriptsSql for Postgres {
    const APP_EXISTS: &'static str = "SELECT 1 FROM apps WHERE name = $1 FOR KEY SHARE";
    const UPSERT_SCRIPT: &'static str =
        "INSERT INTO scripts (app, name, active_version, latest_version, created_at, updated_at)
     VALUES ($1, $2, 1, 1, $3, $3)
     ON CONFLICT (app, name) DO UPDATE SET
         latest_version = scripts.latest_version + 1,
         active_version = scripts.latest_version + 1,
         updated_at = EXCLUDED.updated_at
     RETURNING latest_version";
    const INSERT_VERSION: &'static str = "INSERT INTO script_versions
         (app, script, version, source, created_at) VALUES ($1, $2, $3, $4, $5)";
    const ACTIVE: &'static str = "SELECT v.app, v.script, v.version, v.source, v.created_at
     FROM scripts s JOIN script_versions v
       ON v.app = s.app AND v.script = s.name AND v.version = s.active_version
     WHERE s.app = $1 AND s.name = $2";
    const VERSION: &'static str = "SELECT app, script, version, source, created_at
     FROM script_versions WHERE app = $1 AND script = $2 AND version = $3";
    const GET: &'static str = "SELECT name, active_version, latest_version, created_at, updated_at
     FROM scripts WHERE app = $1 AND name = $2";
    const LIST: &'static str = "SELECT name, active_version, latest_version, created_at,
            updated_at
     FROM scripts WHERE app = $1 ORDER BY name";
    const VERSIONS: &'static str = "SELECT v.version, v.created_at,
            v.version = s.active_version AS active, octet_length(v.source)::BIGINT AS size
     FROM script_versions v JOIN scripts s ON s.app = v.app AND s.name = v.script
     WHERE v.app = $1 AND v.script = $2 ORDER BY v.version DESC";
    const LOCK_SCRIPT: &'static str =
        "SELECT 1 FROM scripts WHERE app = $1 AND name = $2 FOR UPDATE";
    const SET_ACTIVE: &'static str =
        "UPDATE scripts SET active_version = $1, updated_at = $2 WHERE app = $3 AND name = $4";
    const DELETE_TRIGGERS: &'static str = "DELETE FROM triggers WHERE app = $1 AND script = $2";
    const DELETE_SCRIPT: &'static str = "DELETE FROM scripts WHERE app = $1 AND name = $2";
}
