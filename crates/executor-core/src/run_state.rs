//! Per-thread state of the run in progress: its operation budget, its deadline and the
//! log lines it captured.
//!
//! Rhai's `on_progress`, `on_print` and `on_debug` callbacks are set once per engine, and
//! the engine is shared by every script thread, so what belongs to one run lives in
//! thread-locals that `RunGuard` sets before the run and clears after it (also when the
//! run panics). A thread runs one script at a time, so this is never shared.
//!
//! One budget per top-level run: a nested evaluation (`invoke`, loading an imported
//! module) starts Rhai's operation counter from zero, so `nested` carries the operations
//! spent so far into it and adds what it spent back to the caller's.
use std::cell::{Cell, RefCell};
use std::time::Instant;

use chrono::Utc;
use rhai::Dynamic;
use shared::{LogLevel, LogLine};

/// Why the progress callback stopped a run; carried as the `ErrorTerminated` token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Termination {
    Operations,
    Timeout,
    /// A value nested too deeply met a walk whose error Rhai would swallow (printing);
    /// the name is the function that met it.
    TooDeep(&'static str),
}

#[derive(Debug, Clone, Copy)]
struct Budget {
    max_operations: u64,
    deadline: Instant,
    /// Operations spent outside the evaluation in progress (by callers or callees).
    base: u64,
}

#[derive(Default)]
struct LogBuffer {
    lines: Vec<LogLine>,
    bytes: usize,
    max_bytes: usize,
    truncated: bool,
}

thread_local! {
    static BUDGET: Cell<Option<Budget>> = const { Cell::new(None) };
    /// Operations of the whole run as of the last progress callback.
    static SPENT: Cell<u64> = const { Cell::new(0) };
    static LOGS: RefCell<LogBuffer> = RefCell::new(LogBuffer::default());
    /// Set by `stop`: why the run must end at its next operation.
    static STOPPED: Cell<Option<Termination>> = const { Cell::new(None) };
}

/// Which line ends a log that reached its byte cap.
pub(crate) const LOG_TRUNCATED: &str = "... log truncated";

/// The progress callback: stop when the operation budget is spent, and every 1024
/// operations compare the clock with the deadline (reading it on every operation costs
/// loop-heavy scripts ~70%, every 1024 ~9%). Outside a run, `fallback_max_ops` applies.
pub(crate) fn check_progress(operations: u64, fallback_max_ops: u64) -> Option<Dynamic> {
    match BUDGET.get() {
        Some(budget) => {
            let total = budget.base.saturating_add(operations);
            SPENT.set(total);
            if total > budget.max_operations {
                Some(Dynamic::from(
                    STOPPED.get().unwrap_or(Termination::Operations),
                ))
            } else if operations & 1023 == 0 && Instant::now() >= budget.deadline {
                Some(Dynamic::from(Termination::Timeout))
            } else {
                None
            }
        }
        None if operations > fallback_max_ops => Some(Dynamic::from(Termination::Operations)),
        None => None,
    }
}

/// Run a nested evaluation under the current run's budget: it starts with the
/// operations spent so far, and what it spends counts for the caller afterwards.
/// Outside a run, `f` just runs.
/// Time left before the current run's wall-clock deadline (`None` outside a run). Host
/// calls that block (outbound HTTP) cap their own timeouts with it, so a script cannot
/// outlive its limit by waiting on the network.
pub(crate) fn remaining() -> Option<std::time::Duration> {
    BUDGET
        .get()
        .map(|b| b.deadline.saturating_duration_since(Instant::now()))
}

/// End the current run at its next operation, with `why` as its failure (and fail it
/// even if it has no operation left: see `stopped`). For host functions whose error Rhai
/// would swallow. Costs the progress callback nothing: the budget drops to zero.
pub(crate) fn stop(why: Termination) {
    STOPPED.set(Some(why));
    if let Some(budget) = BUDGET.get() {
        BUDGET.set(Some(Budget {
            max_operations: 0,
            ..budget
        }));
    }
}

/// Why `stop` ended the current run, if it did.
pub(crate) fn stopped() -> Option<Termination> {
    STOPPED.get()
}

