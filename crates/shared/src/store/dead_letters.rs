use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::event::{DeadLetter, EventKind};
use crate::ids::{AppName, DeadLetterId, EventId, ScriptName};

/// Which dead letters to list, count or replay; every field but `limit` may be unset.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    pub script: Option<ScriptName>,
    pub kind: Option<EventKind>,
    /// Only letters whose last error contains this text.
    pub error: Option<String>,
    /// Only letters made at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only letters made before this time.
    pub until: Option<DateTime<Utc>>,
    /// Paging cursor: only letters older than this one (ids are time-ordered).
    pub before: Option<DeadLetterId>,
    pub limit: u32,
}

#[async_trait]
pub trait DeadLetterRepository: Send + Sync {
    /// Newest first; `before` pages by id.
    async fn list(
        &self,
        app: &AppName,
        before: Option<DeadLetterId>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError>;
    /// Those that match `filter`, newest first; `filter.before` pages by id.
    async fn list_matching(
        &self,
        app: &AppName,
        filter: &DeadLetterFilter,
    ) -> Result<Vec<DeadLetter>, StoreError>;
    /// How many match `filter` (`before` included, `limit` aside).
    async fn count_matching(
        &self,
        app: &AppName,
        filter: &DeadLetterFilter,
    ) -> Result<u64, StoreError>;
    async fn get(&self, app: &AppName, id: DeadLetterId) -> Result<Option<DeadLetter>, StoreError>;
    /// Put the event back into the outbox as a new event (attempt 1, due now, same script,
    /// source and payload; its trigger's max attempts) and delete the dead letter, in one
    /// transaction. Returns the new event's id.
    ///
    /// # Errors
    /// `NotFound("dead letter")`.
    async fn replay(&self, app: &AppName, id: DeadLetterId) -> Result<EventId, StoreError>;
    /// # Errors
    /// `NotFound("dead letter")`.
    async fn delete(&self, app: &AppName, id: DeadLetterId) -> Result<(), StoreError>;
    /// Delete every dead letter of the app; returns how many.
    async fn purge_app(&self, app: &AppName) -> Result<u64, StoreError>;
    /// Delete dead letters created before `cutoff` (all apps); returns how many.
    async fn purge_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError>;
    /// When the oldest dead letter was created (all apps), for the retention sweeper.
    async fn oldest(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
}
