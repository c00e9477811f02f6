//! The `nodes` table's statements on PostgreSQL.
use sqlx::Postgres;

use crate::repo::nodes::NodesSql;

impl NodesSql for Postgres {
    const REGISTER: &'static str = "INSERT INTO nodes (id, role, address, version,
         key_fingerprint, started_at, heartbeat_at, heartbeat_ms, in_flight, queue_depth,
         realtime_streams)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
     ON CONFLICT (id) DO UPDATE SET role = excluded.role, address = excluded.address,
         version = excluded.version, key_fingerprint = excluded.key_fingerprint,
         started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
         heartbeat_ms = excluded.heartbeat_ms, in_flight = excluded.in_flight,
         queue_depth = excluded.queue_depth,
         realtime_streams = excluded.realtime_streams";
    const FORGET: &'static str = "DELETE FROM nodes WHERE heartbeat_at < $1";
    const HEARTBEAT: &'static str =
        "UPDATE nodes SET heartbeat_at = $1, in_flight = $2, queue_depth = $3,
         realtime_streams = $4 WHERE id = $5";
    const DEREGISTER: &'static str = "DELETE FROM nodes WHERE id = $1";
    const LIST: &'static str = "SELECT id, role, address, version, key_fingerprint, started_at,
         heartbeat_at, heartbeat_ms, in_flight, queue_depth, realtime_streams
     FROM nodes ORDER BY started_at, id";
}
