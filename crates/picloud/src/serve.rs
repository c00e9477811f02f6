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

/// Which services this process runs. `All` is `picloud serve`; the cluster binaries run
/// one role each on a shared PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Manager, orchestrator and executor in one process.
    All,
    /// The control plane only: the admin API (and health).
    Manager,
    /// A worker node: public endpoints and the script threads (and health).
    Node,
}

impl Role {
    fn manages(self) -> bool {
        matches!(self, Role::All | Role::Manager)
    }

    fn runs_scripts(self) -> bool {
        matches!(self, Role::All | Role::Node)
    }
}

/// A running server: what tests and `main` need from it while it runs.
pub struct Server {
    /// The database the server uses.
    pub store: Store,
    /// An admin token created on this start because none existed; print it once.
    pub generated_admin_token: Option<String>,
    orchestrator: Option<Arc<Orchestrator>>,
    done: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Every invocation record, after it has been committed.
    ///
    /// # Panics
    /// On a `Role::Manager` server, which runs no scripts.
    pub fn subscribe_recorded(&self) -> broadcast::Receiver<InvocationRecord> {
        self.orchestrator
            .as_ref()
            .expect("this role runs no scripts")
            .subscribe_recorded()
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
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
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
pub async fn start(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<Server> {
    start_role(listener, config, shutdown, Role::All).await
}

/// `start` for one role.
///
/// # Errors
/// When the data directory or the database cannot be opened or migrated.
pub async fn start_role(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
    role: Role,
) -> anyhow::Result<Server> {
    std::fs::create_dir_all(&config.data_dir).context("cannot create the data directory")?;
    let store = storage::connect(&config.database_url())
        .await
        .context("cannot open the database")?;
    let generated_admin_token = if role.manages() {
        manager_core::bootstrap_admin_token(&store, config.admin_token.as_deref())
            .await
            .context("cannot set up the admin token")?
    } else {
        None
    };
    let catalog = Catalog::default();
    let mut app = Router::new().merge(health::router(store.clone()));
    health::metrics_handle();
    let mut node = None;
    if role.runs_scripts() {
        let (executor, orchestrator) = start_node(&config, &store, &catalog).await?;
        if role.manages() {
            app = app.merge(manager_router(&config, &store, &catalog, executor.clone()));
        }
        app = app.merge(orchestrator.router());
        node = Some((executor, orchestrator));
    } else {
        let checker = Arc::new(executor_core::Executor::checker(config.executor_limits()));
        app = app.merge(manager_router(&config, &store, &catalog, checker));
    }
    let app = app.layer(
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
    let orchestrator = node.as_ref().map(|(_, o)| o.clone());
    let done = {
        let store = store.clone();
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
            if let Some((executor, orchestrator)) = node {
                orchestrator.finish().await;
                let _ = tokio::task::spawn_blocking(move || executor.shutdown()).await;
            }
            store.health.close().await;
            served
                .context("the HTTP server task panicked")?
                .context("serving HTTP failed")
        })
    };
    Ok(Server {
        store,
        generated_admin_token,
        orchestrator,
        done,
    })
}

fn manager_router(
    config: &Config,
    store: &Store,
    catalog: &Catalog,
    checker: Arc<dyn shared::ScriptChecker>,
) -> Router {
    manager_core::router(manager_core::ManagerDeps {
        store: store.clone(),
        catalog: catalog.clone(),
        checker,
        max_script_bytes: config.http.max_script_bytes,
    })
}

/// The script threads and the public endpoints, subscribed to this node's catalog.
async fn start_node(
    config: &Config,
    store: &Store,
    catalog: &Catalog,
) -> anyhow::Result<(Arc<executor_core::Executor>, Arc<Orchestrator>)> {
    let threads = match config.executor.threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let executor = executor_core::Executor::start(
        executor_core::ExecutorConfig {
            threads,
            queue_capacity: config.executor.queue_capacity,
            limits: config.executor_limits(),
            outbound: executor_core::OutboundConfig {
                allow_hosts: config.outbound.allow_hosts.clone(),
                allow_cidrs: executor_core::ssrf::parse_cidrs(&config.outbound.allow_cidrs)
                    .context("outbound.allow_cidrs")?,
                timeout: Duration::from_millis(config.outbound.timeout_ms),
                max_response_bytes: config.outbound.max_response_bytes,
                max_redirects: config.outbound.max_redirects,
                resolver: None,
            },
        },
        store.clone(),
        tokio::runtime::Handle::current(),
    );
    let ingress = IngressConfig {
        max_body_bytes: config.http.max_body_bytes,
        request_timeout: Duration::from_millis(config.http.request_timeout_ms),
    };
    let orchestrator = Orchestrator::start(store.clone(), executor.clone(), ingress)
        .await
        .context("cannot load the route tables")?;

    catalog.subscribe(executor.clone());
    catalog.subscribe(orchestrator.catalog_listener());
    Ok((executor, orchestrator))
}
