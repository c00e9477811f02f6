//! What a server process does around `start_role`: read its arguments and configuration,
//! bind, print the real address, stop on SIGTERM or Ctrl-C. Shared by `picloud serve` and
//! the cluster binaries so they only wire.
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::serve::{Role, start_role};

#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// Configuration file; a missing file is fine.
    #[arg(long, env = "PICLOUD_CONFIG", default_value = "picloud.toml")]
    pub config: PathBuf,
    /// Address to listen on (overrides PICLOUD_BIND); port 0 picks a free port.
    #[arg(long)]
    pub bind: Option<String>,
    /// Data directory (overrides PICLOUD_DATA_DIR).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Database URL (overrides PICLOUD_DATABASE_URL).
    #[arg(long)]
    pub database_url: Option<String>,
}

/// Run a server process with `role` until SIGTERM or Ctrl-C.
///
/// # Errors
/// An invalid configuration, an address that cannot be bound, a database that cannot be
/// opened, or a failure while serving.
pub async fn run(args: ServeArgs, role: Role) -> anyhow::Result<()> {
    let mut config = Config::load(&args.config).context("invalid configuration")?;
    if let Some(bind) = args.bind {
        config.bind = bind;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(url) = args.database_url {
        config.database_url = Some(url);
    }
    init_logging(&config.log_format);

    let listener = TcpListener::bind(&config.bind)
        .await
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    let server = start_role(listener, config, shutdown, role).await?;
    if let Some(token) = &server.generated_admin_token {
        println!("admin token (shown once, keep it): {token}");
    }
    println!("listening on http://{addr}");
    std::io::stdout().flush()?;
    tracing::info!(%addr, ?role, "PiCloud is serving");
    // What starting touched is not needed again until something runs it.
    let released = crate::memory::release();
    tracing::debug!(released, "start-up pages released");
    server.wait().await
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: draining requests");
    shutdown.cancel();
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The multi-thread runtime of every server binary: each worker collects its own heap
/// after a memory release when it next parks (`memory::on_park`), and a blocking-pool
/// thread (a deploy's compile check, file I/O) ends after `BLOCKING_KEEP_ALIVE` unused
/// instead of tokio's 10 s, so it ends with the busy spell, not in the idle time after it.
///
/// # Errors
/// When the runtime cannot be built.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .on_thread_park(crate::memory::on_park)
        .build()
}

/// How long an unused blocking-pool thread stays.
const BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(1);

/// `main` for a cluster binary: parse `ServeArgs`, run `role`, and exit 1 with the error
/// chain on one line when it fails.
pub fn cluster_main(role: Role) {
    #[derive(clap::Parser)]
    struct Args {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let args = <Args as clap::Parser>::parse();
    let result = runtime()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(args.serve, role)));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// `main` of `picloud-executor`: the sandbox and host API behind a Unix socket.
///
/// Started by `picloud-orchestrator` (`--from-parent`), it reads the orchestrator's
/// resolved configuration as one JSON line on stdin and stops when stdin closes (the
/// orchestrator ended, however it ended). Started on its own, it reads `picloud.toml` and
/// `PICLOUD_*` like the other binaries and listens on `--socket` (or
/// `PICLOUD_EXECUTOR__SOCKET`) until SIGTERM.
pub fn executor_main() {
    #[derive(clap::Parser)]
    #[command(name = "picloud-executor", version)]
    struct Args {
        #[command(flatten)]
        executor: ExecutorArgs,
    }
    let args = <Args as clap::Parser>::parse();
    let result = runtime()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run_executor(args.executor)));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The arguments of an executor process (`picloud-executor`, `picloud executor`).
#[derive(clap::Args, Debug, Default)]
pub struct ExecutorArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// The Unix socket to listen on (overrides PICLOUD_EXECUTOR__SOCKET).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Started by an orchestrator: the configuration comes on stdin, and the executor
    /// stops when stdin closes.
    #[arg(long, hide = true)]
    pub from_parent: bool,
}

/// Run an executor process until SIGTERM (or, started by an orchestrator, until its stdin
/// closes).
///
/// # Errors
/// An invalid configuration, no socket, a database that cannot be opened.
pub async fn run_executor(args: ExecutorArgs) -> anyhow::Result<()> {
    run_executor_process(args.serve, args.socket, args.from_parent).await
}

async fn run_executor_process(
    args: ServeArgs,
    socket: Option<PathBuf>,
    from_parent: bool,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let config = if from_parent {
        let (line, stdin) = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let mut stdin = std::io::BufReader::new(std::io::stdin());
            std::io::BufRead::read_line(&mut stdin, &mut line).map(|_| (line, stdin))
        })
        .await
        .context("cannot read stdin")?
        .context("cannot read the configuration from stdin")?;
        let config: Config =
            serde_json::from_str(&line).context("the configuration on stdin is not valid")?;
        // The orchestrator holds the other end: when it ends, so does this process.
        let orphaned = shutdown.clone();
        std::thread::spawn(move || {
            let mut stdin = stdin;
            let mut sink = [0u8; 64];
            while matches!(std::io::Read::read(&mut stdin, &mut sink), Ok(n) if n > 0) {}
            orphaned.cancel();
        });
        config
    } else {
        let mut config = Config::load(&args.config).context("invalid configuration")?;
        if let Some(dir) = args.data_dir {
            config.data_dir = dir;
        }
        if let Some(url) = args.database_url {
            config.database_url = Some(url);
        }
        config
    };
    init_logging(&config.log_format);
    // Before anything else: a cluster process on anything but PostgreSQL is refused.
    crate::serve::require_cluster_database(&config, "executor")?;
    let socket = socket
        .or_else(|| config.executor.socket.clone())
        .context("the executor needs --socket or PICLOUD_EXECUTOR__SOCKET")?;
    if from_parent {
        // Its orchestrator decides when it stops (by closing stdin, after draining): a
        // SIGTERM or Ctrl-C sent to the whole group must not cut the drain's runs short.
        tokio::spawn(outlive_signals());
    } else {
        tokio::spawn(cancel_on_signal(shutdown.clone()));
    }
    crate::serve::serve_executor(config, &socket, shutdown).await
}

/// Take SIGTERM and SIGINT without stopping (a started executor stops when its
/// orchestrator closes its stdin).
async fn outlive_signals() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    loop {
        tokio::select! {
            Some(()) = term.recv() => {}
            Some(()) = int.recv() => {}
            else => return,
        }
        tracing::debug!("signal ignored: the orchestrator stops this executor");
    }
}
