//! Wiring the three services into one process, and taking them down in order.
//!
//! Shutdown order (what must stay true): stop accepting; let in-flight requests finish for
//! at most `shutdown_grace_ms`; flush the invocation writer (every answered request keeps
//! its record); stop the script threads; wait for the cron scheduler and the sweepers;
//! close the database pool; release the data directory's lock.
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::Request;
use orchestrator_core::{DispatchConfig, IngressConfig, MailSender, MailboxMailer, Orchestrator};
use shared::{Catalog, InvocationRecord, Store};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::data_dir;
use crate::front::{AppHosts, Front};
use crate::health;
use crate::listener::{self, ListenerOptions};
use crate::membership;
use crate::timeouts::ClientTimeouts;

/// `n` days (a configured retention), saturating rather than overflowing.
fn days(n: u64) -> Duration {
    Duration::from_secs(n.saturating_mul(24 * 60 * 60))
}

/// A platform path that names nothing (`/api/v1/nope`): the same JSON 404 as elsewhere.
async fn platform_not_found() -> axum::response::Response {
    use axum::response::IntoResponse;
    let code = shared::ErrorCode::NotFound;
    let body = shared::ErrorBody::new(code, "no such path".to_owned());
    (code.status(), axum::Json(body)).into_response()
}

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
    /// A worker node whose scripts run in a separate `picloud-executor` process, reached
    /// over a Unix socket (`picloud-orchestrator`): started and restarted by this process,
    /// or connected to at `[executor] socket`.
    Orchestrator,
}

impl Role {
    fn manages(self) -> bool {
        matches!(self, Role::All | Role::Manager)
    }

    fn runs_scripts(self) -> bool {
        matches!(self, Role::All | Role::Node | Role::Orchestrator)
    }

