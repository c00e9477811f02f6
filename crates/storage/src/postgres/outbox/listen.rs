//! Other nodes' inserts: the `picloud_outbox` channel, forwarded to the local wake-up.
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::Notify;

/// The channel every node listens on; the payload is empty (it only says "look").
const CHANNEL: &str = "picloud_outbox";
/// The listener's reconnect backoff.
const LISTEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Forward `picloud_outbox` notifications to `inserted` until the pool closes, reconnecting
/// with backoff. Every (re)connect also wakes once: notifications sent while the
/// connection was down are lost, so the dispatcher must look.
pub(super) async fn listen(pool: PgPool, inserted: Arc<Notify>) {
    let mut backoff = LISTEN_BACKOFF_MIN;
    loop {
        if pool.is_closed() {
            return;
        }
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = ?e, "the outbox listener cannot connect");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = ?e, "the outbox listener cannot listen");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
            continue;
        }
        inserted.notify_one();
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => {
                    backoff = LISTEN_BACKOFF_MIN;
                    inserted.notify_one();
                }
                // The connection dropped; `try_recv` reconnects on the next call.
                Ok(None) => inserted.notify_one(),
                Err(e) => {
                    if pool.is_closed() {
                        return;
                    }
                    tracing::warn!(error = ?e, "the outbox listener lost its connection");
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
    }
}
