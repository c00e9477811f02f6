//! Scripts and their immutable versions on SQLite. `latest_version` only ever grows, so a
//! version number is never reused, even after a rollback.
use async_trait::async_trait;
use shared::store::{ScriptInfo, ScriptRepository, ScriptVersion, VersionInfo};
use shared::{AppName, ScriptName, StoreError};
use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use super::{begin_write, parse_ts, ts};
use crate::error::db;
use crate::{decode, now};

const APP_EXISTS: &str = "SELECT 1 FROM apps WHERE name = ?";
/// Creates the script at version 1, or moves both pointers to the next version.
const UPSERT_SCRIPT: &str =
    "INSERT INTO scripts (app, name, active_version, latest_version, created_at, updated_at)
     VALUES (?, ?, 1, 1, ?, ?)
     ON CONFLICT (app, name) DO UPDATE SET
         latest_version = latest_version + 1,
         active_version = latest_version + 1,
         updated_at = excluded.updated_at
     RETURNING latest_version";
const INSERT_VERSION: &str =
    "INSERT INTO script_versions (app, script, version, source, created_at) VALUES (?, ?, ?, ?, ?)";
const ACTIVE: &str = "SELECT v.app, v.script, v.version, v.source, v.created_at
     FROM scripts s JOIN script_versions v
       ON v.app = s.app AND v.script = s.name AND v.version = s.active_version
     WHERE s.app = ? AND s.name = ?";
const VERSION: &str = "SELECT app, script, version, source, created_at FROM script_versions
     WHERE app = ? AND script = ? AND version = ?";
const GET: &str = "SELECT name, active_version, latest_version, created_at, updated_at
     FROM scripts WHERE app = ? AND name = ?";
const LIST: &str = "SELECT name, active_version, latest_version, created_at, updated_at
     FROM scripts WHERE app = ? ORDER BY name";
const VERSIONS: &str =
    "SELECT v.version, v.created_at, v.version = s.active_version AS active, length(CAST(v.source AS BLOB)) AS size
     FROM script_versions v JOIN scripts s ON s.app = v.app AND s.name = v.script
     WHERE v.app = ? AND v.script = ? ORDER BY v.version DESC";
const SCRIPT_EXISTS: &str = "SELECT 1 FROM scripts WHERE app = ? AND name = ?";
const SET_ACTIVE: &str =
    "UPDATE scripts SET active_version = ?, updated_at = ? WHERE app = ? AND name = ?";
const DELETE_TRIGGERS: &str = "DELETE FROM triggers WHERE app = ? AND script = ?";
const DELETE_SCRIPT: &str = "DELETE FROM scripts WHERE app = ? AND name = ?";

pub(super) struct SqliteScripts(pub(super) SqlitePool);

fn row_to_version(row: &SqliteRow) -> Result<ScriptVersion, StoreError> {
    Ok(ScriptVersion {
        app: decode(row.try_get("app").map_err(db)?, AppName::parse)?,
        script: decode(row.try_get("script").map_err(db)?, ScriptName::parse)?,
        version: row.try_get("version").map_err(db)?,
        source: row.try_get("source").map_err(db)?,
        created_at: parse_ts(row.try_get("created_at").map_err(db)?)?,
    })
}

fn row_to_info(row: &SqliteRow) -> Result<ScriptInfo, StoreError> {
    Ok(ScriptInfo {
        name: decode(row.try_get("name").map_err(db)?, ScriptName::parse)?,
        active_version: row.try_get("active_version").map_err(db)?,
        latest_version: row.try_get("latest_version").map_err(db)?,
        created_at: parse_ts(row.try_get("created_at").map_err(db)?)?,
        updated_at: parse_ts(row.try_get("updated_at").map_err(db)?)?,
    })
}

fn row_to_version_info(row: &SqliteRow) -> Result<VersionInfo, StoreError> {
    Ok(VersionInfo {
        version: row.try_get("version").map_err(db)?,
        created_at: parse_ts(row.try_get("created_at").map_err(db)?)?,
        active: row.try_get("active").map_err(db)?,
        size: row.try_get("size").map_err(db)?,
    })
}

