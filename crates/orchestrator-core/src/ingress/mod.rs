//! Public ingress: `{METHOD} /{app}/{path...}` runs the script of the matching `http` trigger.
//!
//! `Orchestrator` owns the route tables, the lane to the executor, the recorder and the
//! event dispatcher (which shares the executor with the lane). Its
//! router is meant to be the fallback after the platform's own routes (`/api/v1`,
//! `/healthz`, ...), which win in axum's matcher because they are static.
mod commit;
mod error;
mod http;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use shared::{
    CatalogChange, CatalogListener, ExecutorClient, InvocationRecord, LimitPolicy, Store,
    StoreError,
};
use tokio::sync::broadcast;

use crate::dispatcher::{DispatchConfig, Dispatcher};
use crate::lane::Lane;
use crate::limits::{LimitRefresher, LimitTable};
use crate::mailer::MailSender;
use crate::realtime::{Hub, RealtimeConfig};
use crate::recorder::{FailureBudgets, QUEUE_CAPACITY, RecordBounds, Recorder, SuccessSampler};
use crate::routes::{RouteRefresher, RouteTables};

pub use error::{INVOCATION_ID_HEADER, IngressError};
pub use http::Answering;

/// Limits of the public ingress.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// Larger request bodies are refused with 413 (default 1 MiB).
    pub max_body_bytes: usize,
    /// How long a request may wait for its answer, queue and run together (default 30 s).
    pub request_timeout: Duration,
    /// Successful HTTP invocations recorded per second at most; past it, successes are
    /// sampled out (counted in `picloud_invocation_records_sampled_total{source="http"}`).
    /// Failures and timeouts are recorded up to `records`. 0 records every success (default
    /// 1,000).
    pub recorded_successes_per_sec: u32,
    /// What one app can make the recorder write: failure records per second, log bytes.
    pub records: RecordBounds,
    /// The server's defaults and ceilings for per-app limits, on both the HTTP and the
    /// event path.
    pub limits: LimitPolicy,
    /// Realtime streams (`/{app}/_realtime`).
    pub realtime: RealtimeConfig,
    /// This node's spans (requests and events); ids only unless exporting.
    pub tracing: crate::trace::Tracing,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            recorded_successes_per_sec: 1_000,
            records: RecordBounds::default(),
            limits: LimitPolicy::default(),
            realtime: RealtimeConfig::default(),
            tracing: crate::trace::Tracing::off(),
        }
    }
}

/// One node's ingress and dispatch: route tables, the lane to the executor, the
/// invocation recorder, the event dispatcher.
pub struct Orchestrator {
    /// For rebuilding route tables on catalog changes; never read on the hot path.
    store: Store,
    /// Every app's routes, in memory.
    routes: Arc<RouteTables>,
    /// Every app's limits and this node's rate buckets, in memory.
    limits: Arc<LimitTable>,
    lane: Lane,
    recorder: Recorder,
    /// How many successful HTTP records may still be written this second.
    successes: SuccessSampler,
    /// How many failure records each app may still write this second.
    failure_budgets: Arc<FailureBudgets>,
    dispatcher: Dispatcher,
    /// Commits HTTP runs' effects, several in one transaction when they finish together.
    writes: commit::Committer,
    /// This node's realtime streams.
    realtime: Arc<Hub>,
    config: IngressConfig,
}

impl Orchestrator {
    /// Loads every http trigger into the route tables and every app's limits, spawns the
    /// recorder task and the event dispatcher (email events go to `mailer`).
    ///
    /// # Errors
    /// When the triggers or the limits cannot be read from the store.
    pub async fn start(
        store: Store,
        executor: Arc<dyn ExecutorClient>,
        mailer: Arc<dyn MailSender>,
        config: IngressConfig,
        dispatch: DispatchConfig,
    ) -> Result<Arc<Self>, StoreError> {
        let apps = store.apps.list().await?;
        let triggers = store.triggers.list_all().await?;
        let routes = Arc::new(RouteTables::from_triggers(&apps, &triggers));
        let limits = Arc::new(LimitTable::load(store.limits.clone(), config.limits.clone()).await?);
        let recorder = Recorder::start(store.invocations.clone(), QUEUE_CAPACITY);
        crate::announce::spawn(store.bus.clone(), recorder.subscribe());
        let failure_budgets = Arc::new(FailureBudgets::new(config.records.failures_per_sec));
        let dispatcher = Dispatcher::start(
            store.clone(),
            executor.clone(),
            mailer,
            dispatch,
            recorder.announcer(),
            recorder.failure_gate(Arc::clone(&failure_budgets)),
            Arc::clone(&limits),
            config.tracing.clone(),
        );
        let lane = Lane::new(executor, config.request_timeout);
        let writes = commit::Committer::start(store.clone());
        let realtime = Hub::start(store.clone(), config.realtime.clone());
        Ok(Arc::new(Orchestrator {
            store,
            routes,
            limits,
            lane,
            recorder,
            successes: SuccessSampler::new(config.recorded_successes_per_sec, "http"),
            failure_budgets,
            dispatcher,
            writes,
            realtime,
            config,
        }))
    }

    /// This node's spans (to flush them on shutdown).
    pub fn tracing(&self) -> &crate::trace::Tracing {
        &self.config.tracing
    }

    /// Serves every path the platform does not claim (`/{app}/...`), for every method.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        http::router(self.clone())
    }

    /// Answers one public request (`/{app}/...`) without a router in front: for a server
    /// that tells platform paths from app paths itself.
    ///
    /// A request that needs no waiting is answered before this returns
    /// (`Answering::Now`): see `http::handle`.
    pub fn serve(self: &Arc<Self>, request: axum::extract::Request) -> Answering {
        http::handle(self, request)
    }

    /// Rebuilds one app's route table on `CatalogChange::Triggers` or `App`, and reloads
    /// its limits on `Limits`, `Script` or `App`.
    pub fn catalog_listener(self: &Arc<Self>) -> Arc<dyn CatalogListener> {
        Arc::new(NodeCaches {
            routes: RouteRefresher {
                tables: self.routes.clone(),
                apps: self.store.apps.clone(),
                triggers: self.store.triggers.clone(),
            },
            limits: LimitRefresher {
                table: self.limits.clone(),
            },
        })
    }

    /// Every invocation record, HTTP and event, after the transaction holding it has
    /// committed.
    pub fn subscribe_recorded(&self) -> broadcast::Receiver<InvocationRecord> {
        self.recorder.subscribe()
    }

    /// This node's realtime streams: their counts, and `close` to end them on shutdown.
    pub fn realtime(&self) -> &Arc<Hub> {
        &self.realtime
    }

    /// Events this node has claimed and not yet committed (the nodes list shows it).
    pub fn events_in_flight(&self) -> usize {
        self.dispatcher.in_flight()
    }

    /// Called after HTTP has drained: stops claiming events, lets the running ones finish
    /// and commits them, then writes the queued records and stops the recorder.
    pub async fn finish(&self) {
        self.dispatcher.finish().await;
        self.recorder.finish().await;
    }
}

/// The node's caches that follow the catalog: route tables and limits.
struct NodeCaches {
    routes: RouteRefresher,
    limits: LimitRefresher,
}

#[async_trait]
impl CatalogListener for NodeCaches {
    async fn catalog_changed(&self, change: &CatalogChange) {
        self.routes.catalog_changed(change).await;
        self.limits.catalog_changed(change).await;
    }
}
