//! The executor as a separate process (cluster mode): `picloud-orchestrator` reaches its
//! `picloud-executor` over a Unix socket behind the same `ExecutorClient` seam.
//!
//! - `wire`: length-prefixed JSON frames; `Run {id, invocation}` and `Cancel {id}` one way,
//!   `Done {id, result}` the other, so concurrent invocations share one connection;
//! - `client`: `RemoteExecutor`, the orchestrator's side, with the supervisor that starts
//!   (or reconnects to) the executor and restarts it when it dies;
//! - `server`: the executor process's accept loop.
//!
//! Storage effects stay with the orchestrator: the executor reads the store (KV, blobs,
//! settings, scripts) and writes blob bytes to the object store, but its KV writes,
//! emitted events and blob names come back in the reply and are committed by the
//! orchestrator, in the same transaction as the event's outbox row under its lease (or
//! with the HTTP answer). An executor that dies mid-run commits nothing.
mod client;
mod server;
mod wire;

pub use client::{Endpoint, READY_LINE, RemoteConfig, RemoteExecutor};
pub use server::serve;
