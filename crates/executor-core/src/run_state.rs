//! The run in progress on this thread: its operation budget, its deadline, the log lines
//! it captured and (for a run of the executor) its host context, in ONE thread-local
//! struct that ONE guard, `RunScope`, fills before the run and clears after it.
//!
//! Rhai's `on_progress`, `on_print` and `on_debug` callbacks are set once per engine, host
//! functions are plain functions, and an engine serves every script thread, so what
//! belongs to one run cannot be captured by them: it lives here. A thread runs one script
//! at a time, so this is never shared. What must stay true:
//! - outside a `RunScope` (between runs, or on a thread that never ran one) there is no
//!   budget, no log and no host context: a host call fails instead of writing somewhere;
//! - the scope is cleared when the guard drops, also when the run panics; a run that ends
//!   without `finish` (a panic) has its buffered effects dropped and the objects its
//!   `blob::put`s wrote deleted (`context::Host::abandon`);
//! - one budget per top-level run: a nested evaluation (`invoke`, loading an imported
//!   module) starts Rhai's operation counter from zero, so `nested` carries the operations
//!   spent so far into it and adds what it spent back to the caller's;
//! - in an inline try (`RunScope::enter_inline`, on a runtime worker) only the calls that
//!   buffer an effect and do no I/O reach the host context (`with_buffering_host`); the
//!   first host call that would read the app's data, block or run other scripts stops it
//!   with `Termination::NotInline` before doing anything, and the try is discarded with
//!   everything it buffered.
//!
//! The budget and the counters are `Cell`s, read on every operation by the progress
//! callback without a borrow; the log and the host context are `RefCell`s, borrowed only
//! for the moment a host call reads or changes them (never across a nested evaluation).
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use rhai::Dynamic;
use shared::{Effects, LogLevel, LogLine};

use crate::context::Host;
use crate::limits::Limits;

/// Why the progress callback stopped a run; carried as the `ErrorTerminated` token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Termination {
    Operations,
    Timeout,
    /// A value nested too deeply met a walk whose error Rhai would swallow (printing);
    /// the name is the function that met it.
    TooDeep(&'static str),
    /// An inline try made a call it may not make on a runtime worker: it is discarded and
    /// the invocation runs again on a script thread.
    NotInline,
}

#[derive(Debug, Clone, Copy)]
struct Budget {
    max_operations: u64,
    deadline: Instant,
    /// Operations spent outside the evaluation in progress (by callers or callees).
    base: u64,
    /// The clock is read when `operations & clock_mask == 0`.
    clock_mask: u64,
}

/// A script thread's run reads the clock every 1024 operations.
const RUN_CLOCK_MASK: u64 = 1023;
/// An inline try reads it every 16: its whole budget is a few thousand, and a few heavy
/// operations (a hash of a long string) must not hold a runtime worker much past it.
const INLINE_CLOCK_MASK: u64 = 15;

struct LogBuffer {
    lines: Vec<LogLine>,
    bytes: usize,
    max_bytes: usize,
    truncated: bool,
}

impl LogBuffer {
    const fn empty(max_bytes: usize) -> Self {
        LogBuffer {
            lines: Vec::new(),
            bytes: 0,
            max_bytes,
            truncated: false,
        }
    }
}

/// Everything the run in progress on this thread owns.
struct RunState {
    /// `None` between runs.
    budget: Cell<Option<Budget>>,
    /// Operations of the whole run as of the last progress callback.
    spent: Cell<u64>,
    /// Set by `stop`: why the run must end at its next operation.
    stopped: Cell<Option<Termination>>,
    logs: RefCell<LogBuffer>,
    /// The app, runner, limits, buffered effects, invoke depth and import stack of a run
    /// of the executor (an inline try's serves only the calls that buffer effects);
    /// `None` for a bare sandbox run and between runs.
    /// Boxed: moved in and out of here on every run, it stays one pointer wide.
    host: RefCell<Option<Box<Host>>>,
    /// Set for an inline try: a call that needs the host context stops it instead.
    inline: Cell<bool>,
}

impl RunState {
    const fn idle() -> Self {
        RunState {
            budget: Cell::new(None),
            spent: Cell::new(0),
            stopped: Cell::new(None),
            logs: RefCell::new(LogBuffer::empty(0)),
            host: RefCell::new(None),
            inline: Cell::new(false),
        }
    }
}

thread_local! {
    static RUN: RunState = const { RunState::idle() };
}

/// Which line ends a log that reached its byte cap.
pub(crate) const LOG_TRUNCATED: &str = "... log truncated";

