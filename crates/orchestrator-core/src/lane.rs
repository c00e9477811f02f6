//! The in-memory lane: how a sync HTTP request reaches the executor and comes back.
//!
//! No database on this path. The executor takes the invocation into its bounded queue and
//! answers through a per-request oneshot inbox; a full queue is refused at once
//! (`Overloaded`), never waited on. The request's deadline covers the wait in the queue
//! and the run: when it passes, the caller gets its answer and the run, if any, is left to
//! end at the script's own wall-clock limit.
use std::sync::Arc;
use std::time::Duration;

use shared::{ExecError, Execution, ExecutorClient, Invocation};

/// How one hand-off ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The script ran (successfully or not).
    Ran(Execution),
    /// The request's deadline passed before the executor answered.
    TimedOut,
    /// The executor did not run it.
    Refused(ExecError),
}

pub(crate) struct Lane {
    executor: Arc<dyn ExecutorClient>,
    /// Covers queue + run.
    deadline: Duration,
}

impl Lane {
    pub(crate) fn new(executor: Arc<dyn ExecutorClient>, deadline: Duration) -> Self {
        Lane { executor, deadline }
    }

    /// The outcome when the executor answers at once, on this thread
    /// (`ExecutorClient::try_now`); `None` when the invocation must go through `run`.
    pub(crate) fn try_now(&self, invocation: &Invocation) -> Option<Outcome> {
        Some(match self.executor.try_now(invocation)? {
            Ok(execution) => Outcome::Ran(execution),
            Err(error) => Outcome::Refused(error),
        })
    }

    pub(crate) async fn run(&self, invocation: Invocation) -> Outcome {
        match tokio::time::timeout(self.deadline, self.executor.execute(invocation)).await {
            Ok(Ok(execution)) => Outcome::Ran(execution),
            Ok(Err(error)) => Outcome::Refused(error),
            Err(_elapsed) => Outcome::TimedOut,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use shared::{AppName, HttpRequest, InvocationId, InvocationInput, ScriptName};

    /// An executor that never answers, to test the deadline. (The store is not involved.)
    struct Silent;

    #[async_trait]
    impl ExecutorClient for Silent {
        async fn execute(&self, _invocation: Invocation) -> Result<Execution, ExecError> {
            std::future::pending().await
        }
    }

    struct Full;

    #[async_trait]
    impl ExecutorClient for Full {
        async fn execute(&self, _invocation: Invocation) -> Result<Execution, ExecError> {
            Err(ExecError::Overloaded)
        }
    }

    fn invocation() -> Invocation {
        Invocation {
            id: InvocationId::new(),
            app: AppName::parse("shop").unwrap(),
            script: ScriptName::parse("s").unwrap(),
            input: InvocationInput::Http(HttpRequest::default()),
            request_id: None,
            limits: Default::default(),
        }
    }

    #[tokio::test]
    async fn the_deadline_ends_a_hand_off_that_never_answers() {
        let lane = Lane::new(Arc::new(Silent), Duration::from_millis(50));
        let started = std::time::Instant::now();
        assert!(matches!(lane.run(invocation()).await, Outcome::TimedOut));
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_refusal_comes_back_as_is() {
        let lane = Lane::new(Arc::new(Full), Duration::from_secs(30));
        assert!(matches!(
            lane.run(invocation()).await,
            Outcome::Refused(ExecError::Overloaded)
        ));
    }
}
