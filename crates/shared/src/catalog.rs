//! How a control-plane change reaches the caches that serve the hot path (routes, compiled
//! scripts, per-app limits), on every node.
//!
//! The manager publishes a `CatalogChange` after its store write has committed and awaits
//! every listener on its own node before it answers, so a deploy's response means "the
//! next request to this node runs the new version". The change also goes out on the
//! notification bus (`Channel::Catalog`); `Catalog::follow` applies what other nodes
//! published to this node's listeners, and when notices may have been lost (the bus lost
//! its connection) tells them to reload everything (`CatalogChange::Everything`).
use std::future::Future;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::bus::{Channel, Heard, NotificationBus};
use crate::ids::{AppName, ScriptName};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum CatalogChange {
    /// A script was deployed, rolled back or deleted: drop its compiled form.
    Script { app: AppName, script: ScriptName },
    /// An app's triggers changed: rebuild its route table.
    Triggers { app: AppName },
    /// An app was created or deleted, with everything in it.
    App { app: AppName },
    /// Changes may have been missed: reload everything from the store.
    Everything,
    /// The limits of an app or of one of its scripts were set or reset.
    Limits { app: AppName },
}

#[async_trait]
pub trait CatalogListener: Send + Sync {
    async fn catalog_changed(&self, change: &CatalogChange);
}

/// The fan-out from the manager to every cache on this node, and through the bus to the
/// other nodes.
#[derive(Clone, Default)]
pub struct Catalog {
    listeners: Arc<RwLock<Vec<Arc<dyn CatalogListener>>>>,
    bus: Option<Arc<dyn NotificationBus>>,
}

impl Catalog {
    /// A catalog whose changes also reach the other nodes on `bus`.
    pub fn with_bus(bus: Arc<dyn NotificationBus>) -> Catalog {
        Catalog {
            listeners: Arc::default(),
            bus: Some(bus),
        }
    }

    pub fn subscribe(&self, listener: Arc<dyn CatalogListener>) {
        self.listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    /// Tell every listener of this node, one after the other, and return when all have
    /// applied it; then tell the other nodes. A bus that cannot be reached is logged: the
    /// other nodes reload everything when their own connection comes back, and this
    /// node's answer stays true for this node.
    pub async fn publish(&self, change: CatalogChange) {
        self.apply(&change).await;
        if let Some(bus) = &self.bus {
            let payload = serde_json::to_string(&change).unwrap_or_default();
            if let Err(error) = bus.notify(Channel::Catalog, &payload).await {
                tracing::warn!(
                    ?error,
                    ?change,
                    "a catalog change could not be sent to the other nodes"
                );
            }
        }
    }

    async fn apply(&self, change: &CatalogChange) {
        let listeners = self
            .listeners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for listener in listeners {
            listener.catalog_changed(change).await;
        }
    }

    /// Apply the changes other nodes publish until `stop` resolves or the bus is gone.
    /// Returns at once for a catalog without a bus.
    pub async fn follow(&self, stop: impl Future<Output = ()>) {
        let Some(bus) = &self.bus else {
            return;
        };
        let mut heard = bus.subscribe();
        tokio::pin!(stop);
        loop {
            let next = tokio::select! {
                () = &mut stop => return,
                next = heard.recv() => next,
            };
            match next {
                None => return,
                Some(Heard::Missed) => self.apply(&CatalogChange::Everything).await,
                Some(Heard::Notice {
                    channel: Channel::Catalog,
                    payload,
                    own: false,
                }) => match serde_json::from_str::<CatalogChange>(&payload) {
                    Ok(change) => self.apply(&change).await,
                    Err(error) => {
                        tracing::warn!(%error, "an unreadable catalog notice; reloading everything");
                        self.apply(&CatalogChange::Everything).await;
                    }
                },
                Some(Heard::Notice { .. }) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::bus::LocalBus;

    #[derive(Default)]
    struct Seen(Mutex<Vec<CatalogChange>>);

    #[async_trait]
    impl CatalogListener for Seen {
        async fn catalog_changed(&self, change: &CatalogChange) {
            self.0.lock().unwrap().push(change.clone());
        }
    }

    fn app() -> AppName {
        AppName::parse("shop").unwrap()
    }

    #[test]
    fn a_change_round_trips_through_its_notice() {
        let changes = [
            CatalogChange::Script {
                app: app(),
                script: ScriptName::parse("hello").unwrap(),
            },
            CatalogChange::Triggers { app: app() },
            CatalogChange::App { app: app() },
            CatalogChange::Everything,
        ];
        for change in changes {
            let text = serde_json::to_string(&change).unwrap();
            assert_eq!(
                serde_json::from_str::<CatalogChange>(&text).unwrap(),
                change
            );
        }
    }

    #[tokio::test]
    async fn changes_from_other_nodes_reach_the_listeners_and_own_ones_once() {
        let bus = Arc::new(LocalBus::default());
        let catalog = Catalog::with_bus(bus.clone());
        let seen = Arc::new(Seen::default());
        catalog.subscribe(seen.clone());
        let stop = Arc::new(tokio::sync::Notify::new());
        let following = tokio::spawn({
            let catalog = catalog.clone();
            let stop = stop.clone();
            async move { catalog.follow(async move { stop.notified().await }).await }
        });
        tokio::task::yield_now().await;
        // Published here: applied once, not again when the bus echoes it.
        catalog.publish(CatalogChange::App { app: app() }).await;
        // Published by another node, as the PostgreSQL bus delivers it.
        let remote = serde_json::to_string(&CatalogChange::Triggers { app: app() }).unwrap();
        bus.deliver(Heard::Notice {
            channel: Channel::Catalog,
            payload: remote.into(),
            own: false,
        });
        // Then notices were lost: everything is reloaded.
        bus.deliver(Heard::Missed);
        for _ in 0..100 {
            if seen.0.lock().unwrap().len() >= 3 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        stop.notify_one();
        following.await.unwrap();
        assert_eq!(
            *seen.0.lock().unwrap(),
            vec![
                CatalogChange::App { app: app() },
                CatalogChange::Triggers { app: app() },
                CatalogChange::Everything,
            ]
        );
    }
}
