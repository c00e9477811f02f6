//! How a control-plane change reaches the caches that serve the hot path (routes, compiled
//! scripts, per-app limits).
//!
//! The manager publishes a `CatalogChange` after its store write has committed and awaits
//! every listener before it answers, so a deploy's response means "the next request runs
//! the new version". In cluster mode a PostgreSQL NOTIFY relays the same changes to the
//! other nodes' listeners.
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use crate::ids::{AppName, ScriptName};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogChange {
    /// A script was deployed, rolled back or deleted: drop its compiled form.
    Script { app: AppName, script: ScriptName },
    /// An app's triggers changed: rebuild its route table.
    Triggers { app: AppName },
    /// An app was created or deleted, with everything in it.
    App { app: AppName },
    /// The limits of an app or of one of its scripts were set or reset.
    Limits { app: AppName },
}

#[async_trait]
pub trait CatalogListener: Send + Sync {
    async fn catalog_changed(&self, change: &CatalogChange);
}

/// The fan-out from the manager to every cache on this node.
#[derive(Clone, Default)]
pub struct Catalog {
    listeners: Arc<RwLock<Vec<Arc<dyn CatalogListener>>>>,
}

impl Catalog {
    pub fn subscribe(&self, listener: Arc<dyn CatalogListener>) {
        self.listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    /// Tell every listener, one after the other, and return when all have applied it.
    pub async fn publish(&self, change: CatalogChange) {
        let listeners = self
            .listeners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for listener in listeners {
            listener.catalog_changed(&change).await;
        }
    }
}
