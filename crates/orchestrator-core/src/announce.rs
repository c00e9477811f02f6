//! Tells every node which invocation records this node committed, so that the admin API's
//! live invocation streams (`GET /api/v1/apps/{app}/invocations/stream`) on any node see
//! them. It relays the recorder's broadcast (HTTP records after their batch, event records
//! after their commit) onto the one notification bus as `Channel::Invocations` notices:
//! ids only (`<app> <id> ...`), never the records; a stream reads the rows it is told of.
//!
//! It waits on the broadcast (idle costs nothing) and sends what piled up while the
//! previous notices went out as one notice per app, so a busy node sends few notices.
//! When it falls behind the broadcast, the streams are told (`*`) that records were missed.
use std::collections::BTreeMap;
use std::sync::Arc;

use shared::bus::{Channel, INVOCATIONS_MISSED, NotificationBus, invocation_notices};
use shared::{AppName, InvocationId, InvocationRecord};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

/// At most this many records go into one round of notices.
const ROUND: usize = 1000;

/// Relay `recorded` onto `bus` until every sender of `recorded` is gone.
pub(crate) fn spawn(
    bus: Arc<dyn NotificationBus>,
    mut recorded: broadcast::Receiver<InvocationRecord>,
) {
    tokio::spawn(async move {
        loop {
            let mut round: BTreeMap<AppName, Vec<InvocationId>> = BTreeMap::new();
            let mut missed = false;
            match recorded.recv().await {
                Ok(record) => round.entry(record.app).or_default().push(record.id),
                Err(RecvError::Lagged(_)) => missed = true,
                Err(RecvError::Closed) => return,
            }
            for _ in 1..ROUND {
                match recorded.try_recv() {
                    Ok(record) => round.entry(record.app).or_default().push(record.id),
                    Err(TryRecvError::Lagged(_)) => missed = true,
                    Err(_) => break,
                }
            }
            if missed {
                send(bus.as_ref(), INVOCATIONS_MISSED).await;
            }
            for (app, ids) in &round {
                for notice in invocation_notices(app.as_str(), ids) {
                    send(bus.as_ref(), &notice).await;
                }
            }
        }
    });
}

async fn send(bus: &dyn NotificationBus, payload: &str) {
    if let Err(error) = bus.notify(Channel::Invocations, payload).await {
        tracing::debug!(error = ?error, "an invocation notice could not be sent");
    }
}
