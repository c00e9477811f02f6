use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StoreError;
use crate::ids::AppName;

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, Deserialize)]
pub struct KvEntry {
    pub key: String,
    pub value: Value,
    pub updated_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Reads of an app's KV entries. Writes go through `Effects` (buffered, transactional);
/// only the admin API deletes directly. Expired entries are never returned.
#[async_trait]
pub trait KvRepository: Send + Sync {
    async fn get(&self, app: &AppName, key: &str) -> Result<Option<KvEntry>, StoreError>;
    /// `get` for a thread that may block (a script thread, never a runtime worker): the
    /// same answer (the last committed value, expired entries never), read without the
    /// async pool where the backend can (SQLite: a connection of the reading thread's own)
    /// and otherwise blocking on `rt`, the runtime that owns the store's pools.
    ///
    /// # Errors
    /// As `get`. A failed read leaves nothing behind: the next one starts afresh.
    fn get_blocking(
        &self,
        rt: &tokio::runtime::Handle,
        app: &AppName,
        key: &str,
    ) -> Result<Option<KvEntry>, StoreError>;
    /// Keys starting with `prefix`, in key order, after `after` (exclusive), at most `limit`.
    async fn list(
        &self,
        app: &AppName,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<KvEntry>, StoreError>;
    /// Returns whether the key existed.
    async fn delete(&self, app: &AppName, key: &str) -> Result<bool, StoreError>;
}
