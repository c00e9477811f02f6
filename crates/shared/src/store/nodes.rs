use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;

/// A node is shown `down` once its last heartbeat is older than this many of its own
/// heartbeat intervals: one late beat is noise, three in a row is a dead process.
pub const MISSED_HEARTBEATS_DOWN: u32 = 3;

/// One server process of the cluster, as it registered and last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's id; also the owner named in the outbox leases it takes.
    pub id: String,
    /// `all` (`picloud serve`), `manager` or `node`.
    pub role: String,
    /// Where the node answers (its advertised URL).
    pub address: String,
    /// The PiCloud version it runs.
    pub version: String,
    /// The fingerprint of its secrets key (never the key): every node must use one key.
    pub key_fingerprint: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// How often it heartbeats; `down` is judged against this.
    pub heartbeat_interval: Duration,
    /// Events it had claimed and not yet committed at its last heartbeat.
    pub in_flight: u64,
    /// Invocations waiting for one of its script threads at its last heartbeat.
    pub queue_depth: u64,
    /// Realtime (SSE) streams open on it at its last heartbeat.
    pub realtime_streams: u64,
}

impl NodeInfo {
    /// Whether the node stopped heartbeating: its last beat is older than
    /// `MISSED_HEARTBEATS_DOWN` intervals at `now`.
    pub fn is_down(&self, now: DateTime<Utc>) -> bool {
        let allowed = self
            .heartbeat_interval
            .saturating_mul(MISSED_HEARTBEATS_DOWN);
        let allowed = chrono::TimeDelta::from_std(allowed).unwrap_or(chrono::TimeDelta::MAX);
        now.signed_duration_since(self.heartbeat_at) > allowed
    }
}

/// The answering process's own entry in the nodes list, taken from the process itself when
/// the list is read: its heartbeat is that moment and its load is what it is then (a node
/// that answers is up, whatever its row says). On SQLite, where one process is the whole
/// cluster, the row is written only at start and this is how the list stays right without
/// a write on a timer.
pub type ThisNode = std::sync::Arc<dyn Fn() -> NodeInfo + Send + Sync>;

/// What a node reports with each heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeLoad {
    pub in_flight: u64,
    pub queue_depth: u64,
    pub realtime_streams: u64,
}

/// The `nodes` table: each node registers when it starts, heartbeats on a timer and
/// deregisters on a clean shutdown; a killed node's row stays and is shown `down`.
#[async_trait]
pub trait NodeRepository: Send + Sync {
    /// Insert or replace the node's row (its heartbeat is `node.heartbeat_at`). Rows whose
    /// heartbeat is older than `forget_before` go at the same time, so dead nodes do not
    /// pile up.
    async fn register(
        &self,
        node: &NodeInfo,
        forget_before: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Record a heartbeat at `at` with the node's load. `false` when the node has no row
    /// (it was forgotten meanwhile): the caller registers again.
    async fn heartbeat(
        &self,
        id: &str,
        at: DateTime<Utc>,
        load: NodeLoad,
    ) -> Result<bool, StoreError>;
    /// Remove the node's row (a clean shutdown). Removing a missing row is fine.
    async fn deregister(&self, id: &str) -> Result<(), StoreError>;
    /// Every registered node, oldest start first.
    async fn list(&self) -> Result<Vec<NodeInfo>, StoreError>;
}
