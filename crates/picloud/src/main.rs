//! `picloud`: `picloud serve` runs the all-in-one server; every other command is a client of
//! the admin API (`PICLOUD_URL`, `PICLOUD_TOKEN`), so it works against a remote server too.
use clap::{Parser, Subcommand};

/// mimalloc: fewer cycles per allocation than glibc's malloc under many threads, and it
/// returns freed memory instead of keeping per-thread arenas (idle RSS).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use picloud::process::{ExecutorArgs, ServeArgs, run, run_executor};
use picloud::{Role, cli};

#[derive(Parser, Debug)]
#[command(
    name = "picloud",
    version,
    about = "PiCloud: Rhai scripts as HTTP endpoints, on your own box"
)]
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
    /// Cluster mode: the manager (admin API, dashboard, cron), as `picloud-manager`.
    Manager(ServeArgs),
    /// Cluster mode: a node's orchestrator, as `picloud-orchestrator`; it starts
    /// `picloud executor` itself unless PICLOUD_EXECUTOR__SOCKET names one to connect to.
    Orchestrator(ServeArgs),
    /// Cluster mode: a node's executor on a Unix socket, as `picloud-executor`.
    Executor(ExecutorArgs),
    #[command(flatten)]
    Client(cli::Command),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = picloud::process::runtime()?;
    match args.command {
        Top::Serve(serve) => runtime.block_on(run(serve, Role::All)),
        Top::Manager(serve) => runtime.block_on(run(serve, Role::Manager)),
        Top::Orchestrator(serve) => runtime.block_on(run(serve, Role::Orchestrator)),
        Top::Executor(args) => runtime.block_on(run_executor(args)),
        Top::Client(command) => {
            let result = runtime.block_on(cli::run(args.remote, command));
            // `push --dry-run` with changes: the plan is printed, the code says the rest.
            if let Some(cli::Exit(code)) = result.as_ref().err().and_then(|e| e.downcast_ref()) {
                let code = i32::from(*code);
                drop(runtime);
                std::process::exit(code);
            }
            result
        }
    }
}
