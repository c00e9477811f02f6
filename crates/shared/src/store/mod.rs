//! The repository traits, one file per table family. The storage crate implements each
//! for SQLite and for PostgreSQL; everything else holds them as `Arc<dyn ...>` in `Store`.
use std::sync::Arc;

mod apps;
mod backup;
mod blobs;
mod dead_letters;
mod error;
mod idempotency;
mod invocations;
mod kv;
mod limits;
mod nodes;
mod outbox;
mod realtime;
mod scripts;
mod settings;
mod tokens;
mod triggers;

pub use apps::{App, AppRepository};
pub use backup::{BackupRepository, BackupRow, RestoreError, Restored, Snapshot, TableRows};
pub use blobs::{BlobMeta, BlobRepository, ObjectStore, Swept};
pub use dead_letters::{DeadLetterFilter, DeadLetterRepository, QueueSample};
pub use error::StoreError;
pub use idempotency::{
    Claimed, DEFAULT_TTL_SECS, Idempotency, IdempotencyKey, IdempotencyRepository, KeyAnswer,
    KeyHold, MAX_TTL_SECS, StoredAnswer,
};
pub use invocations::{InvocationFilter, InvocationRepository, MinuteStats};
pub use kv::{KvEntry, KvRepository};
pub use limits::LimitRepository;
pub use nodes::{MISSED_HEARTBEATS_DOWN, NodeInfo, NodeLoad, NodeRepository, ThisNode};
pub use outbox::{EventCommit, EventOutcome, OutboxRepository, SyncCommit};
pub use realtime::{RealtimeAccess, RealtimeBounds, RealtimeEvent, RealtimeRepository};
pub use scripts::{ScriptInfo, ScriptRepository, ScriptVersion, VersionInfo};
pub use settings::{MailboxRepository, SettingsRepository};
pub use tokens::{
    ApiToken, Bootstrap, NewToken, Session, TokenDeleted, TokenRepository, TokenRole,
};
pub use triggers::{
    HttpMethod, NewTrigger, Trigger, TriggerOptions, TriggerRepository, TriggerSpec,
};

/// A live connection to one database, seen through its repositories.
#[derive(Clone)]
pub struct Store {
    pub apps: Arc<dyn AppRepository>,
    pub scripts: Arc<dyn ScriptRepository>,
    pub triggers: Arc<dyn TriggerRepository>,
    pub invocations: Arc<dyn InvocationRepository>,
    pub tokens: Arc<dyn TokenRepository>,
    pub outbox: Arc<dyn OutboxRepository>,
    pub dead_letters: Arc<dyn DeadLetterRepository>,
    pub kv: Arc<dyn KvRepository>,
    pub blobs: Arc<dyn BlobRepository>,
    pub objects: Arc<dyn ObjectStore>,
    pub settings: Arc<dyn SettingsRepository>,
    pub mailbox: Arc<dyn MailboxRepository>,
    pub limits: Arc<dyn LimitRepository>,
    /// The cluster's nodes: registration, heartbeats, the nodes list.
    pub nodes: Arc<dyn NodeRepository>,
    /// HTTP idempotency keys; answers are stored with `outbox.apply_answered`.
    pub idempotency: Arc<dyn IdempotencyRepository>,
    pub realtime: Arc<dyn RealtimeRepository>,
    /// The whole server's data as one snapshot, and back (docs/backup.md).
    pub backup: Arc<dyn BackupRepository>,
    pub health: Arc<dyn StoreHealth>,
    /// Tells every node on this database: in-process for SQLite, LISTEN/NOTIFY on
    /// PostgreSQL.
    pub bus: Arc<dyn crate::bus::NotificationBus>,
}

#[async_trait::async_trait]
pub trait StoreHealth: Send + Sync {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;
    /// A round trip to the database, for `/readyz`.
    ///
    /// # Errors
    /// When the database does not answer.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Close the pool; called last on shutdown.
    async fn close(&self);
}
