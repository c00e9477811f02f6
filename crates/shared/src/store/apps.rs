use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::ids::AppName;

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, Deserialize)]
pub struct App {
    pub name: AppName,
    pub created_at: DateTime<Utc>,
}

#[async_trait]
pub trait AppRepository: Send + Sync {
    /// # Errors
    /// `Conflict("app")` when the name is taken.
    async fn create(&self, name: &AppName) -> Result<App, StoreError>;
    /// # Errors
    /// `NotFound("app")`.
    async fn get(&self, name: &AppName) -> Result<App, StoreError>;
    /// All apps, by name.
    async fn list(&self) -> Result<Vec<App>, StoreError>;
    /// Delete the app and everything it owns (scripts, versions, triggers, invocations)
    /// in one transaction.
    ///
    /// # Errors
    /// `NotFound("app")`.
    async fn delete(&self, name: &AppName) -> Result<(), StoreError>;
}