    /// The role's name in the nodes list.
    fn name(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Manager => "manager",
            Role::Node | Role::Orchestrator => "node",
        }
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
    check_cluster_database(&config, role)?;
    config
        .executor_limits()
        .validate()
        .map_err(anyhow::Error::msg)?;
    if role.manages() {
        check_admin_token(config.admin_token.as_deref())?;
    }
    data_dir::create_private(&config.data_dir)?;
    // Cluster roles on PostgreSQL may share a directory (local blobs on one host); a
    // SQLite database and the all-in-one server may not.
    let sqlite = storage::backend_of(&config.database_url()) == Ok(storage::Backend::Sqlite);
    let data_dir_lock = if role == Role::All || sqlite {
        Some(data_dir::lock(&config.data_dir)?)
    } else {
        None
    };
    let node_id = config
        .node_id
        .clone()
        .unwrap_or_else(|| format!("node-{}", uuid::Uuid::new_v4().simple()));
    let address = match &config.cluster.advertise_url {
        Some(url) => url.clone(),
        None => format!("http://{}", listener.local_addr()?),
    };
    let (options, key) = store_options(&config, role)?;
    let store = storage::connect_with(&config.database_url(), options)
        .await
        .map_err(|e| key.explain(e))?;
    key.save()?;
    // Background tasks that use the store: awaited on shutdown before the pool closes.
    let background = TaskTracker::new();
    let sweeps = if sqlite {
        Sweeps::AtStart
    } else {
        Sweeps::Hourly
    };
    background.spawn(sweep_objects(store.clone(), sweeps, shutdown.clone()));
    let generated_admin_token = if role.manages() {
        manager_core::bootstrap_admin_token(&store, config.admin_token.as_deref())
            .await
            .context("cannot set up the admin token")?
    } else {
        None
    };
    // Changes made here reach this node's caches at once and the other nodes through the
    // bus; changes the other nodes make arrive through `follow`.
    let catalog = Catalog::with_bus(store.bus.clone());
    {
        let catalog = catalog.clone();
        let shutdown = shutdown.clone();
        background.spawn(async move { catalog.follow(shutdown.cancelled_owned()).await });
    }
    let mut app = Router::new().merge(health::router(store.clone()));
    health::metrics_handle();
    let mut node = None;
    let mut ingress = None;
    if role.manages() {
        let scheduler = manager_core::CronScheduler::start(store.clone(), shutdown.clone());
        catalog.subscribe(scheduler.clone());
        background.spawn(async move { scheduler.stopped().await });
        let retention = days(config.events.dead_letter_retention_days.max(1));
        let sweeper =
            manager_core::RetentionSweeper::start(store.clone(), retention, shutdown.clone());
        background.spawn(async move { sweeper.await.ok() });
        let sampler = manager_core::QueueSampler::start(store.clone(), shutdown.clone());
        background.spawn(async move { sampler.await.ok() });
        background.spawn(crate::realtime_prune::run(
            store.clone(),
            crate::realtime_prune::Retention::of(&config.realtime),
            shutdown.clone(),
            || {},
        ));
        if config.invocations.retention_days > 0 {
            let keep = days(config.invocations.retention_days);
            let sweeper =
                manager_core::InvocationSweeper::start(store.clone(), keep, shutdown.clone());
            background.spawn(async move { sweeper.await.ok() });
        }
    }
    // This process in the nodes table: written at start, then on each heartbeat with its
    // load (PostgreSQL), or only at start (SQLite: the nodes list asks the process).
    let me = shared::store::NodeInfo {
        id: node_id.clone(),
        role: role.name().to_owned(),
        address,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        key_fingerprint: storage::crypto::key_fingerprint(&key.key),
        started_at: chrono::Utc::now(),
        heartbeat_at: chrono::Utc::now(),
        heartbeat_interval: Duration::from_millis(config.cluster.heartbeat_ms.max(10)),
        in_flight: 0,
        queue_depth: 0,
        realtime_streams: 0,
    };
    if role.runs_scripts() {
        let (executor, orchestrator) =
            start_node(&config, &store, &catalog, &node_id, role).await?;
        node = Some((executor, orchestrator));
    }
    let load = node_load(node.as_ref().map(|(e, o)| (e.clone(), o.clone())));
    let this_node = membership::this_node(&me, load.clone());
    if let Some((executor, orchestrator)) = &node {
        if role.manages() {
            let checker: Arc<dyn shared::ScriptChecker> = match executor {
                NodeExecutor::Local(executor) => executor.clone(),
                NodeExecutor::Remote(_) => {
                    Arc::new(executor_core::Executor::checker(config.executor_limits()))
                }
            };
            let subscribers: Arc<dyn shared::realtime::Subscribers> =
                orchestrator.realtime().clone();
            app = app.merge(manager_router(
                &config,
                &store,
                &catalog,
                checker,
                Some(subscribers),
                Some(this_node),
                shutdown.clone(),
            ));
        }
        // Open streams never finish on their own: they end when shutdown begins, so the
        // drain does not wait for them.
        let hub = orchestrator.realtime().clone();
        let closing = shutdown.clone();
        tokio::spawn(async move {
            closing.cancelled().await;
            hub.close();
        });
        ingress = Some(orchestrator.clone());
    } else {
        let checker = Arc::new(executor_core::Executor::checker(config.executor_limits()));
        app = app.merge(manager_router(
            &config,
            &store,
            &catalog,
            checker,
            None,
            Some(this_node),
            shutdown.clone(),
        ));
    }
    membership::register(&store, &me)
        .await
        .context("cannot register this node in the nodes table")?;
    let beats = if sqlite {
        membership::Beats::AtStartOnly
    } else {
        membership::Beats::Periodic
    };
    background.spawn(membership::heartbeat(
        store.clone(),
        me,
        load,
        beats,
        shutdown.clone(),
    ));
    if role.manages() {
        app = app.merge(crate::dashboard::router());
    }
    // The platform's routes get a request id and a log span per request. The public
    // ingress does its own (cheaper) request ids: a span per call would cost as much as
    // running a small script.
    let platform = app.fallback(platform_not_found).layer(
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
    let hosts = AppHosts::new(
        config.http.app_base_domain.as_deref(),
        config.http.app_paths,
    );
    let front = Front::new(platform, ingress, hosts);
    let listener_options = listener_options(&config);

    let grace = Duration::from_millis(config.http.shutdown_grace_ms);
    let orchestrator = node.as_ref().map(|(_, o)| o.clone());
    let done = {
        let store = store.clone();
        tokio::spawn(async move {
            // Returns once every connection has closed, or the grace is over.
            let served = tokio::spawn(listener::serve(
                listener,
                front,
                listener_options,
                shutdown.clone(),
            ))
            .await;
            if let Some((executor, orchestrator)) = node {
                // Claimed events get the same grace as requests; whatever is still running
                // then is left to its lease, which another start or node picks up.
                if tokio::time::timeout(grace, orchestrator.finish())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        "events still running after the shutdown grace; their leases will expire"
                    );
                }
                executor.shutdown().await;
                // The last runs' spans go out before the process ends.
                orchestrator.tracing().shutdown(grace).await;
            }
            // The cron scheduler and the sweepers end on the shutdown token; a sweep under
            // way finishes its statement first.
            background.close();
            if tokio::time::timeout(grace, background.wait())
                .await
                .is_err()
            {
                tracing::warn!("background tasks still running after the shutdown grace");
            }
            store.health.close().await;
            drop(data_dir_lock);
            served.context("the HTTP server task panicked")
        })
    };
    Ok(Server {
        store,
        generated_admin_token,
        orchestrator,
        done,
    })
}