/// The progress callback: stop when the operation budget is spent, and every 1024
/// operations (16 in an inline try) compare the clock with the deadline (reading it on
/// every operation costs loop-heavy scripts ~70%, every 1024 ~9%). Outside a run,
/// `fallback_max_ops` applies.
pub(crate) fn check_progress(operations: u64, fallback_max_ops: u64) -> Option<Dynamic> {
    RUN.with(|run| match run.budget.get() {
        Some(budget) => {
            let total = budget.base.saturating_add(operations);
            run.spent.set(total);
            if total > budget.max_operations {
                Some(Dynamic::from(
                    run.stopped.get().unwrap_or(Termination::Operations),
                ))
            } else if operations & budget.clock_mask == 0 && Instant::now() >= budget.deadline {
                Some(Dynamic::from(Termination::Timeout))
            } else {
                None
            }
        }
        None if operations > fallback_max_ops => Some(Dynamic::from(Termination::Operations)),
        None => None,
    })
}

/// Time left before the current run's wall-clock deadline (`None` outside a run). Host
/// calls that block (outbound HTTP, `sleep`) cap their own waits with it, so a script
/// cannot outlive its limit by waiting.
pub(crate) fn remaining() -> Option<Duration> {
    RUN.with(|run| {
        run.budget
            .get()
            .map(|b| b.deadline.saturating_duration_since(Instant::now()))
    })
}

/// End the current run at its next operation, with `why` as its failure (and fail it
/// even if it has no operation left: see `stopped`). For host functions whose error Rhai
/// would swallow. Costs the progress callback nothing: the budget drops to zero.
pub(crate) fn stop(why: Termination) {
    RUN.with(|run| {
        run.stopped.set(Some(why));
        if let Some(budget) = run.budget.get() {
            run.budget.set(Some(Budget {
                max_operations: 0,
                ..budget
            }));
        }
    });
}

/// Why `stop` ended the current run, if it did.
pub(crate) fn stopped() -> Option<Termination> {
    RUN.with(|run| run.stopped.get())
}

/// Run a nested evaluation under the current run's budget: it starts with the
/// operations spent so far, and what it spends counts for the caller afterwards.
/// Outside a run, `f` just runs.
pub(crate) fn nested<T>(f: impl FnOnce() -> T) -> T {
    let Some((outer, start)) = RUN.with(|run| {
        let outer = run.budget.get()?;
        let start = run.spent.get();
        run.budget.set(Some(Budget {
            base: start,
            ..outer
        }));
        Some((outer, start))
    }) else {
        return f();
    };
    let out = f();
    RUN.with(|run| {
        let consumed = run.spent.get().saturating_sub(start);
        run.budget.set(Some(Budget {
            base: outer.base.saturating_add(consumed),
            max_operations: if run.stopped.get().is_some() {
                0
            } else {
                outer.max_operations
            },
            ..outer
        }));
    });
    out
}

