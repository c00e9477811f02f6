//! Scripts and their immutable versions. `latest_version` only ever grows, so a version
//! number is never reused, even after a rollback; a deploy moves both pointers in one
//! upsert, so concurrent deploys of one script get consecutive versions.
use async_trait::async_trait;
use shared::store::{ScriptInfo, ScriptRepository, ScriptVersion, VersionInfo};
use shared::{AppName, ScriptName, StoreError};
use sqlx::Pool;

use crate::error::db;
use crate::now;
use crate::sql::{Cols, Db, sql};

/// The statements of `Scripts`, with their arguments in placeholder order.
pub(crate) trait ScriptsSql: Db {
    /// (app): a row while the app exists, kept from deletion until the commit.
    const APP_EXISTS: &'static str;
    /// (app, name, at) -> latest_version: creates the script at version 1, or moves both
    /// pointers to the next version.
    const UPSERT_SCRIPT: &'static str;
    /// (app, script, version, source, created_at)
    const INSERT_VERSION: &'static str;
    /// (app, script) -> a version row (app, script, version, source, created_at)
    const ACTIVE: &'static str;
    /// (app, script, version) -> a version row
    const VERSION: &'static str;
    /// (app, name) -> an info row (name, active_version, latest_version, created_at,
    /// updated_at)
    const GET: &'static str;
    /// (app) -> info rows by name
    const LIST: &'static str;
    /// (app, script) -> version, created_at, active, size; newest first
    const VERSIONS: &'static str;
    /// (app, name): a row while the script exists, locked until the commit.
    const LOCK_SCRIPT: &'static str;
    /// (version, at, app, name)
    const SET_ACTIVE: &'static str;
    /// (app, script)
    const DELETE_TRIGGERS: &'static str;
    /// (app, name); versions go with it (ON DELETE CASCADE).
    const DELETE_SCRIPT: &'static str;
}

pub(crate) struct Scripts<DB: Db>(pub(crate) Pool<DB>);

fn row_to_version(row: &impl Cols) -> Result<ScriptVersion, StoreError> {
    Ok(ScriptVersion {
        app: row.name("app", AppName::parse)?,
        script: row.name("script", ScriptName::parse)?,
        version: row.int("version")?,
        source: row.string("source")?,
        created_at: row.ts("created_at")?,
    })
}

fn row_to_info(row: &impl Cols) -> Result<ScriptInfo, StoreError> {
    Ok(ScriptInfo {
        name: row.name("name", ScriptName::parse)?,
        active_version: row.int("active_version")?,
        latest_version: row.int("latest_version")?,
        created_at: row.ts("created_at")?,
        updated_at: row.ts("updated_at")?,
    })
}

fn row_to_version_info(row: &impl Cols) -> Result<VersionInfo, StoreError> {
    Ok(VersionInfo {
        version: row.int("version")?,
        created_at: row.ts("created_at")?,
        active: row.flag("active")?,
        size: row.int("size")?,
    })
}

#[async_trait]
impl<DB: ScriptsSql> ScriptRepository for Scripts<DB> {
    async fn deploy(
        &self,
        app: &AppName,
        script: &ScriptName,
        source: &str,
    ) -> Result<ScriptVersion, StoreError> {
        let at = now();
        let mut tx = DB::begin_write(&self.0).await?;
        sql::<DB>(DB::APP_EXISTS)
            .bind(app.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound("app"))?;
        let version = sql::<DB>(DB::UPSERT_SCRIPT)
            .bind(app.as_str())
            .bind(script.as_str())
            .bind(at)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?
            .int("latest_version")?;
        sql::<DB>(DB::INSERT_VERSION)
            .bind(app.as_str())
            .bind(script.as_str())
            .bind(version)
            .bind(source)
            .bind(at)
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
        let row = sql::<DB>(DB::ACTIVE)
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
        let row = sql::<DB>(DB::VERSION)
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
        let row = sql::<DB>(DB::GET)
            .bind(app.as_str())
            .bind(script.as_str())
            .fetch_optional(&self.0)
            .await
            .map_err(db)?;
        row.as_ref().map(row_to_info).transpose()
    }

    async fn list(&self, app: &AppName) -> Result<Vec<ScriptInfo>, StoreError> {
        let rows = sql::<DB>(DB::LIST)
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
        let rows = sql::<DB>(DB::VERSIONS)
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
        let mut tx = DB::begin_write(&self.0).await?;
        sql::<DB>(DB::LOCK_SCRIPT)
            .bind(app.as_str())
            .bind(script.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound("script"))?;
        let row = sql::<DB>(DB::VERSION)
            .bind(app.as_str())
            .bind(script.as_str())
            .bind(version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound("version"))?;
        let target = row_to_version(&row)?;
        sql::<DB>(DB::SET_ACTIVE)
            .bind(version)
            .bind(now())
            .bind(app.as_str())
            .bind(script.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(target)
    }

    async fn delete(&self, app: &AppName, script: &ScriptName) -> Result<(), StoreError> {
        let mut tx = DB::begin_write(&self.0).await?;
        sql::<DB>(DB::DELETE_TRIGGERS)
            .bind(app.as_str())
            .bind(script.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let deleted = sql::<DB>(DB::DELETE_SCRIPT)
            .bind(app.as_str())
            .bind(script.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if deleted == 0 {
            return Err(StoreError::NotFound("script"));
        }
        tx.commit().await.map_err(db)
    }
}