/// The shortest `PICLOUD_ADMIN_TOKEN` accepted: an admin token that can be guessed is
/// worse than a generated one.
const MIN_ADMIN_TOKEN_CHARS: usize = 16;

fn check_admin_token(token: Option<&str>) -> anyhow::Result<()> {
    let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(());
    };
    let chars = token.chars().count();
    if chars < MIN_ADMIN_TOKEN_CHARS {
        anyhow::bail!(
            "PICLOUD_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_CHARS} characters long \
             (it has {chars}); use a random one, e.g. `openssl rand -hex 32`"
        );
    }
    Ok(())
}

/// The listener's limits and timeouts from `[http]`.
fn listener_options(config: &Config) -> ListenerOptions {
    let http = &config.http;
    ListenerOptions {
        timeouts: ClientTimeouts {
            header_read: Duration::from_millis(http.header_read_timeout_ms.max(1)),
            body_read: Duration::from_millis(http.body_read_timeout_ms.max(1)),
            idle: Duration::from_millis(http.idle_timeout_ms.max(1)),
            write: Duration::from_millis(http.write_timeout_ms.max(1)),
        },
        max_connections: match http.max_connections {
            0 => listener::default_max_connections(),
            n => n,
        },
        h2c: http.h2c,
        grace: Duration::from_millis(http.shutdown_grace_ms),
    }
}

/// How this node's realtime streams behave, from `[realtime]`.
fn realtime_config(r: &crate::config::RealtimeSettings) -> orchestrator_core::RealtimeConfig {
    orchestrator_core::RealtimeConfig {
        heartbeat: Duration::from_millis(r.heartbeat_ms.max(10)),
        retry: Duration::from_millis(r.retry_ms),
        max_topics: r.max_topics.max(1),
        max_connections: r.max_connections,
        max_connections_per_app: r.max_connections_per_app,
        buffer: r.buffer.max(1),
        ..orchestrator_core::RealtimeConfig::default()
    }
}

fn manager_router(
    config: &Config,
    store: &Store,
    catalog: &Catalog,
    checker: Arc<dyn shared::ScriptChecker>,
    realtime: Option<Arc<dyn shared::realtime::Subscribers>>,
    this_node: Option<shared::store::ThisNode>,
    closing: CancellationToken,
) -> Router {
    manager_core::router_with_limits(
        manager_core::ManagerDeps {
            store: store.clone(),
            catalog: catalog.clone(),
            checker,
            max_script_bytes: config.http.max_script_bytes,
            realtime,
            closing,
            this_node,
        },
        config.limit_policy(),
    )
}

