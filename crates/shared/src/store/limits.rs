use async_trait::async_trait;

use super::StoreError;
use crate::ids::{AppName, ScriptName};
use crate::limits::{AppLimits, LimitOverrides};

/// The limits operators set per app and per script (`LimitOverrides`). An app's go with
/// the app; a script's go with the script (deleting it removes them, a new version keeps
/// them). Nodes cache them and reload an app's when the catalog says they changed.
#[async_trait]
pub trait LimitRepository: Send + Sync {
    /// Every app that set anything, with its scripts' (what a node loads at start).
    async fn list_all(&self) -> Result<Vec<(AppName, AppLimits)>, StoreError>;
    /// One app's; empty when it set nothing or does not exist.
    async fn get(&self, app: &AppName) -> Result<AppLimits, StoreError>;
    /// Replace the app's own overrides; all fields unset removes them.
    ///
    /// # Errors
    /// `NotFound("app")`.
    async fn set_app(&self, app: &AppName, limits: &LimitOverrides) -> Result<(), StoreError>;
    /// Replace the script's overrides; all fields unset removes them.
    ///
    /// # Errors
    /// `NotFound("script")` when the script (or its app) does not exist.
    async fn set_script(
        &self,
        app: &AppName,
        script: &ScriptName,
        limits: &LimitOverrides,
    ) -> Result<(), StoreError>;
}
