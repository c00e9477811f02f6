//! What the three PiCloud services (manager, orchestrator, executor) agree on.
//!
//! - `ids`: validated names and ids (`AppName`, `ScriptName`, `InvocationId`, ...).
//! - `invocation`: what the orchestrator hands the executor and what comes back.
//! - `store`: one repository trait per table family, implemented by the storage crate.
//! - `bus`: the one notification bus that tells every node (catalog, outbox, realtime).
//! - `limits`: what operators override per app and script, and the server's ceilings.
//! - `catalog`: how a control-plane change reaches per-node caches (routes, compiled scripts).
//! - `error_code`: the one table from an error code to an HTTP status.
//! - `metrics`: counters and histograms of the hot paths, kept per thread.
//!
//! This crate depends on neither axum nor sqlx: it is the seam, not an implementation.
pub mod bus; // the one notification bus: tell every node
pub mod catalog; // control-plane change notifications
pub mod error_code; // ErrorCode -> HTTP status, the JSON error body
pub mod event; // outbox events, effects, dead letters
pub mod executor; // the ExecutorClient seam
pub mod hmac; // HMAC-SHA256 for script crypto and realtime tokens
pub mod ids; // validated names and ids
pub mod invocation; // Invocation, HttpRequest, Execution, InvocationRecord
pub mod limits; // per-app and per-script limits: overrides, the server's policy
pub mod metrics; // hot-path counters and histograms kept per thread, folded at each scrape
pub mod realtime; // realtime subscription tokens: mint and verify
pub mod schema; // OpenAPI schemas of the validated names and ids
pub mod store; // repository traits + StoreError

pub use bus::{Channel, Heard, LocalBus, NotificationBus};
pub use catalog::{Catalog, CatalogChange, CatalogListener};
pub use error_code::{ErrorBody, ErrorCode, ErrorDetail};
pub use event::{
    BlobWrite, DeadLetter, Effects, EmailMessage, Emit, Event, EventKind, KvWrite, LeaseToken,
};
pub use executor::{CompileError, ExecError, ExecutorClient, ScriptChecker};
pub use ids::{
    AppName, ChannelName, DeadLetterId, EventId, InvalidName, InvocationId, RESERVED_APP_NAMES,
    RoutePath, ScriptName, TokenId, TriggerId, check_data_name,
};
pub use invocation::{
    Execution, FailureKind, HttpRequest, Invocation, InvocationInput, InvocationRecord,
    InvocationStatus, LogLevel, LogLine, RequestHeaders, ScriptFailure, ScriptOutput,
};
pub use limits::{AppLimits, InvocationLimits, LimitOverrides, LimitPolicy};
pub use store::{Store, StoreError};