/// What this node reports as its load (nothing for a manager, which runs no scripts).
fn node_load(
    parts: Option<(NodeExecutor, Arc<Orchestrator>)>,
) -> impl Fn() -> shared::store::NodeLoad + Clone + Send + Sync + 'static {
    let parts = parts.map(Arc::new);
    move || match parts.as_deref() {
        Some((executor, orchestrator)) => shared::store::NodeLoad {
            in_flight: orchestrator.events_in_flight() as u64,
            queue_depth: executor.queue_depth() as u64,
            realtime_streams: orchestrator.realtime().connections() as u64,
        },
        None => shared::store::NodeLoad::default(),
    }
}

/// A node's executor: script threads in this process, or a `picloud-executor` process.
#[derive(Clone)]
enum NodeExecutor {
    Local(Arc<executor_core::Executor>),
    Remote(Arc<executor_core::remote::RemoteExecutor>),
}

impl NodeExecutor {
    fn client(&self) -> Arc<dyn shared::ExecutorClient> {
        match self {
            NodeExecutor::Local(e) => e.clone(),
            NodeExecutor::Remote(e) => e.clone(),
        }
    }

    fn queue_depth(&self) -> usize {
        match self {
            NodeExecutor::Local(e) => e.queue_depth(),
            NodeExecutor::Remote(e) => e.queue_depth(),
        }
    }

    /// Stop the script threads (or the executor process) once the runs have finished.
    async fn shutdown(self) {
        match self {
            NodeExecutor::Local(e) => {
                let _ = tokio::task::spawn_blocking(move || e.shutdown()).await;
            }
            NodeExecutor::Remote(e) => e.shutdown().await,
        }
    }
}

/// The executor's configuration, from `[executor]`, `[limits]`, `[outbound]`, `[smtp]`
/// and `[realtime]`.
fn executor_config(config: &Config) -> anyhow::Result<executor_core::ExecutorConfig> {
    let threads = match config.executor.threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    Ok(executor_core::ExecutorConfig {
        threads,
        queue_capacity: config.executor.queue_capacity,
        limits: config.executor_limits(),
        outbound: outbound_config(config)?,
        email_senders: email_senders(&config.smtp),
        max_realtime_token_ttl: Duration::from_secs(config.realtime.max_token_ttl_secs.max(1)),
    })
}

/// The `picloud-executor` process of an orchestrator: started next to it (and restarted
/// when it dies), or reached at `[executor] socket`.
async fn remote_executor(
    config: &Config,
    store: &Store,
) -> anyhow::Result<Arc<executor_core::remote::RemoteExecutor>> {
    use executor_core::remote::{Endpoint, RemoteConfig, RemoteExecutor};
    let endpoint = match &config.executor.socket {
        Some(socket) => Endpoint::Connect {
            socket: socket.clone(),
        },
        None => {
            // `picloud orchestrator` starts `picloud executor`; `picloud-orchestrator` the
            // `picloud-executor` next to it.
            let (program, first_arg) = match &config.executor.binary {
                Some(binary) => (binary.clone(), None),
                None => {
                    let me = std::env::current_exe().context("cannot find this program's path")?;
                    if me.file_stem().is_some_and(|stem| stem == "picloud") {
                        (me, Some("executor"))
                    } else {
                        (me.with_file_name("picloud-executor"), None)
                    }
                }
            };
            let socket = config
                .data_dir
                .join(format!("executor-{}.sock", std::process::id()));
            // sun_path holds 108 bytes with the terminating NUL.
            if socket.as_os_str().len() > 100 {
                anyhow::bail!(
                    "the executor socket path {} is too long for a Unix socket: use a shorter \
                     PICLOUD_DATA_DIR or set PICLOUD_EXECUTOR__SOCKET",
                    socket.display()
                );
            }
            // The child reads its configuration (this process's, as resolved) from stdin.
            let mut stdin =
                serde_json::to_vec(config).context("cannot encode the configuration")?;
            stdin.push(b'\n');
            let arg = socket.clone();
            Endpoint::Spawn {
                command: Box::new(move || {
                    let mut command = std::process::Command::new(&program);
                    command.args(first_arg);
                    command.arg("--from-parent").arg("--socket").arg(&arg);
                    command
                }),
                stdin,
                socket,
            }
        }
    };
    let remote = RemoteExecutor::start(
        endpoint,
        store.objects.clone(),
        RemoteConfig {
            grace: Duration::from_millis(config.http.shutdown_grace_ms),
            ..RemoteConfig::default()
        },
    )
    .await
    .map_err(anyhow::Error::msg)
    .context("cannot start the executor")?;
    Ok(remote)
}

