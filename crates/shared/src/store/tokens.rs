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
    /// Install the operator's bootstrap token (`PICLOUD_ADMIN_TOKEN`) in one transaction.
    ///
    /// When `secret_hash` is the bootstrap token already recorded, nothing changes: a token
    /// revoked through the API stays revoked while the value stays the same. Otherwise the
    /// token of the previous bootstrap value is deleted, this one is stored under `name`
    /// (unless that hash is already stored) and recorded as the bootstrap token.
    async fn install_bootstrap(
        &self,
        name: &str,
        secret_hash: &str,
    ) -> Result<Bootstrap, StoreError>;
}

/// What `TokenRepository::install_bootstrap` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    /// The same value as last time: nothing stored or revoked.
    Unchanged,
    /// The token is stored and recorded; `revoked` says a previous one was deleted.
    Installed { revoked: bool },
}
