use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::ids::{AppName, InvocationId, ScriptName};
use crate::invocation::{InvocationRecord, InvocationStatus};

/// Which invocations to list; newest first.
#[derive(Debug, Clone, Default)]
pub struct InvocationFilter {
    pub script: Option<ScriptName>,
    pub status: Option<InvocationStatus>,
    /// Only runs of this trigger kind: `http` or an event kind (`cron`, `queue`, ...).
    pub trigger: Option<String>,
    /// Only runs that started at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only runs that started before this instant.
    pub until: Option<DateTime<Utc>>,
    /// Paging cursor: only invocations older than this one (ids are time-ordered).
    pub before: Option<InvocationId>,
    /// At most this many (the caller caps it).
    pub limit: u32,
}

/// One minute of an app's invocations: counts by status, and duration percentiles
/// (nearest rank) of every run that started in it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct MinuteStats {
    /// The minute's start (UTC).
    pub minute: DateTime<Utc>,
    pub ok: u64,
    pub error: u64,
    pub timeout: u64,
    /// Runs of `http` triggers; the rest ran for events.
    pub http: u64,
    pub p50_ms: u64,
    pub p95_ms: u64,
    pub p99_ms: u64,
}

#[async_trait]
pub trait InvocationRepository: Send + Sync {
    /// Insert a batch of records in one transaction; records of apps that no longer exist
    /// are dropped.
    async fn record(&self, batch: &[InvocationRecord]) -> Result<(), StoreError>;
    async fn list(
        &self,
        app: &AppName,
        filter: &InvocationFilter,
    ) -> Result<Vec<InvocationRecord>, StoreError>;
    async fn get(
        &self,
        app: &AppName,
        id: InvocationId,
    ) -> Result<Option<InvocationRecord>, StoreError>;
    /// Delete up to `limit` records, oldest first, of every app, whose ids were made before
    /// `cutoff` (ids are time-ordered, so this walks the primary key); returns how many.
    async fn purge_before(&self, cutoff: DateTime<Utc>, limit: u32) -> Result<u64, StoreError>;
    /// When the oldest record's id was made; `None` when there are none.
    async fn oldest(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Add to each app's count of records that were not stored (the per-app bound on
    /// failure records); apps that no longer exist are skipped.
    async fn count_dropped(&self, drops: &[(AppName, u64)]) -> Result<(), StoreError>;
    /// How many of the app's records were not stored so far (0 when none).
    async fn dropped(&self, app: &AppName) -> Result<u64, StoreError>;
    /// The app's records that started at or after `since`, aggregated per minute by the
    /// database; oldest minute first, minutes without runs left out.
    async fn stats(
        &self,
        app: &AppName,
        since: DateTime<Utc>,
    ) -> Result<Vec<MinuteStats>, StoreError>;
}
