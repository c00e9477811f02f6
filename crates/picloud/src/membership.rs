//! This process in the cluster's `nodes` table: registered when it starts, a heartbeat on
//! a timer (one small UPDATE per `cluster.heartbeat_ms`, with the events it has in flight
//! and its executor's queue depth), removed on a clean shutdown. A killed process leaves
//! its row, which the nodes list shows `down` after three missed heartbeats; the outbox
//! rows it leased are claimed again by the others once their leases run out.
//!
//! On SQLite there is no heartbeat on a timer: only `picloud serve` runs on SQLite (the
//! cluster roles need PostgreSQL) and the data directory's lock keeps a second server off
//! the database, so no other process reads the row while this one runs. The row is written
//! at start and removed at shutdown; the nodes list takes this node's liveness and load
//! from the process answering it (`ThisNode`), and a killed server's row reads `down`
//! three intervals after its start, as before. An idle server writes nothing.
use std::time::Duration;

use chrono::Utc;
use shared::Store;
use shared::store::{NodeInfo, NodeLoad, ThisNode};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Rows of nodes silent this long are removed when another node registers.
const FORGET_AFTER: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// Register `me` (its heartbeat is now).
///
/// # Errors
/// When the row cannot be written.
pub(crate) async fn register(store: &Store, me: &NodeInfo) -> Result<(), shared::StoreError> {
    let now = Utc::now();
    let me = NodeInfo {
        heartbeat_at: now,
        ..me.clone()
    };
    store.nodes.register(&me, now - FORGET_AFTER).await
}

/// Whether the node writes its heartbeat on a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beats {
    /// Every `heartbeat_interval` (PostgreSQL: the other nodes judge liveness by it).
    Periodic,
    /// Never: the row stays as registered until shutdown (SQLite, one process).
    AtStartOnly,
}

/// This node as the nodes list shows it while it answers: up now, with its current load.
pub(crate) fn this_node(
    me: &NodeInfo,
    load: impl Fn() -> NodeLoad + Send + Sync + 'static,
) -> ThisNode {
    let me = me.clone();
    std::sync::Arc::new(move || {
        let NodeLoad {
            in_flight,
            queue_depth,
            realtime_streams,
        } = load();
        NodeInfo {
            heartbeat_at: Utc::now(),
            in_flight,
            queue_depth,
            realtime_streams,
            ..me.clone()
        }
    })
}

/// Heartbeat (`Beats::Periodic`) until `shutdown`, then deregister. `load` is read at
/// each beat.
pub(crate) async fn heartbeat(
    store: Store,
    me: NodeInfo,
    load: impl Fn() -> NodeLoad + Send,
    beats: Beats,
    shutdown: CancellationToken,
) {
    if beats == Beats::AtStartOnly {
        shutdown.cancelled().await;
        return deregister(&store, &me).await;
    }
    let every = me.heartbeat_interval.max(Duration::from_millis(10));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let beat = store.nodes.heartbeat(&me.id, Utc::now(), load()).await;
        let result = match beat {
            Ok(true) => Ok(()),
            // Forgotten meanwhile (a long pause): register again.
            Ok(false) => register(&store, &me).await,
            Err(e) => Err(e),
        };
        if let Err(error) = result {
            tracing::warn!(error = ?error, "could not write this node's heartbeat");
        }
    }
    deregister(&store, &me).await;
}

async fn deregister(store: &Store, me: &NodeInfo) {
    if let Err(error) = store.nodes.deregister(&me.id).await {
        tracing::warn!(error = ?error, "could not remove this node from the nodes table");
    }
}
