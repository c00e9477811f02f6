//! Wiring the three services into one process, and taking them down in order.
//!
//! Shutdown order (what must stay true): stop accepting; let in-flight requests finish for
//! at most `shutdown_grace_ms`; flush the invocation writer (every answered request keeps
//! its record); stop the script threads; close the database pool.
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::Request;
use orchestrator_core::{IngressConfig, Orchestrator};
use shared::{Catalog, InvocationRecord, Store};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::health;

/// A running server: what tests and `main` need from it while it runs.
pub struct Server {
    /// The database the server uses.
    pub store: Store,
    /// An admin token created on this start because none existed; print it once.
    pub generated_admin_token: Option<String>,
    orchestrator: Arc<Orchestrator>,
    done: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Every invocation record, after it has been committed.
    pub fn subscribe_recorded(&self) -> broadcast::Receiver<InvocationRecord> {
        self.orchestrator.subscribe_recorded()
    }

    /// Wait until the server has shut down (after the token is cancelled).
    ///
    /// # Errors
    /// When serving failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.done.await.context("the server task panicked")?
    }
}

/// Run PiCloud on `listener` until `shutdown` is cancelled.
///
/// # Errors
/// When the database cannot be opened or migrated, or serving fails.
pub async fn serve(listener: TcpListener, config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let server = start(listener, config, shutdown).await?;
    if let Some(token) = &server.generated_admin_token {
        println!("admin token (shown once, keep it): {token}");
    }
    server.wait().await
}

/// Open the store, start the services and begin serving; returns once requests are accepted.
///
/// # Errors
/// When the data directory or the database cannot be opened or migrated.
pub async fn start(listener: TcpListener, config: Config, shutdown: CancellationToken) -> anyhow::Result<Server> {
    std::fs::create_dir_all(&config.data_dir).context("cannot create the data directory")?;
    let store = storage::connect(&config.database_url()).await.context("cannot open the database")?;
    let generated_admin_token = manager_core::bootstrap_admin_token(&store, config.admin_token.as_deref())
        .await
        .context("cannot set up the admin token")?;

    let threads = match config.executor.threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let executor = executor_core::Executor::start(
        executor_core::ExecutorConfig {
            threads,
            queue_capacity: config.executor.queue_capacity,
            limits: config.executor_limits(),
        },
        store.scripts.clone(),
        tokio::runtime::Handle::current(),
    );
    let ingress = IngressConfig {
        max_body_bytes: config.http.max_body_bytes,
        request_timeout: Duration::from_millis(config.http.request_timeout_ms),
    };
    let orchestrator = Orchestrator::start(store.clone(), executor.clone(), ingress)
        .await
        .context("cannot load the route tables")?;

    let catalog = Catalog::default();
    catalog.subscribe(executor.clone());
    catalog.subscribe(orchestrator.catalog_listener());

    health::metrics_handle();
    let manager = manager_core::router(manager_core::ManagerDeps {
        store: store.clone(),
        catalog,
        checker: executor.clone(),
        max_script_bytes: config.http.max_script_bytes,
    });
    let app = Router::new()
        .merge(health::router(store.clone()))
        .merge(manager)
        .merge(orchestrator.router())
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                    let request_id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id)
                }))
                .layer(PropagateRequestIdLayer::x_request_id()),
        );

    let grace = Duration::from_millis(config.http.shutdown_grace_ms);
    let done = {
        let store = store.clone();
        let orchestrator = orchestrator.clone();
        tokio::spawn(async move {
            let mut http = tokio::spawn(
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                    .into_future(),
            );
            let served = tokio::select! {
                result = &mut http => result,
                () = shutdown.cancelled() => match tokio::time::timeout(grace, &mut http).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!(grace_ms = grace.as_millis() as u64, "in-flight requests outlived the shutdown grace; closing them");
                        http.abort();
                        Ok(Ok(()))
                    }
                },
            };
            orchestrator.finish().await;
            let pool = executor.clone();
            let _ = tokio::task::spawn_blocking(move || pool.shutdown()).await;
            store.health.close().await;
            served.context("the HTTP server task panicked")?.context("serving HTTP failed")
        })
    };
    Ok(Server { store, generated_admin_token, orchestrator, done })
}
