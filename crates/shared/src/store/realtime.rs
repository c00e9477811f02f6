use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::ids::{AppName, ChannelName};

/// One event in an app's durable replay buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealtimeEvent {
    /// Increases per app in commit order, from 1.
    pub id: u64,
    pub topic: ChannelName,
    /// The payload as JSON text, exactly as it goes on the wire.
    pub payload: String,
    pub created_at: DateTime<Utc>,
}

/// What a subscription is checked against: the app's signing key (none before the first
/// token was minted), its exposed topics and the origins its streams answer CORS for.
#[derive(Clone, PartialEq, Eq)]
pub struct RealtimeAccess {
    pub key: Option<Vec<u8>>,
    pub exposed: Vec<ChannelName>,
    pub cors_origins: Vec<String>,
}

impl std::fmt::Debug for RealtimeAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealtimeAccess")
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("exposed", &self.exposed)
            .field("cors_origins", &self.cors_origins)
            .finish()
    }
}

/// Where an app's replay buffer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealtimeBounds {
    /// The oldest id still kept; `last + 1` when the buffer is empty.
    pub oldest: u64,
    /// The newest id handed out (0: none yet).
    pub last: u64,
}

/// Realtime: exposed topics, the per-app signing key, CORS origins and the replay buffer.
///
/// Events enter the buffer only through the outbox's commit (an exposed topic's publish),
/// so they exist exactly when the run's other effects do.
#[async_trait]
pub trait RealtimeRepository: Send + Sync {
    /// Expose `topic` to browsers; `false` when it already was.
    ///
    /// # Errors
    /// `NotFound("app")`.
    async fn expose(&self, app: &AppName, topic: &ChannelName) -> Result<bool, StoreError>;
    /// `false` when it was not exposed.
    async fn unexpose(&self, app: &AppName, topic: &ChannelName) -> Result<bool, StoreError>;
    /// The app's exposed topics, by name.
    async fn topics(&self, app: &AppName) -> Result<Vec<ChannelName>, StoreError>;
    /// The app's signing key, made (and stored sealed in `app_secrets`) on first use.
    ///
    /// # Errors
    /// `NotFound("app")`.
    async fn key(&self, app: &AppName) -> Result<Vec<u8>, StoreError>;
    /// Replace the app's signing key: every token signed before no longer verifies.
    ///
    /// # Errors
    /// `NotFound("app")`.
    async fn rotate_key(&self, app: &AppName) -> Result<(), StoreError>;
    /// Set the origins whose pages may open the app's streams (`*` for any).
    ///
    /// # Errors
    /// `NotFound("app")`.
    async fn set_cors_origins(&self, app: &AppName, origins: &[String]) -> Result<(), StoreError>;
    /// Everything a subscription is checked against; `None` for an unknown app.
    async fn access(&self, app: &AppName) -> Result<Option<RealtimeAccess>, StoreError>;
    /// Up to `limit` events with an id above `after`, oldest first.
    async fn events_after(
        &self,
        app: &AppName,
        after: u64,
        limit: u32,
    ) -> Result<Vec<RealtimeEvent>, StoreError>;
    async fn bounds(&self, app: &AppName) -> Result<RealtimeBounds, StoreError>;
    /// Drop every app's events beyond its newest `keep`, and those created before
    /// `older_than`; returns how many went.
    async fn prune(&self, keep: u64, older_than: DateTime<Utc>) -> Result<u64, StoreError>;
    /// When the oldest buffered event (of any app) was created; `None` when the buffer is
    /// empty. The next age prune is due when it expires.
    async fn oldest(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
}