/// Add a line to the current run's log, up to its byte cap; past the cap one
/// `... log truncated` line is added and the rest is dropped.
pub(crate) fn push_log(level: LogLevel, message: &str) {
    RUN.with(|run| {
        let mut buf = run.logs.borrow_mut();
        if buf.truncated {
            return;
        }
        if buf.bytes + message.len() > buf.max_bytes {
            buf.truncated = true;
            buf.lines.push(LogLine {
                at: utc_now(),
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

/// `f` on the run's host context; `None` outside a run of the executor, and in an inline
/// try, which this stops (`Termination::NotInline`): for host calls that read or write
/// the app's data, block or run other scripts. `f` must not evaluate script code or call
/// another host function: the context is borrowed meanwhile.
pub(crate) fn with_host<T>(f: impl FnOnce(&mut Host) -> T) -> Option<T> {
    let found = RUN.with(|run| {
        if run.inline.get() {
            return None;
        }
        run.host.borrow_mut().as_deref_mut().map(f)
    });
    if found.is_none() {
        refuse_inline();
    }
    found
}

/// `with_host` for the host calls that only buffer an effect (`kv::set`, `kv::delete`,
/// `pubsub::publish`, `queue::send`): they do no I/O and wait for nothing, so an inline
/// try's host context serves them too (what they buffer goes with the try: committed
/// once if it is kept and succeeds, dropped with it otherwise). `None` outside a run of
/// the executor (and an inline try without a host context, which this stops).
pub(crate) fn with_buffering_host<T>(f: impl FnOnce(&mut Host) -> T) -> Option<T> {
    let found = RUN.with(|run| run.host.borrow_mut().as_deref_mut().map(f));
    if found.is_none() {
        refuse_inline();
    }
    found
}

/// In an inline try, stop it (`Termination::NotInline`) and say so: for host calls that
/// must not run on a runtime worker but need no host context (`sleep`).
pub(crate) fn refuse_inline() -> bool {
    let inline = RUN.with(|run| run.inline.get());
    if inline {
        stop(Termination::NotInline);
    }
    inline
}

/// `chrono::Utc::now()`, with the calendar date of the day kept per thread: turning a
/// day number into a date is the costly half of it, and the day changes once a day.
pub(crate) fn utc_now() -> DateTime<Utc> {
    thread_local! {
        static TODAY: Cell<(u64, NaiveDate)> = const { Cell::new((u64::MAX, NaiveDate::MIN)) };
    }
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => TODAY.with(|today| utc_at(since, today)),
        // Before 1970: chrono's own answer (it panics).
        Err(_) => Utc::now(),
    }
}

/// `since` the Unix epoch as chrono's `Utc::now` builds it, the date taken from `today`
/// (day number, date) when it is that day, and kept there otherwise.
fn utc_at(since: Duration, today: &Cell<(u64, NaiveDate)>) -> DateTime<Utc> {
    let secs = since.as_secs();
    let (day, second) = (secs / 86_400, secs % 86_400);
    let date = match today.get() {
        (known, date) if known == day => Some(date),
        _ => i64::try_from(secs - second)
            .ok()
            .and_then(|start| DateTime::from_timestamp(start, 0))
            .map(|start| {
                let date = start.date_naive();
                today.set((day, date));
                date
            }),
    };
    // The second of the day and the nanoseconds are always in range.
    let time = u32::try_from(second)
        .ok()
        .and_then(|s| NaiveTime::from_num_seconds_from_midnight_opt(s, since.subsec_nanos()));
    match (date, time) {
        (Some(date), Some(time)) => date.and_time(time).and_utc(),
        _ => DateTime::from_timestamp(secs as i64, since.subsec_nanos())
            .expect("a time chrono can represent"),
    }
}

/// The one guard of a run: holds this thread's run state from `enter` until it drops
/// (or `end`s, or `finish`es), and clears it then, also when the run panics.
pub(crate) struct RunScope {
    /// The state is this thread's: the guard must not move to another one.
    _not_send: std::marker::PhantomData<*const ()>,
}

/// What a run left behind when its scope ended (`RunScope::end`).
pub(crate) struct Ended {
    /// Why `stop` ended the run, if it did.
    pub(crate) stopped: Option<Termination>,
    /// The lines it logged.
    pub(crate) logs: Vec<LogLine>,
    /// Its host context, with what it buffered: the caller `finish`es or `abandon`s it.
    pub(crate) host: Option<Box<Host>>,
}

impl RunScope {
    /// Start a run under `limits` (its operation budget, deadline and log cap), with the
    /// host context of an executor run or none for a bare sandbox run.
    pub(crate) fn enter(limits: &Limits, host: Option<Box<Host>>) -> Self {
        let budget = Budget {
            max_operations: limits.max_operations,
            deadline: Instant::now() + limits.timeout,
            base: 0,
            clock_mask: RUN_CLOCK_MASK,
        };
        Self::begin(budget, limits.max_log_bytes, host, false)
    }

    /// Start an inline try under `limits` cut to `max_operations` and `max_time` (counted
    /// from `started`, when the try began), with `host` for the calls that only buffer
    /// effects (`with_buffering_host`): every other host call stops it
    /// (`Termination::NotInline`).
    pub(crate) fn enter_inline(
        limits: &Limits,
        max_operations: u64,
        max_time: Duration,
        started: Instant,
        host: Option<Box<Host>>,
    ) -> Self {
        let budget = Budget {
            max_operations: limits.max_operations.min(max_operations),
            deadline: started + limits.timeout.min(max_time),
            base: 0,
            clock_mask: INLINE_CLOCK_MASK,
        };
        Self::begin(budget, limits.max_log_bytes, host, true)
    }

    fn begin(budget: Budget, max_log_bytes: usize, host: Option<Box<Host>>, inline: bool) -> Self {
        RUN.with(|run| {
            run.budget.set(Some(budget));
            run.spent.set(0);
            run.stopped.set(None);
            *run.logs.borrow_mut() = LogBuffer::empty(max_log_bytes);
            *run.host.borrow_mut() = host;
            run.inline.set(inline);
        });
        RunScope {
            _not_send: std::marker::PhantomData,
        }
    }

    /// End the run and clear this thread's run state (one pass): why it was stopped, its
    /// log and its host context, which the caller must `finish` or `abandon`.
    pub(crate) fn end(self) -> Ended {
        let ended = RUN.with(|run| {
            let logs = std::mem::take(&mut run.logs.borrow_mut().lines);
            let stopped = run.stopped.get();
            let host = clear(run);
            Ended {
                stopped,
                logs,
                host,
            }
        });
        // Cleared above: nothing left for `drop` to do.
        std::mem::forget(self);
        ended
    }

    /// End the run: the lines it logged, and its effects when it `succeeded` (a failed
    /// run's effects are dropped and the objects its blob puts wrote are deleted).
    pub(crate) fn finish(self, succeeded: bool) -> (Vec<LogLine>, Effects) {
        let Ended { logs, host, .. } = self.end();
        let effects = host.map(|h| h.finish(succeeded)).unwrap_or_default();
        (logs, effects)
    }
}

/// Reset `run` to "between runs"; its host context, taken out.
fn clear(run: &RunState) -> Option<Box<Host>> {
    run.budget.set(None);
    run.spent.set(0);
    run.stopped.set(None);
    run.inline.set(false);
    *run.logs.borrow_mut() = LogBuffer::empty(0);
    run.host.borrow_mut().take()
}

impl Drop for RunScope {
    fn drop(&mut self) {
        let host = RUN.with(clear);
        // Only after a panic (`end` took it otherwise): nothing the run did stays.
        if let Some(host) = host {
            host.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_operations: u64, timeout: Duration, max_log_bytes: usize) -> Limits {
        Limits {
            max_operations,
            timeout,
            max_log_bytes,
            ..Limits::default()
        }
    }

    #[test]
    fn utc_now_is_chronos_answer_across_days_and_years() {
        let today = Cell::new((u64::MAX, NaiveDate::MIN));
        let day = 86_400;
        for (secs, nanos) in [
            (0, 0),
            (day - 1, 999_999_999),
            (day, 0),
            (day, 1),
            (951_782_400 - 1, 5), // 2000-02-29T23:59:59
            (951_782_400, 5),     // 2000-03-01
            (1_798_761_599, 0),   // 2026-12-31T23:59:59
            (1_798_761_600, 0),   // 2027-01-01
            (1_798_761_600 + 3_723, 123_456_789),
            (1_798_761_600 + 3_723, 123_456_789),
            (4_107_542_400, 0), // 2100-03-01
            (1_798_761_599, 0), // back a day
        ] {
            let since = Duration::new(secs, nanos);
            let chrono = DateTime::from_timestamp(secs as i64, nanos).unwrap();
            assert_eq!(utc_at(since, &today), chrono, "{secs}.{nanos}");
        }
        let before = Utc::now();
        let now = utc_now();
        assert!(before <= now && now <= Utc::now());
    }

    #[test]
    fn the_log_stops_at_its_byte_cap_with_one_truncation_line() {
        let scope = RunScope::enter(&limits(100, Duration::from_secs(5), 10), None);
        push_log(LogLevel::Info, "12345");
        push_log(LogLevel::Info, "67890");
        push_log(LogLevel::Info, "x");
        push_log(LogLevel::Info, "y");
        let (logs, effects) = scope.finish(true);
        let messages: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["12345", "67890", LOG_TRUNCATED]);
        assert!(effects.is_empty());
    }

    #[test]
    fn the_budget_tells_an_operation_overrun_from_a_timeout() {
        let _scope = RunScope::enter(&limits(5000, Duration::ZERO, 10), None);
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
        let _scope = RunScope::enter(&limits(1000, Duration::from_secs(5), 10), None);
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
    fn outside_a_run_the_fallback_operation_limit_applies_and_nothing_is_left_behind() {
        {
            let _scope = RunScope::enter(&limits(5, Duration::from_secs(5), 10), None);
            push_log(LogLevel::Info, "inside");
            stop(Termination::Operations);
        }
        assert!(remaining().is_none());
        assert!(stopped().is_none());
        assert!(with_host(|_| ()).is_none());
        assert!(check_progress(10, 10).is_none());
        let ops = check_progress(11, 10).map(|d| d.cast::<Termination>());
        assert_eq!(ops, Some(Termination::Operations));
        let (logs, _) = RunScope::enter(&limits(5, Duration::from_secs(5), 10), None).finish(true);
        assert!(logs.is_empty(), "the last run's lines are gone");
    }
}
