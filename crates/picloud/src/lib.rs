//! The all-in-one PiCloud server: manager, orchestrator and executor in one process.
//!
//! - `serve` wires the three services on one already-bound listener and runs until the
//!   shutdown token is cancelled, then drains HTTP, flushes the invocation writer and
//!   stops the script threads.
//! - `config` is the one `Config` value `main` builds from `picloud.toml` and `PICLOUD_*`.
//! - `cli` is the `picloud` command's client side: it talks to the admin API over HTTP.
pub mod cli; // client commands (apps, deploy, logs, ...)
pub mod config; // Config: file + environment
mod dashboard; // the embedded web dashboard at /dashboard/
mod data_dir; // private data directory, one server at a time
mod front; // platform paths to the router, app paths to the ingress
mod health; // /healthz, /readyz, /metrics
mod listener; // accept loop: connection limit, HTTP/1.1 (h2c on request), drain
mod membership; // this process in the nodes table: register, heartbeat, leave
mod memory; // giving start-up pages and freed heap back to the kernel
pub mod process; // a server process: args, bind, signals
mod realtime_prune; // the realtime replay buffer's retention, woken only by work
mod serve; // wiring and shutdown order
mod timeouts; // header, body and idle timeouts of a connection

pub use config::Config;
pub use serve::{Role, Server, serve, serve_executor, start, start_role};
