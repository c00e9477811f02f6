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

/// An app's event queue at one moment: its outbox rows (events not yet done: due,
/// running, waiting for a retry or a later time, or parked for a queue without a
/// consumer) and its dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct QueueSample {
    /// The minute the sample belongs to (its start, UTC).
    pub minute: DateTime<Utc>,
    pub queue_depth: u64,
    pub dead_letters: u64,
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

    /// Store each app's queue depth and dead letters, counted now by the database, as its
    /// sample of `minute` (replacing one taken earlier in that minute), and delete its
    /// samples of minutes before `keep_since`; in one transaction. Apps that no longer
    /// exist are skipped.
    async fn sample_queues(
        &self,
        apps: &[AppName],
        minute: DateTime<Utc>,
        keep_since: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// The app's stored samples from `since` on, oldest first, led by the last one before
    /// `since` (the value `since` started with), if any.
    async fn queue_history(
        &self,
        app: &AppName,
        since: DateTime<Utc>,
    ) -> Result<Vec<QueueSample>, StoreError>;
    /// The app's queue depth and dead letters now, as the sample of `minute` (not stored).
    async fn queue_now(
        &self,
        app: &AppName,
        minute: DateTime<Utc>,
    ) -> Result<QueueSample, StoreError>;
}
