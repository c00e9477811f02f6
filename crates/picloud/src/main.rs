//! `picloud`: `picloud serve` runs the all-in-one server; every other command is a client of
//! the admin API (`PICLOUD_URL`, `PICLOUD_TOKEN`), so it works against a remote server too.
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use picloud::{Config, cli};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(name = "picloud", version, about = "PiCloud: Rhai scripts as HTTP endpoints, on your own box")]
struct Args {
    #[command(subcommand)]
    command: Top,
    #[command(flatten)]
    remote: cli::Remote,
}

#[derive(Subcommand, Debug)]
enum Top {
    /// Run the all-in-one server (SQLite in ./picloud-data unless PICLOUD_DATABASE_URL is set).
    Serve(ServeArgs),
    #[command(flatten)]
    Client(cli::Command),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Configuration file; a missing file is fine.
    #[arg(long, env = "PICLOUD_CONFIG", default_value = "picloud.toml")]
    config: PathBuf,
    /// Address to listen on (overrides PICLOUD_BIND); port 0 picks a free port.
    #[arg(long)]
    bind: Option<String>,
    /// Data directory (overrides PICLOUD_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Database URL (overrides PICLOUD_DATABASE_URL).
    #[arg(long)]
    database_url: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match args.command {
        Top::Serve(serve) => runtime.block_on(run_server(serve)),
        Top::Client(command) => runtime.block_on(cli::run(args.remote, command)),
    }
}

async fn run_server(args: ServeArgs) -> anyhow::Result<()> {
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

    let server = picloud::start(listener, config, shutdown).await?;
    if let Some(token) = &server.generated_admin_token {
        println!("admin token (shown once, keep it): {token}");
    }
    println!("listening on http://{addr}");
    std::io::stdout().flush()?;
    tracing::info!(%addr, "PiCloud is serving");
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
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