/// This node's spans: exported over OTLP when `[tracing] otlp_endpoint` is set.
fn tracing_of(config: &Config) -> anyhow::Result<orchestrator_core::Tracing> {
    let settings = &config.tracing;
    let Some(endpoint) = settings
        .otlp_endpoint
        .as_deref()
        .filter(|e| !e.trim().is_empty())
    else {
        return Ok(orchestrator_core::Tracing::off());
    };
    orchestrator_core::Tracing::exporting(&orchestrator_core::TraceExport {
        endpoint: endpoint.to_owned(),
        service_name: settings.service_name.clone(),
        delay: Duration::from_millis(settings.export_delay_ms),
        timeout: Duration::from_millis(settings.export_timeout_ms.max(1)),
    })
    .context("[tracing] otlp_endpoint")
}

/// The script threads (or the executor process), the public endpoints and the
/// dispatcher, subscribed to this node's catalog.
async fn start_node(
    config: &Config,
    store: &Store,
    catalog: &Catalog,
    node_id: &str,
    role: Role,
) -> anyhow::Result<(NodeExecutor, Arc<Orchestrator>)> {
    let executor = if role == Role::Orchestrator {
        NodeExecutor::Remote(remote_executor(config, store).await?)
    } else {
        NodeExecutor::Local(executor_core::Executor::start(
            executor_config(config)?,
            store.clone(),
            tokio::runtime::Handle::current(),
        ))
    };
    let ingress = IngressConfig {
        max_body_bytes: config.http.max_body_bytes,
        request_timeout: Duration::from_millis(config.http.request_timeout_ms),
        recorded_successes_per_sec: config.http.recorded_successes_per_sec,
        records: orchestrator_core::RecordBounds {
            failures_per_sec: config.invocations.failures_per_sec,
            max_log_bytes: config.invocations.max_record_log_bytes,
        },
        limits: config.limit_policy(),
        realtime: realtime_config(&config.realtime),
        tracing: tracing_of(config)?,
    };
    let events = &config.events;
    let dispatch = DispatchConfig {
        node_id: node_id.to_owned(),
        batch_size: events.batch_size.max(1),
        // A lease outlives any run (the dispatcher gives up on a run at 3/4 of it); per-app
        // timeouts are capped at half of it (`Config::limit_policy`).
        lease: config.event_lease(),
        max_in_flight: events.max_in_flight.max(1),
        backoff_base: Duration::from_millis(events.backoff_base_ms),
        backoff_max: Duration::from_millis(events.backoff_max_ms),
        max_record_log_bytes: config.invocations.max_record_log_bytes,
        recorded_successes_per_sec: events.recorded_successes_per_sec,
    };
    let mailer = mailer(config, store)?;
    let orchestrator =
        Orchestrator::start(store.clone(), executor.client(), mailer, ingress, dispatch)
            .await
            .context("cannot load the route tables")?;

    // A separate executor process follows the catalog itself.
    if let NodeExecutor::Local(executor) = &executor {
        catalog.subscribe(executor.clone());
    }
    catalog.subscribe(orchestrator.catalog_listener());
    Ok((executor, orchestrator))
}

/// Cluster roles share one database between processes and machines: only PostgreSQL can
/// be shared that way, so anything else is refused before anything is opened.
fn check_cluster_database(config: &Config, role: Role) -> anyhow::Result<()> {
    if role == Role::All {
        return Ok(());
    }
    require_cluster_database(config, role.name())
}

