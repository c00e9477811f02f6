use async_trait::async_trait;
use serde_json::Value;

use super::StoreError;
use crate::event::EmailMessage;
use crate::ids::AppName;

/// Per-app config (plain JSON values) and secrets (strings, encrypted at rest by the
/// store with the server's key; never listed with their values).
#[async_trait]
pub trait SettingsRepository: Send + Sync {
    async fn config_get(&self, app: &AppName, key: &str) -> Result<Option<Value>, StoreError>;
    /// # Errors
    /// `NotFound("app")`.
    async fn config_set(&self, app: &AppName, key: &str, value: &Value) -> Result<(), StoreError>;
    async fn config_delete(&self, app: &AppName, key: &str) -> Result<bool, StoreError>;
    async fn config_list(&self, app: &AppName) -> Result<Vec<(String, Value)>, StoreError>;

    /// The decrypted secret.
    async fn secret_get(&self, app: &AppName, name: &str) -> Result<Option<String>, StoreError>;
    /// Encrypts and stores.
    ///
    /// # Errors
    /// `NotFound("app")`.
    async fn secret_set(&self, app: &AppName, name: &str, value: &str) -> Result<(), StoreError>;
    async fn secret_delete(&self, app: &AppName, name: &str) -> Result<bool, StoreError>;
    /// Names only.
    async fn secret_names(&self, app: &AppName) -> Result<Vec<String>, StoreError>;
}

/// Where emails go when no SMTP server is configured (development): a per-app mailbox
/// the admin API lists.
#[async_trait]
pub trait MailboxRepository: Send + Sync {
    async fn deliver(&self, app: &AppName, message: &EmailMessage) -> Result<(), StoreError>;
    /// Newest first.
    async fn list(
        &self,
        app: &AppName,
        limit: u32,
    ) -> Result<Vec<(chrono::DateTime<chrono::Utc>, EmailMessage)>, StoreError>;
}