#[async_trait]
impl ScriptRepository for SqliteScripts {
    async fn deploy(
        &self,
        app: &AppName,
        script: &ScriptName,
        source: &str,
    ) -> Result<ScriptVersion, StoreError> {
        let at = now();
        let mut tx = begin_write(&self.0).await?;
        sqlx::query(APP_EXISTS)
            .bind(app.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound("app"))?;
        let version: i64 = sqlx::query(UPSERT_SCRIPT)
            .bind(app.as_str())
            .bind(script.as_str())
            .bind(ts(at))
            .bind(ts(at))
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?
            .try_get("latest_version")
            .map_err(db)?;
        sqlx::query(INSERT_VERSION)
            .bind(app.as_str())
            .bind(script.as_str())
            .bind(version)
            .bind(source)
            .bind(ts(at))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(ScriptVersion {
            app: app.clone(),
            script: script.clone(),
            version,
            source: source.to_owned(),
            created_at: at,
        })
    }

    async fn active(
        &self,
        app: &AppName,
        script: &ScriptName,
    ) -> Result<Option<ScriptVersion>, StoreError> {
        let row = sqlx::query(ACTIVE)
            .bind(app.as_str())
            .bind(script.as_str())
            .fetch_optional(&self.0)
            .await
            .map_err(db)?;
        row.as_ref().map(row_to_version).transpose()
    }

    async fn version(
        &self,
        app: &AppName,
        script: &ScriptName,
        version: i64,
    ) -> Result<Option<ScriptVersion>, StoreError> {
        let row = sqlx::query(VERSION)
            .bind(app.as_str())
            .bind(script.as_str())
            .bind(version)
            .fetch_optional(&self.0)
            .await
            .map_err(db)?;
        row.as_ref().map(row_to_version).transpose()
    }

    async fn get(
        &self,
        app: &AppName,
        script: &ScriptName,
    ) -> Result<Option<ScriptInfo>, StoreError> {
        let row = sqlx::query(GET)
            .bind(app.as_str())
            .bind(script.as_str())
            .fetch_optional(&self.0)
            .await
            .map_err(db)?;
        row.as_ref().map(row_to_info).transpose()
    }

    async fn list(&self, app: &AppName) -> Result<Vec<ScriptInfo>, StoreError> {
        let rows = sqlx::query(LIST)
            .bind(app.as_str())
            .fetch_all(&self.0)
            .await
            .map_err(db)?;
        rows.iter().map(row_to_info).collect()
    }

    async fn versions(
        &self,
        app: &AppName,
        script: &ScriptName,
    ) -> Result<Vec<VersionInfo>, StoreError> {
        let rows = sqlx::query(VERSIONS)
            .bind(app.as_str())
            .bind(script.as_str())
            .fetch_all(&self.0)
            .await
            .map_err(db)?;
        if rows.is_empty() {
            // Every script has at least one version, so no rows means no script.
            return Err(StoreError::NotFound("script"));
        }
        rows.iter().map(row_to_version_info).collect()
    }

    async fn rollback(
        &self,
        app: &AppName,
        script: &ScriptName,
        version: i64,
    ) -> Result<ScriptVersion, StoreError> {
        let mut tx = begin_write(&self.0).await?;
        sqlx::query(SCRIPT_EXISTS)
            .bind(app.as_str())
            .bind(script.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound("script"))?;
        let row = sqlx::query(VERSION)
            .bind(app.as_str())
            .bind(script.as_str())
            .bind(version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound("version"))?;
        let target = row_to_version(&row)?;
        sqlx::query(SET_ACTIVE)
            .bind(version)
            .bind(ts(now()))
            .bind(app.as_str())
            .bind(script.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(target)
    }

    async fn delete(&self, app: &AppName, script: &ScriptName) -> Result<(), StoreError> {
        let mut tx = begin_write(&self.0).await?;
        sqlx::query(DELETE_TRIGGERS)
            .bind(app.as_str())
            .bind(script.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        // Versions go with the script row (ON DELETE CASCADE).
        let done = sqlx::query(DELETE_SCRIPT)
            .bind(app.as_str())
            .bind(script.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("script"));
        }
        tx.commit().await.map_err(db)?;
        Ok(())
    }
}