/// The refusal of [`check_cluster_database`] for the process named `name` (the executor
/// has no [`Role`] of its own).
pub(crate) fn require_cluster_database(config: &Config, name: &str) -> anyhow::Result<()> {
    let url = config.database_url();
    if storage::backend_of(&url) == Ok(storage::Backend::Postgres) {
        return Ok(());
    }
    let set = config
        .database_url
        .as_deref()
        .is_some_and(|url| !url.trim().is_empty());
    let given = if set {
        "PICLOUD_DATABASE_URL does not name a PostgreSQL database"
    } else {
        "PICLOUD_DATABASE_URL is not set"
    };
    anyhow::bail!(
        "the `{}` role runs in a cluster and needs PostgreSQL, but {given}: set \
         PICLOUD_DATABASE_URL=postgres://user:password@host/database (the same database on \
         every node), or run `picloud serve` for a single server on SQLite",
        name
    )
}

/// The key that seals app secrets: read from its file, or made new when there is none.
/// A new key is written only after the database has accepted it, so a lost key file with
/// secrets still stored is refused at start instead of being replaced.
struct SecretsKey {
    file: std::path::PathBuf,
    key: [u8; storage::crypto::KEY_LEN],
    new: bool,
}

impl SecretsKey {
    fn load(file: std::path::PathBuf) -> anyhow::Result<Self> {
        let read = storage::read_key_file(&file)
            .with_context(|| format!("cannot read the secrets key {}", file.display()))?;
        Ok(match read {
            Some(key) => SecretsKey {
                file,
                key,
                new: false,
            },
            None => SecretsKey {
                file,
                key: storage::crypto::random_key(),
                new: true,
            },
        })
    }

    /// Why the database could not be opened, in the operator's terms.
    fn explain(&self, e: shared::StoreError) -> anyhow::Error {
        let source = std::error::Error::source(&e);
        if let Some(other) = source.and_then(|s| s.downcast_ref::<storage::ClusterKeyMismatch>()) {
            return anyhow::anyhow!(
                "the secrets key {} is not the key of the running cluster (the node at {} \
                 uses another): copy the cluster's key file to this machine and point \
                 PICLOUD_SECRETS_KEY_FILE at it (every node must use the same key)",
                self.file.display(),
                other.address
            );
        }
        let mismatch = source.is_some_and(|s| s.downcast_ref::<storage::KeyMismatch>().is_some());
        match (mismatch, self.new) {
            (true, true) => anyhow::anyhow!(
                "the secrets key file {} is missing, but the database holds secrets sealed \
                 with a key: restore the file from a backup (a new key would leave every \
                 stored secret unreadable)",
                self.file.display()
            ),
            (true, false) => anyhow::anyhow!(
                "the secrets key in {} is not the key that sealed this database's secrets: \
                 restore the original file",
                self.file.display()
            ),
            (false, _) => anyhow::Error::new(e).context("cannot open the database"),
        }
    }

    /// Write a new key to its file (atomically, never over an existing file).
    fn save(&self) -> anyhow::Result<()> {
        if !self.new {
            return Ok(());
        }
        storage::write_key_file(&self.file, &self.key)
            .with_context(|| format!("cannot write the new secrets key {}", self.file.display()))?;
        tracing::info!(file = %self.file.display(), "created a new secrets key; back it up");
        Ok(())
    }
}

/// The `from` addresses scripts may use: the default sender (its address, when written
/// `Name <address>`) and `[smtp] allowed_from`.
fn email_senders(smtp: &crate::config::SmtpSettings) -> Vec<String> {
    let default = match smtp.from.rsplit_once('<') {
        Some((_, rest)) => rest.trim_end().trim_end_matches('>'),
        None => smtp.from.trim(),
    };
    std::iter::once(default.to_owned())
        .chain(smtp.allowed_from.iter().cloned())
        .collect()
}

