use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::ids::{AppName, TokenId};

/// What a token may do; the apps it may do it on are its scope (`ApiToken::apps`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    utoipa::ToSchema,
    Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    /// Only reads; never a secret's value (no route returns one).
    Read,
    /// Reads, plus deploys, triggers, config, secrets (write-only), data and dead letters
    /// of its apps.
    Deploy,
    /// Everything, tokens and app deletion included. An admin token covers every app.
    Admin,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Read => "read",
            TokenRole::Deploy => "deploy",
            TokenRole::Admin => "admin",
        }
    }

    /// # Errors
    /// When `raw` is not `admin`, `deploy` or `read`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "read" => Ok(TokenRole::Read),
            "deploy" => Ok(TokenRole::Deploy),
            "admin" => Ok(TokenRole::Admin),
            _ => Err(format!(
                "'{}' is not a role: use admin, deploy or read",
                raw.chars().take(20).collect::<String>()
            )),
        }
    }
}

impl std::fmt::Display for TokenRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An admin API token as listed: never its secret, which is stored only as a hash.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, Deserialize)]
pub struct ApiToken {
    pub id: TokenId,
    pub name: String,
    pub role: TokenRole,
    /// The apps it covers; `None` is every app, present and future.
    pub apps: Option<Vec<AppName>>,
    pub created_at: DateTime<Utc>,
}

impl ApiToken {
    /// Whether the token's scope includes `app`.
    pub fn covers(&self, app: &AppName) -> bool {
        self.apps.as_ref().is_none_or(|apps| apps.contains(app))
    }
}

/// A token to store: its name, the hash of its secret, its role and scope.
#[derive(Debug, Clone, PartialEq)]
pub struct NewToken {
    pub name: String,
    pub secret_hash: String,
    pub role: TokenRole,
    /// `None` for every app.
    pub apps: Option<Vec<AppName>>,
}

impl NewToken {
    /// An admin token over every app (the bootstrap token's kind).
    pub fn admin(name: &str, secret_hash: &str) -> Self {
        NewToken {
            name: name.to_owned(),
            secret_hash: secret_hash.to_owned(),
            role: TokenRole::Admin,
            apps: None,
        }
    }
}

/// What a guarded delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenDeleted {
    Deleted,
    /// Nothing: the token is the last admin token, and the API must never lose its last way in.
    LastAdmin,
}

#[async_trait]
pub trait TokenRepository: Send + Sync {
    /// Store a token by the hash of its secret.
    ///
    /// # Errors
    /// `Conflict("token")` if the hash is already stored.
    async fn create(&self, token: &NewToken) -> Result<ApiToken, StoreError>;
    async fn find_by_hash(&self, secret_hash: &str) -> Result<Option<ApiToken>, StoreError>;
    async fn list(&self) -> Result<Vec<ApiToken>, StoreError>;
    /// Delete a token unless it is the last admin token. The check and the delete are one
    /// atomic step, so concurrent deletes can never leave zero admin tokens.
    ///
    /// # Errors
    /// `NotFound("token")`.
    async fn delete(&self, id: TokenId) -> Result<TokenDeleted, StoreError>;
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
    /// Open a dashboard session acting as `token`, stored by the hash of its secret, until
    /// `expires_at`. Sessions that expired before `now` are removed on the way.
    ///
    /// # Errors
    /// `NotFound("token")` if the token is gone; `Conflict("session")` for a stored hash.
    async fn create_session(
        &self,
        secret_hash: &str,
        token: TokenId,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// The session stored under `secret_hash` if it has not expired at `now`, with the
    /// token it acts as. A revoked token has no sessions left.
    async fn find_session(
        &self,
        secret_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, StoreError>;
    /// End a session; whether one was stored.
    async fn delete_session(&self, secret_hash: &str) -> Result<bool, StoreError>;
}

/// A dashboard session: the token it acts as and when it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub token: ApiToken,
    pub expires_at: DateTime<Utc>,
}

/// What `TokenRepository::install_bootstrap` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    /// The same value as last time: nothing stored or revoked.
    Unchanged,
    /// The token is stored and recorded; `revoked` says a previous one was deleted.
    Installed { revoked: bool },
}
