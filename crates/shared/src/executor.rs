//! The seam between dispatch and execution. In the all-in-one binary the executor runs in
//! the same process; a cluster node (`picloud-orchestrator`) reaches its `picloud-executor`
//! process over a local socket behind the same trait (`executor_core::remote`).
use async_trait::async_trait;

use crate::invocation::{Execution, Invocation};
use crate::store::StoreError;

#[async_trait]
pub trait ExecutorClient: Send + Sync {
    /// Run one invocation and wait for its result.
    ///
    /// # Errors
    /// `Overloaded` when the executor's queue is full (answer 503, do not wait);
    /// `ConcurrencyLimit` when the app or script is at its concurrency cap (answer 429, or
    /// put an event back for later);
    /// `ScriptNotFound` when the script has no active version; `WorkerLost` if the script
    /// thread died; `ExecutorLost` if the executor process (cluster mode) went away while
    /// the run was in its hands; `Store` when the script could not be loaded.
    async fn execute(&self, invocation: Invocation) -> Result<Execution, ExecError>;

    /// Run `invocation` on the calling thread when it can answer at once (a quick script
    /// that needs nothing the calling thread cannot give it), without the hand-off's
    /// future: `Some` with what `execute` would have answered, `None` when it must go
    /// through `execute`. The default never answers at once.
    fn try_now(&self, invocation: &Invocation) -> Option<Result<Execution, ExecError>> {
        let _ = invocation;
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("the executor is at capacity, try again")]
    Overloaded,
    /// The app (or the script) already has `limit` invocations queued or running on this
    /// executor (`InvocationLimits`); nothing was queued.
    #[error("the {of} is at its limit of {limit} invocations at once, try again")]
    ConcurrencyLimit { of: &'static str, limit: u32 },
    #[error("script '{0}' does not exist")]
    ScriptNotFound(String),
    #[error("the script's worker was lost")]
    WorkerLost,
    /// The executor process stopped (crashed, was killed) or its socket closed after the
    /// invocation was handed over: the run may have started, and none of its effects were
    /// committed. An event counts it as an attempt; a request answers 503.
    #[error("the executor process stopped during the run")]
    ExecutorLost,
    #[error("internal error")]
    Store(#[from] StoreError),
}

/// A compile error at deploy time, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct CompileError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Compiles a script without running it, so a deploy can refuse a broken version before
/// it is stored (and the previous version stays active).
pub trait ScriptChecker: Send + Sync {
    /// # Errors
    /// The first compile error, with its line and column (1-based).
    fn check(&self, source: &str) -> Result<(), CompileError>;
}