pub(crate) fn nested<T>(f: impl FnOnce() -> T) -> T {
    let Some(outer) = BUDGET.get() else {
        return f();
    };
    let start = SPENT.get();
    BUDGET.set(Some(Budget {
        base: start,
        ..outer
    }));
    let out = f();
    let consumed = SPENT.get().saturating_sub(start);
    BUDGET.set(Some(Budget {
        base: outer.base.saturating_add(consumed),
        max_operations: if STOPPED.get().is_some() {
            0
        } else {
            outer.max_operations
        },
        ..outer
    }));
    out
}

/// Add a line to the current run's log, up to its byte cap; past the cap one
/// `... log truncated` line is added and the rest is dropped.
pub(crate) fn push_log(level: LogLevel, message: &str) {
    LOGS.with_borrow_mut(|buf| {
        if buf.truncated {
            return;
        }
        if buf.bytes + message.len() > buf.max_bytes {
            buf.truncated = true;
            buf.lines.push(LogLine {
                at: Utc::now(),
                level: LogLevel::Warn,
                message: LOG_TRUNCATED.to_owned(),
            });
            return;
        }
        buf.bytes += message.len();
        buf.lines.push(LogLine {
            at: Utc::now(),
            level,
            message: message.to_owned(),
        });
    });
}

/// Holds this thread's run state for one run; dropping it clears the state.
pub(crate) struct RunGuard(());

impl RunGuard {
    pub(crate) fn start(max_operations: u64, deadline: Instant, max_log_bytes: usize) -> Self {
        BUDGET.set(Some(Budget {
            max_operations,
            deadline,
            base: 0,
        }));
        SPENT.set(0);
        STOPPED.set(None);
        LOGS.with_borrow_mut(|buf| {
            *buf = LogBuffer {
                max_bytes: max_log_bytes,
                ..LogBuffer::default()
            }
        });
        RunGuard(())
    }

    /// The lines captured so far, leaving the buffer empty.
    pub(crate) fn take_logs(&self) -> Vec<LogLine> {
        LOGS.with_borrow_mut(|buf| std::mem::take(&mut buf.lines))
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        BUDGET.set(None);
        SPENT.set(0);
        STOPPED.set(None);
        LOGS.with_borrow_mut(|buf| *buf = LogBuffer::default());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_log_stops_at_its_byte_cap_with_one_truncation_line() {
        let guard = RunGuard::start(100, Instant::now() + Duration::from_secs(5), 10);
        push_log(LogLevel::Info, "12345");
        push_log(LogLevel::Info, "67890");
        push_log(LogLevel::Info, "x");
        push_log(LogLevel::Info, "y");
        let logs = guard.take_logs();
        let messages: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["12345", "67890", LOG_TRUNCATED]);
    }

    #[test]
    fn the_budget_tells_an_operation_overrun_from_a_timeout() {
        let _guard = RunGuard::start(5000, Instant::now() - Duration::from_secs(1), 10);
        assert!(
            check_progress(1, 0).is_none(),
            "the clock is read every 1024 ops only"
        );
        let timeout = check_progress(1024, 0).map(|d| d.cast::<Termination>());
        assert_eq!(timeout, Some(Termination::Timeout));
        let ops = check_progress(5001, 0).map(|d| d.cast::<Termination>());
        assert_eq!(ops, Some(Termination::Operations));
    }

    #[test]
    fn a_nested_evaluation_shares_the_budget_of_its_run() {
        let _guard = RunGuard::start(1000, Instant::now() + Duration::from_secs(5), 10);
        assert!(check_progress(400, 0).is_none());
        let inside = nested(|| {
            assert!(check_progress(500, 0).is_none(), "400 + 500 is within 1000");
            check_progress(601, 0).map(|d| d.cast::<Termination>())
        });
        assert_eq!(inside, Some(Termination::Operations), "400 + 601 is over");
        // Back in the caller, its own counter goes on from 400 plus the 601 of the callee.
        let after = check_progress(401, 0).map(|d| d.cast::<Termination>());
        assert_eq!(after, Some(Termination::Operations));
    }

    #[test]
    fn outside_a_run_the_fallback_operation_limit_applies() {
        assert!(check_progress(10, 10).is_none());
        let ops = check_progress(11, 10).map(|d| d.cast::<Termination>());
        assert_eq!(ops, Some(Termination::Operations));
    }
}
