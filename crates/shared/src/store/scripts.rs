use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::ids::{AppName, ScriptName};

/// One immutable version of a script, with its source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptVersion {
    pub app: AppName,
    pub script: ScriptName,
    /// 1 for the first deploy, then +1 per deploy; never reused.
    pub version: i64,
    pub source: String,
    pub created_at: DateTime<Utc>,
}

/// A script as listed: which version is active and which is the newest.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, Deserialize)]
pub struct ScriptInfo {
    pub name: ScriptName,
    pub active_version: i64,
    pub latest_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, Deserialize)]
pub struct VersionInfo {
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub active: bool,
    pub size: i64,
}

#[async_trait]
pub trait ScriptRepository: Send + Sync {
    /// Store `source` as the next version of the script (creating the script on its first
    /// deploy) and make it active, in one transaction.
    ///
    /// # Errors
    /// `NotFound("app")`.
    async fn deploy(
        &self,
        app: &AppName,
        script: &ScriptName,
        source: &str,
    ) -> Result<ScriptVersion, StoreError>;
    /// The active version, or `None` when the script does not exist.
    async fn active(
        &self,
        app: &AppName,
        script: &ScriptName,
    ) -> Result<Option<ScriptVersion>, StoreError>;
    /// One version, or `None`.
    async fn version(
        &self,
        app: &AppName,
        script: &ScriptName,
        version: i64,
    ) -> Result<Option<ScriptVersion>, StoreError>;
    /// `None` when the script does not exist.
    async fn get(
        &self,
        app: &AppName,
        script: &ScriptName,
    ) -> Result<Option<ScriptInfo>, StoreError>;
    /// The app's scripts, by name (empty when the app does not exist).
    async fn list(&self, app: &AppName) -> Result<Vec<ScriptInfo>, StoreError>;
    /// All versions, newest first.
    ///
    /// # Errors
    /// `NotFound("script")`.
    async fn versions(
        &self,
        app: &AppName,
        script: &ScriptName,
    ) -> Result<Vec<VersionInfo>, StoreError>;
    /// Make an existing version the active one.
    ///
    /// # Errors
    /// `NotFound("script")` or `NotFound("version")`.
    async fn rollback(
        &self,
        app: &AppName,
        script: &ScriptName,
        version: i64,
    ) -> Result<ScriptVersion, StoreError>;
    /// Delete the script, its versions and the triggers bound to it, in one transaction.
    ///
    /// # Errors
    /// `NotFound("script")`.
    async fn delete(&self, app: &AppName, script: &ScriptName) -> Result<(), StoreError>;
}
