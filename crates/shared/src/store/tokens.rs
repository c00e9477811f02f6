use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::ids::TokenId;

/// An admin API token as listed: never its secret, which is stored only as a hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: TokenId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[async_trait]
pub trait TokenRepository: Send + Sync {
    /// Store a token by the hash of its secret.
    ///
    /// # Errors
    /// `Conflict("token")` if the hash is already stored.
    async fn create(&self, name: &str, secret_hash: &str) -> Result<ApiToken, StoreError>;
    async fn find_by_hash(&self, secret_hash: &str) -> Result<Option<ApiToken>, StoreError>;
    async fn list(&self) -> Result<Vec<ApiToken>, StoreError>;
    /// # Errors
    /// `NotFound("token")`.
    async fn delete(&self, id: TokenId) -> Result<(), StoreError>;
    async fn count(&self) -> Result<u64, StoreError>;
}
