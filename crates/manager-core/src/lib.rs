//! The control plane's admin API: apps, scripts and their versions, triggers, invocation
//! history and API tokens, as JSON under `/api/v1` (the contract is `docs/admin-api.md`).
//!
//! - `api::router` is the one way in: the whole route table, with bearer-token auth on
//!   every route but `GET /api/v1/openapi.json`.
//! - Every committed change is published on the `shared::Catalog` and awaited before the
//!   answer, so a `200` to a deploy means the next request runs the new version.
//! - Token secrets exist only in the answer that creates them; the store keeps SHA-256 hashes.
mod api; // the route table, one module per resource, the error and extractor types
mod auth; // bearer tokens: hashing, generation, the middleware, the bootstrap token

pub use api::{ApiError, ManagerDeps, ROUTES, router};
pub use auth::{bootstrap_admin_token, hash_token};