/// Where blobs and the secrets key live, from the configuration.
fn store_options(
    config: &Config,
    role: Role,
) -> anyhow::Result<(storage::StoreOptions, SecretsKey)> {
    let key_file = match (&config.secrets_key_file, role) {
        (Some(file), _) => file.clone(),
        (None, Role::All) => config.data_dir.join("secret.key"),
        // Every node must decrypt what the manager encrypted: one key file, shared.
        (None, _) => anyhow::bail!(
            "cluster roles need PICLOUD_SECRETS_KEY_FILE (the same 32-byte key on every node)"
        ),
    };
    let key = SecretsKey::load(key_file)?;
    let secret_key = key.key;
    let blobs = &config.blobs;
    let s3 = match (
        &blobs.s3_bucket,
        &blobs.s3_access_key_id,
        &blobs.s3_secret_access_key,
    ) {
        (Some(bucket), Some(key_id), Some(secret)) => Some(storage::S3Options {
            endpoint: blobs.s3_endpoint.clone(),
            bucket: bucket.clone(),
            region: blobs
                .s3_region
                .clone()
                .unwrap_or_else(|| "us-east-1".into()),
            access_key_id: key_id.clone(),
            secret_access_key: secret.clone(),
            allow_http: blobs.s3_allow_http,
        }),
        (None, None, None) => None,
        _ => anyhow::bail!(
            "S3 blobs need blobs.s3_bucket, blobs.s3_access_key_id and blobs.s3_secret_access_key"
        ),
    };
    let options = storage::StoreOptions {
        blob_dir: blobs
            .dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("blobs")),
        s3,
        secret_key,
    };
    Ok((options, key))
}

/// The SSRF policy and limits of `http::*`.
fn outbound_config(config: &Config) -> anyhow::Result<executor_core::OutboundConfig> {
    let o = &config.outbound;
    Ok(executor_core::OutboundConfig {
        allow_hosts: o.allow_hosts.clone(),
        allow_cidrs: executor_core::ssrf::parse_cidrs(&o.allow_cidrs)
            .context("invalid outbound.allow_cidrs")?,
        timeout: Duration::from_millis(o.timeout_ms),
        max_response_bytes: o.max_response_bytes,
        max_redirects: o.max_redirects,
        resolver: None,
    })
}

/// SMTP when a host is configured, else the development mailbox.
fn mailer(config: &Config, store: &Store) -> anyhow::Result<Arc<dyn MailSender>> {
    let smtp = &config.smtp;
    let Some(host) = smtp.host.clone() else {
        return Ok(Arc::new(MailboxMailer::new(store.clone())));
    };
    let security = match smtp.security.as_str() {
        "none" => orchestrator_core::Security::None,
        "starttls" => orchestrator_core::Security::StartTls,
        "tls" => orchestrator_core::Security::Tls,
        other => anyhow::bail!("smtp.security must be none, starttls or tls, not '{other}'"),
    };
    let mailer = orchestrator_core::SmtpMailer::new(orchestrator_core::SmtpConfig {
        host,
        port: smtp.port,
        security,
        username: smtp.username.clone(),
        password: smtp.password.clone(),
        default_from: smtp.from.clone(),
        timeout: Duration::from_millis(smtp.timeout_ms),
    })
    .context("invalid SMTP settings")?;
    Ok(Arc::new(mailer))
}

/// How often the blob store's temp files are swept while processes may share its
/// directory.
const SWEEP_EVERY: Duration = Duration::from_secs(60 * 60);

/// Whether the blob temp sweep repeats on a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sweeps {
    /// Every `SWEEP_EVERY` (PostgreSQL: cluster processes on one host may share the
    /// directory, and one that crashes and never comes back leaves its temp files).
    Hourly,
    /// At start, and again only while the last sweep kept temp files too young to judge
    /// (SQLite: this process is the directory's only writer, so a leftover is a crash of
    /// an earlier start, found at this one's start).
    AtStart,
}

