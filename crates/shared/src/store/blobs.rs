use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::ids::AppName;

/// A blob's metadata; the bytes live in the object store under `object`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, Deserialize)]
pub struct BlobMeta {
    pub name: String,
    pub size: u64,
    pub content_type: Option<String>,
    #[serde(skip)]
    pub object: String,
    pub updated_at: DateTime<Utc>,
}

/// Blob names per app. Writes go through `Effects`; the admin API deletes directly.
#[async_trait]
pub trait BlobRepository: Send + Sync {
    async fn get(&self, app: &AppName, name: &str) -> Result<Option<BlobMeta>, StoreError>;
    /// Names starting with `prefix`, in name order, after `after`, at most `limit`.
    async fn list(
        &self,
        app: &AppName,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<BlobMeta>, StoreError>;
    /// Delete the name; returns the object it pointed at (for the caller to remove).
    async fn delete(&self, app: &AppName, name: &str) -> Result<Option<String>, StoreError>;
}

/// The bytes of blobs: a local directory (temp file, fsync, rename) or an S3-compatible
/// store. Object keys are chosen here (`<app>/<uuid>`), never derived from blob names, so
/// no name can reach outside its app.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Store `data` as a new object of `app`; returns its key.
    async fn put(&self, app: &AppName, data: Bytes) -> Result<String, StoreError>;
    /// # Errors
    /// `NotFound("blob")` when the object is missing.
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;
    /// Removing a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Remove temp files a crash left behind; returns how many, and how many it kept
    /// because they are too young to tell from a write in progress.
    async fn sweep(&self) -> Result<Swept, StoreError>;
}

/// What `ObjectStore::sweep` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Temp files removed.
    pub removed: u64,
    /// Temp files kept: young enough to be a write in progress. A sweep after the
    /// store's age limit has passed removes those that were left by a crash.
    pub kept: u64,
}
