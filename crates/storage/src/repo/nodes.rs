//! The `nodes` table (migrations 0011, 0016): each server process's registration and heartbeat.
//! Timestamps are the writing node's clock; `down` is judged by the reader
//! (`NodeInfo::is_down`), so a row never has to be updated by anyone but its own node.
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use shared::StoreError;
use shared::store::{NodeInfo, NodeLoad, NodeRepository};
use sqlx::Pool;

use crate::error::db;
use crate::sql::{Cols, Db, sql};

/// The statements of `Nodes`, with their arguments in placeholder order.
pub(crate) trait NodesSql: Db {
    /// (id, role, address, version, key_fingerprint, started_at, heartbeat_at,
    /// heartbeat_ms, in_flight, queue_depth, realtime_streams): insert or replace.
    const REGISTER: &'static str;
    /// (cutoff): rows whose heartbeat is older.
    const FORGET: &'static str;
    /// (heartbeat_at, in_flight, queue_depth, realtime_streams, id)
    const HEARTBEAT: &'static str;
    /// (id)
    const DEREGISTER: &'static str;
    /// () -> every column, oldest start first.
    const LIST: &'static str;
}

pub(crate) struct Nodes<DB: Db>(pub(crate) Pool<DB>);

/// Counts and intervals are kept within `i64`.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn row_to_node(row: &impl Cols) -> Result<NodeInfo, StoreError> {
    Ok(NodeInfo {
        id: row.string("id")?,
        role: row.string("role")?,
        address: row.string("address")?,
        version: row.string("version")?,
        key_fingerprint: row.string("key_fingerprint")?,
        started_at: row.ts("started_at")?,
        heartbeat_at: row.ts("heartbeat_at")?,
        heartbeat_interval: Duration::from_millis(row.count("heartbeat_ms")?),
        in_flight: row.count("in_flight")?,
        queue_depth: row.count("queue_depth")?,
        realtime_streams: row.count("realtime_streams")?,
    })
}

#[async_trait]
impl<DB: NodesSql> NodeRepository for Nodes<DB> {
    async fn register(
        &self,
        node: &NodeInfo,
        forget_before: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = DB::begin_write(&self.0).await?;
        sql::<DB>(DB::FORGET)
            .bind(forget_before)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let interval_ms = u64::try_from(node.heartbeat_interval.as_millis()).unwrap_or(u64::MAX);
        sql::<DB>(DB::REGISTER)
            .bind(node.id.as_str())
            .bind(node.role.as_str())
            .bind(node.address.as_str())
            .bind(node.version.as_str())
            .bind(node.key_fingerprint.as_str())
            .bind(node.started_at)
            .bind(node.heartbeat_at)
            .bind(int(interval_ms))
            .bind(int(node.in_flight))
            .bind(int(node.queue_depth))
            .bind(int(node.realtime_streams))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn heartbeat(
        &self,
        id: &str,
        at: DateTime<Utc>,
        load: NodeLoad,
    ) -> Result<bool, StoreError> {
        let updated = sql::<DB>(DB::HEARTBEAT)
            .bind(at)
            .bind(int(load.in_flight))
            .bind(int(load.queue_depth))
            .bind(int(load.realtime_streams))
            .bind(id)
            .execute(&self.0)
            .await
            .map_err(db)?;
        Ok(updated > 0)
    }

    async fn deregister(&self, id: &str) -> Result<(), StoreError> {
        sql::<DB>(DB::DEREGISTER)
            .bind(id)
            .execute(&self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let rows = sql::<DB>(DB::LIST).fetch_all(&self.0).await.map_err(db)?;
        rows.iter().map(row_to_node).collect()
    }
}
