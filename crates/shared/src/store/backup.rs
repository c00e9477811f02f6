//! Backup and restore of a whole server's data (docs/backup.md): every table a backup
//! holds, read in one consistent snapshot, and written back in one transaction. Rows travel
//! as JSON objects (column -> value) so that an archive made on one backend restores on
//! the other; the storage crate knows the tables and their column types.
use async_trait::async_trait;

use super::StoreError;

/// One row: column name -> value (text, number, bool, null; timestamps as RFC 3339, ids as
/// UUID text, bytes as hex, JSON columns as their JSON text).
pub type BackupRow = serde_json::Map<String, serde_json::Value>;

/// One table's rows, in primary-key order.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRows {
    pub table: String,
    pub rows: Vec<BackupRow>,
}

/// What one read snapshot saw.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The newest schema migration applied to the database.
    pub schema_version: i64,
    /// The tables, in restore order (a table comes after those it references).
    pub tables: Vec<TableRows>,
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// Rows written per table, in restore order.
    pub rows: Vec<(String, u64)>,
    /// Blob objects that rows of replaced apps pointed at: garbage once committed.
    pub freed_objects: Vec<String>,
}

/// Why a restore refused its rows.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The archive's rows do not fit this server's tables (an unknown table or column, a
    /// value of the wrong type); nothing was written.
    #[error("{0}")]
    Archive(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[async_trait]
pub trait BackupRepository: Send + Sync {
    /// The newest migration this build embeds: an archive from a later one is refused.
    fn schema_version(&self) -> i64;
    /// The fingerprint of the key that seals secrets (`crypto::key_fingerprint`).
    fn key_fingerprint(&self) -> &str;
    /// The tables a backup holds, in restore order; `invocations` (and the count of
    /// dropped ones) only with `with_invocations`.
    fn tables(&self, with_invocations: bool) -> Vec<&'static str>;
    /// Every row of `tables(with_invocations)`, read in one read-only snapshot (a
    /// repeatable-read transaction), so a running server's writes during the backup are
    /// either wholly in it or wholly not.
    async fn snapshot(&self, with_invocations: bool) -> Result<Snapshot, StoreError>;
    /// In one transaction: delete the apps that `tables` holds (with all they own), then
    /// insert every row. API tokens are added beside the server's own (a token whose id or
    /// hash is already there is kept as it is). All or nothing.
    async fn restore(&self, tables: Vec<TableRows>) -> Result<Restored, RestoreError>;
}
