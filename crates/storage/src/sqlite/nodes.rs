//! The `nodes` table's statements on SQLite.
use sqlx::Sqlite;

use crate::repo::nodes::NodesSql;

impl NodesSql for Sqlite {
    const REGISTER: &'static str = "INSERT INTO nodes (id, role, address, version,
         key_fingerprint, started_at, heartbeat_at, heartbeat_ms, in_flight, queue_depth,
         realtime_streams)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (id) DO UPDATE SET role = excluded.role, address = excluded.address,
         version = excluded.version, key_fingerprint = excluded.key_fingerprint,
         started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
         heartbeat_ms = excluded.heartbeat_ms, in_flight = excluded.in_flight,
         queue_depth = excluded.queue_depth,
         realtime_streams = excluded.realtime_streams";
    const FORGET: &'static str = "DELETE FROM nodes WHERE heartbeat_at < ?";
    const HEARTBEAT: &'static str =
        "UPDATE nodes SET heartbeat_at = ?, in_flight = ?, queue_depth = ?,
         realtime_streams = ? WHERE id = ?";
    const DEREGISTER: &'static str = "DELETE FROM nodes WHERE id = ?";
    const LIST: &'static str = "SELECT id, role, address, version, key_fingerprint, started_at,
         heartbeat_at, heartbeat_ms, in_flight, queue_depth, realtime_streams
     FROM nodes ORDER BY started_at, id";
}
