//! `/api/v1/nodes`: every server process of the cluster as the `nodes` table has it, with
//! its load at its last heartbeat and whether it is `up` or `down` (silent for more than
//! `MISSED_HEARTBEATS_DOWN` of its heartbeat intervals, judged on this node's clock).
//! The answering node's own entry comes from the process itself (`ManagerDeps::this_node`):
//! it is up, its `last_heartbeat` is the moment of the answer and its load is current. On
//! SQLite (one process, which writes its row only at start and at shutdown) that is what
//! keeps the list right without a heartbeat write on a timer.
use std::sync::Arc;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::store::{NodeInfo, ThisNode};
use utoipa::ToSchema;

use super::ManagerDeps;
use super::error::ApiError;
use super::json::ApiJson;

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Node {
    id: String,
    role: String,
    address: String,
    version: String,
    started_at: DateTime<Utc>,
    last_heartbeat: DateTime<Utc>,
    heartbeat_ms: u64,
    in_flight: u64,
    queue_depth: u64,
    /// Realtime (SSE) streams open on the node at its last heartbeat.
    realtime_streams: u64,
    /// `up`, or `down` when its heartbeats stopped.
    #[schema(value_type = String, pattern = "^(up|down)$")]
    status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct NodeList {
    nodes: Vec<Node>,
}

fn node(n: NodeInfo, now: DateTime<Utc>) -> Node {
    let status = if n.is_down(now) { "down" } else { "up" };
    Node {
        status,
        heartbeat_ms: u64::try_from(n.heartbeat_interval.as_millis()).unwrap_or(u64::MAX),
        id: n.id,
        role: n.role,
        address: n.address,
        version: n.version,
        started_at: n.started_at,
        last_heartbeat: n.heartbeat_at,
        in_flight: n.in_flight,
        queue_depth: n.queue_depth,
        realtime_streams: n.realtime_streams,
    }
}

/// List the cluster's nodes.
///
/// Every server process that shares this database, with its load at its last heartbeat;
/// a node silent for three of its heartbeat intervals is `down`. The node answering is
/// listed as it is at that moment (its `last_heartbeat` is now).
#[utoipa::path(
    get,
    path = "/api/v1/nodes",
    operation_id = "list_nodes",
    tag = "nodes",
    responses(
        (status = 200, description = "The nodes, as their heartbeats left them", body = NodeList),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn list(
    State(deps): State<Arc<ManagerDeps>>,
) -> Result<ApiJson<NodeList>, ApiError> {
    let now = Utc::now();
    let mut nodes = deps.store.nodes.list().await?;
    if let Some(this) = &deps.this_node {
        with_this_node(&mut nodes, this);
    }
    Ok(ApiJson(NodeList {
        nodes: nodes.into_iter().map(|n| node(n, now)).collect(),
    }))
}

/// Put the answering node's live entry in place of its row; where it has no row (removed
/// meanwhile), among the others by start.
fn with_this_node(nodes: &mut Vec<NodeInfo>, this: &ThisNode) {
    let me = this();
    if let Some(row) = nodes.iter_mut().find(|n| n.id == me.id) {
        *row = me;
        return;
    }
    let at = nodes.partition_point(|n| (n.started_at, n.id.as_str()) <= (me.started_at, &me.id));
    nodes.insert(at, me);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::TimeDelta;

    use super::*;

    fn info(id: &str, started_minute: i64, beat_minute: i64) -> NodeInfo {
        let at = |m| DateTime::UNIX_EPOCH + TimeDelta::minutes(m);
        NodeInfo {
            id: id.into(),
            role: "all".into(),
            address: format!("http://{id}"),
            version: "1".into(),
            key_fingerprint: "k".into(),
            started_at: at(started_minute),
            heartbeat_at: at(beat_minute),
            heartbeat_interval: Duration::from_secs(5),
            in_flight: 0,
            queue_depth: 0,
            realtime_streams: 0,
        }
    }

    #[test]
    fn the_answering_node_is_listed_live_in_place_of_its_row_or_by_its_start() {
        let now = DateTime::UNIX_EPOCH + TimeDelta::minutes(100);
        let live = Arc::new(move || NodeInfo {
            heartbeat_at: now,
            realtime_streams: 7,
            ..info("me", 10, 100)
        });
        let this: ThisNode = live;
        // Its row's last heartbeat is long past (written at start only): listed up.
        let mut rows = vec![info("a", 5, 6), info("me", 10, 10), info("b", 20, 99)];
        assert!(rows[1].is_down(now));
        with_this_node(&mut rows, &this);
        let ids: Vec<&str> = rows.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["a", "me", "b"]);
        assert!(!rows[1].is_down(now));
        assert_eq!(rows[1].realtime_streams, 7);
        let listed = node(rows[1].clone(), now);
        assert_eq!((listed.status, listed.last_heartbeat), ("up", now));
        // No row (removed meanwhile): added among the others by start.
        let mut rows = vec![info("a", 5, 6), info("b", 20, 99)];
        with_this_node(&mut rows, &this);
        let ids: Vec<&str> = rows.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["a", "me", "b"]);
        let mut rows = Vec::new();
        with_this_node(&mut rows, &this);
        assert_eq!(rows.len(), 1);
    }
}