/// How long after a sweep that kept `kept` young temp files the next one is due (`None`:
/// never).
fn next_sweep(sweeps: Sweeps, kept: u64) -> Option<Duration> {
    match sweeps {
        Sweeps::Hourly => Some(SWEEP_EVERY),
        // Young files are old enough to judge once the age limit has passed.
        Sweeps::AtStart if kept > 0 => {
            Some(storage::objects::TEMP_MAX_AGE + Duration::from_secs(1))
        }
        Sweeps::AtStart => None,
    }
}

/// Remove temp files a crash left in the blob store: now, then as `sweeps` says (a
/// maintenance timer, not a work loop: each wake-up is one directory listing).
async fn sweep_objects(store: Store, sweeps: Sweeps, shutdown: CancellationToken) {
    loop {
        let kept = match store.objects.sweep().await {
            Ok(swept) => {
                if swept.removed > 0 {
                    tracing::info!(removed = swept.removed, "removed orphaned blob temp files");
                }
                swept.kept
            }
            Err(e) => {
                tracing::warn!(error = %e, "blob temp sweep failed");
                1
            }
        };
        let due = async {
            match next_sweep(sweeps, kept) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = due => {}
        }
    }
}

/// The `picloud-executor` process: the sandbox and the host API behind a Unix socket,
/// until `shutdown` is cancelled. It reads the store (scripts, KV, blobs, settings) and
/// writes blob bytes, but commits nothing: a run's effects go back to the orchestrator,
/// which commits them (with the event's outbox row, under its lease).
///
/// # Errors
/// A SQLite database (a separate executor would not hear catalog changes), a missing
/// secrets key, a database that cannot be opened, a socket that cannot be bound.
pub async fn serve_executor(
    config: Config,
    socket: &std::path::Path,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config
        .executor_limits()
        .validate()
        .map_err(anyhow::Error::msg)?;
    require_cluster_database(&config, "executor")?;
    let (options, key) = store_options(&config, Role::Orchestrator)?;
    if key.new {
        anyhow::bail!(
            "the secrets key file {} does not exist: the executor uses the cluster's key and \
             never makes one",
            key.file.display()
        );
    }
    let store = storage::connect_with(&config.database_url(), options)
        .await
        .map_err(|e| key.explain(e))?;
    let executor = executor_core::Executor::start(
        executor_config(&config)?,
        store.clone(),
        tokio::runtime::Handle::current(),
    );
    // Deploys and rollbacks reach the compiled-script cache through the bus.
    let catalog = Catalog::with_bus(store.bus.clone());
    catalog.subscribe(executor.clone());
    let following = {
        let catalog = catalog.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { catalog.follow(shutdown.cancelled_owned()).await })
    };
    let listener = bind_socket(socket)?;
    println!("{}{}", executor_core::remote::READY_LINE, socket.display());
    std::io::Write::flush(&mut std::io::stdout())?;
    tracing::info!(socket = %socket.display(), "the executor is serving");
    executor_core::remote::serve(listener, executor.clone(), shutdown.cancelled()).await;
    let _ = std::fs::remove_file(socket);
    let _ = tokio::task::spawn_blocking(move || executor.shutdown()).await;
    let _ = following.await;
    store.health.close().await;
    Ok(())
}

/// Listen on `socket` (only this user may connect). A socket file nobody listens on (left
/// by a killed executor) is replaced; one in use is refused.
fn bind_socket(socket: &std::path::Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        anyhow::bail!(
            "another executor is listening on {} already",
            socket.display()
        );
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot replace {}", socket.display()));
        }
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", socket.display()))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_sqlite_the_blob_sweep_repeats_only_while_it_kept_young_temp_files() {
        assert_eq!(next_sweep(Sweeps::AtStart, 0), None, "no timer when idle");
        let again = next_sweep(Sweeps::AtStart, 2).expect("a second look");
        assert!(again > storage::objects::TEMP_MAX_AGE, "{again:?}");
        assert_eq!(next_sweep(Sweeps::Hourly, 0), Some(SWEEP_EVERY));
        assert_eq!(next_sweep(Sweeps::Hourly, 2), Some(SWEEP_EVERY));
    }
}
