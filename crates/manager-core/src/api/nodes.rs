//! `/api/v1/nodes`: every server process of the cluster as the `nodes` table has it, with
//! its load at its last heartbeat and whether it is `up` or `down` (silent for more than
//! `MISSED_HEARTBEATS_DOWN` of its heartbeat intervals, judged on this node's clock).
use std::sync::Arc;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::store::NodeInfo;
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
/// a node silent for three of its heartbeat intervals is `down`.
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
    let nodes = deps.store.nodes.list().await?;
    Ok(ApiJson(NodeList {
        nodes: nodes.into_iter().map(|n| node(n, now)).collect(),
    }))
}
