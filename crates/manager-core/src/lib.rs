//! The control plane: the admin API (apps, scripts and their versions, triggers,
//! invocation history, API tokens, dead letters, config and secrets, KV, blobs and the
//! development mailbox, per-app and per-script limits, as JSON under `/api/v1`; the contract is `docs/admin-api.md`), the
//! cron scheduler and the dead-letter retention sweeper.
//!
//! - `api::router` is the one way in: the whole route table (`operations()`, from the
//!   handlers' `#[utoipa::path]`; `ROUTES` is its view), with bearer-token
//!   auth on every route but `GET /api/v1/openapi.json`, and each route's `Access` (the
//!   token's role, admin/deploy/read, and its app scope) checked before its handler.
//! - Every committed change is published on the `shared::Catalog` and awaited before the
//!   answer, so a `200` to a deploy means the next request runs the new version.
//! - Token secrets exist only in the answer that creates them; the store keeps SHA-256
//!   hashes. Secret values are never in any answer.
//! - `CronScheduler` fires cron triggers (sleeping until the next fire, woken by catalog
//!   changes); `RetentionSweeper` purges expired dead letters and `InvocationSweeper`
//!   expired invocation records (each sleeping until the oldest one expires).
mod api; // the route table, one module per resource, the error and extractor types
mod auth; // bearer tokens: hashing, generation, the middleware, the bootstrap token
pub mod backup; // the backup archive: its manifest, writing it, checking it
pub mod cron; // schedules (next_fire, due_slot, validate) and the scheduler that fires them
mod queue_history; // samples of each app's queue depth and dead letters, taken after its runs
mod retention; // the dead-letter retention sweeper

pub use api::{
    Access, ApiError, ManagerDeps, Operation, ROUTES, Route, Routes, openapi_document, operations,
    router, router_with_limits,
};
pub use auth::{bootstrap_admin_token, hash_token};
pub use cron::{CronCounts, CronError, CronScheduler};
pub use queue_history::QueueSampler;
pub use retention::{InvocationSweeper, RetentionSweeper};
