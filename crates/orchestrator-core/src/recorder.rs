//! The invocation recorder: a batched background writer for sync-HTTP invocation records,
//! and the broadcast of every committed record (HTTP ones from here, event ones from the
//! dispatcher, which commits them with their event).
//!
//! The request path only `try_send`s into a bounded channel; when it is full the record
//! is dropped and counted (`picloud_invocation_records_dropped_total`), so a slow disk
//! never slows an answer. One task sleeps on the channel (no timer, no polling), takes
//! whatever piled up while the previous write ran (up to `BATCH`), writes it in one store
//! call, and only then broadcasts each record: a subscriber never sees a record that is
//! not in the store. `finish` closes the channel, writes what is queued and awaits the task.
//!
//! What one app can make it write is bounded (`RecordBounds`): its failure records per
//! second, and the log bytes of every record. A failure record over the app's budget is
//! not written but counted, per app, in `picloud_invocation_records_bounded_total{app}`
//! and in the store (the invocation list's `dropped`), so a flood of failing requests
//! cannot fill the disk and still shows. Failing events share the app's budget (the
//! dispatcher asks a `FailureGate`): an endpoint that emits failing events cannot fill it
//! either.
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shared::store::InvocationRepository;
use shared::{AppName, InvocationRecord, LogLevel, LogLine, StoreError};
use std::sync::Arc;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Records waiting to be written; beyond this they are dropped.
pub(crate) const QUEUE_CAPACITY: usize = 10_000;
/// At most this many records per store call.
const BATCH: usize = 500;
/// Records kept for slow subscribers of `subscribe_recorded`.
const BROADCAST_CAPACITY: usize = 1024;
/// A busy SQLite is retried this many times, with a growing pause.
const BUSY_RETRIES: u32 = 3;

/// What one app can make the recorder write.
#[derive(Debug, Clone, Copy)]
pub struct RecordBounds {
    /// Failure records (error, timeout) stored per app per second at most; past it they
    /// are counted, not stored. 0: no bound.
    pub failures_per_sec: u32,
    /// The log lines of one stored record keep at most this many message bytes; the rest
    /// is cut and marked. 0: no bound.
    pub max_log_bytes: usize,
}

impl Default for RecordBounds {
    fn default() -> Self {
        RecordBounds {
            failures_per_sec: 10,
            max_log_bytes: 16 * 1024,
        }
    }
}

/// The line that ends a record's log when `cap_logs` cut it.
pub(crate) const LOG_CUT: &str = "... log cut: over the stored record's limit";

/// Keep at most `max_bytes` of message bytes of `logs` (0: all), cutting the last kept
/// line at a character boundary and ending with one `LOG_CUT` line.
pub(crate) fn cap_logs(logs: &mut Vec<LogLine>, max_bytes: usize) {
    if max_bytes == 0 {
        return;
    }
    let mut left = max_bytes;
    for (i, line) in logs.iter_mut().enumerate() {
        if line.message.len() <= left {
            left -= line.message.len();
            continue;
        }
        let mut end = left;
        while !line.message.is_char_boundary(end) {
            end -= 1;
        }
        line.message.truncate(end);
        let at = line.at;
        let keep = if end == 0 { i } else { i + 1 };
        logs.truncate(keep);
        logs.push(LogLine {
            at,
            level: LogLevel::Warn,
            message: LOG_CUT.to_owned(),
        });
        return;
    }
}

/// Each app's failure-record budget for the current second.
pub(crate) struct FailureBudgets {
    per_sec: u32,
    epoch: std::time::Instant,
    /// app -> (second since `epoch`, records taken in it).
    used: Mutex<HashMap<AppName, (u64, u32)>>,
}

impl FailureBudgets {
    pub(crate) fn new(per_sec: u32) -> Self {
        FailureBudgets {
            per_sec,
            epoch: std::time::Instant::now(),
            used: Mutex::new(HashMap::new()),
        }
    }

    /// Whether one more failure record of `app` may be stored this second.
    pub(crate) fn take(&self, app: &AppName) -> bool {
        if self.per_sec == 0 {
            return true;
        }
        let second = self.epoch.elapsed().as_secs();
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, n)) = used.get_mut(app) {
            if *at != second {
                (*at, *n) = (second, 0);
            }
            if *n >= self.per_sec {
                return false;
            }
            *n += 1;
            return true;
        }
        // One entry per app that failed; a full sweep of old seconds keeps it that way.
        if used.len() >= 10_000 {
            used.retain(|_, (at, _)| *at == second);
        }
        used.insert(app.clone(), (second, 1));
        true
    }
}

/// Whether a failure record of an app may be stored now; one that may not is counted.
#[derive(Clone)]
pub(crate) struct FailureGate {
    budgets: Arc<FailureBudgets>,
    drops: Arc<Drops>,
}

impl FailureGate {
    /// `true` when the record of this failure of `app` is to be stored; otherwise it is
    /// counted as bounded (metric and the invocation list's `dropped`).
    pub(crate) fn admit(&self, app: &AppName) -> bool {
        if self.budgets.take(app) {
            return true;
        }
        self.drops.count(app);
        false
    }
}

/// Records not stored because of their app's bound, waiting to be counted in the store.
#[derive(Default)]
struct Drops {
    counts: Mutex<HashMap<AppName, u64>>,
    /// Wakes the writer task to store the counts (a permit is kept if it is busy).
    ready: Notify,
}

impl Drops {
    /// Count a record of `app` that its bound kept out of the store.
    fn count(&self, app: &AppName) {
        metrics::counter!("picloud_invocation_records_bounded_total", "app" => app.to_string())
            .increment(1);
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(app.clone())
            .or_default() += 1;
        self.ready.notify_one();
    }

    fn take(&self) -> Vec<(AppName, u64)> {
        std::mem::take(&mut *self.counts.lock().unwrap_or_else(|e| e.into_inner()))
            .into_iter()
            .collect()
    }
}

pub(crate) struct Recorder {
    queue: mpsc::Sender<InvocationRecord>,
    bounded: Arc<Drops>,
    recorded: broadcast::Sender<InvocationRecord>,
    /// Tells the task to close its channel and drain it.
    closing: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Drops since the last warning, and when (seconds since `epoch`) it was logged.
    dropped: AtomicU64,
    last_warned: AtomicU64,
    epoch: std::time::Instant,
}

impl Recorder {
    /// Spawns the writer task on the current runtime.
    pub(crate) fn start(store: Arc<dyn InvocationRepository>, capacity: usize) -> Self {
        let (queue, rx) = mpsc::channel(capacity.max(1));
        let (recorded, _) = broadcast::channel(BROADCAST_CAPACITY);
        let closing = CancellationToken::new();
        let bounded = Arc::new(Drops::default());
        let task = tokio::spawn(write_loop(
            store,
            rx,
            recorded.clone(),
            bounded.clone(),
            closing.clone(),
        ));
        Recorder {
            queue,
            bounded,
            recorded,
            closing,
            task: Mutex::new(Some(task)),
            dropped: AtomicU64::new(0),
            last_warned: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        }
    }

    /// Queue a record without waiting; a full or closed queue drops it. The warning is
    /// logged at most once every 10 seconds (with the count since), never per record: a
    /// log line per dropped record would make the overload worse.
    pub(crate) fn push(&self, record: InvocationRecord) {
        if self.queue.try_send(record).is_err() {
            metrics::counter!("picloud_invocation_records_dropped_total").increment(1);
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let now = self.epoch.elapsed().as_secs();
            let last = self.last_warned.load(Ordering::Relaxed);
            if (last == 0 || now >= last + 10)
                && self
                    .last_warned
                    .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.dropped.store(0, Ordering::Relaxed);
                tracing::warn!(
                    dropped,
                    "invocation records dropped: the recorder cannot keep up"
                );
            }
        }
    }

    /// Count a record of `app` that its bound kept out of the store.
    pub(crate) fn count_bounded(&self, app: &AppName) {
        self.bounded.count(app);
    }

    /// The per-app failure bound for records stored elsewhere (the dispatcher commits
    /// event records with their events): one budget per app for HTTP and event failures.
    pub(crate) fn failure_gate(&self, budgets: Arc<FailureBudgets>) -> FailureGate {
        FailureGate {
            budgets,
            drops: Arc::clone(&self.bounded),
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<InvocationRecord> {
        self.recorded.subscribe()
    }

    /// The channel `subscribe` listens to, for records committed elsewhere (the
    /// dispatcher writes event records in its own transaction and announces them here).
    pub(crate) fn announcer(&self) -> broadcast::Sender<InvocationRecord> {
        self.recorded.clone()
    }

    /// Close the queue, write what is in it, and wait for the task to end.
    pub(crate) async fn finish(&self) {
        self.closing.cancel();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task
            && let Err(error) = task.await
        {
            tracing::error!(error = ?error, "the invocation recorder task failed");
        }
    }
}

async fn write_loop(
    store: Arc<dyn InvocationRepository>,
    mut rx: mpsc::Receiver<InvocationRecord>,
    recorded: broadcast::Sender<InvocationRecord>,
    bounded: Arc<Drops>,
    closing: CancellationToken,
) {
    let mut buf = Vec::with_capacity(BATCH);
    let mut closed = false;
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut buf, BATCH) => n,
            () = bounded.ready.notified() => {
                count_drops(store.as_ref(), &bounded).await;
                continue;
            }
            () = closing.cancelled(), if !closed => {
                // No new sends from here on; what is buffered is still received.
                rx.close();
                closed = true;
                continue;
            }
        };
        if n == 0 {
            count_drops(store.as_ref(), &bounded).await;
            break;
        }
        match write(store.as_ref(), &buf).await {
            Ok(()) => {
                for record in buf.drain(..) {
                    // No subscriber is fine.
                    let _ = recorded.send(record);
                }
            }
            Err(error) => {
                metrics::counter!("picloud_invocation_records_failed_total")
                    .increment(buf.len() as u64);
                tracing::error!(error = ?error, records = buf.len(), "could not write invocation records; dropped");
                buf.clear();
            }
        }
    }
}

/// Store the drop counts gathered so far; one write however many piled up meanwhile.
async fn count_drops(store: &dyn InvocationRepository, bounded: &Drops) {
    let drops = bounded.take();
    if drops.is_empty() {
        return;
    }
    let mut attempt = 0;
    loop {
        match store.count_dropped(&drops).await {
            Err(StoreError::Busy) if attempt < BUSY_RETRIES => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            Ok(()) => return,
            Err(error) => {
                tracing::error!(error = ?error, apps = drops.len(), "could not count dropped invocation records");
                return;
            }
        }
    }
}

async fn write(
    store: &dyn InvocationRepository,
    batch: &[InvocationRecord],
) -> Result<(), StoreError> {
    let mut attempt = 0;
    loop {
        match store.record(batch).await {
            Err(StoreError::Busy) if attempt < BUSY_RETRIES => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod budget_tests {
    use super::{FailureBudgets, LOG_CUT, RateBudget, SuccessSampler, cap_logs};
    use shared::{AppName, LogLevel, LogLine};

    #[test]
    fn past_the_success_budget_each_app_still_has_one_record_a_second() {
        // A second boundary between the takes would refill the budget: retry then.
        for _ in 0..5 {
            let sampler = SuccessSampler::new(2, "event");
            let (busy, quiet) = (
                AppName::parse("busy").unwrap(),
                AppName::parse("quiet").unwrap(),
            );
            let busy_kept = (0..100).filter(|_| sampler.admit_app(&busy)).count();
            let quiet_kept = (0..10).filter(|_| sampler.admit_app(&quiet)).count();
            let plain_kept = (0..10).filter(|_| sampler.admit()).count();
            if (busy_kept, quiet_kept, plain_kept) == (3, 1, 0) {
                return;
            }
        }
        panic!("the budget of 2 and one per app were not what was kept");
    }

    #[test]
    fn a_budget_lets_per_sec_through_then_refuses_until_the_next_second() {
        let budget = RateBudget::new(3);
        assert!((0..3).all(|_| budget.take()));
        assert!(!budget.take());
        let unlimited = RateBudget::new(0);
        assert!((0..10_000).all(|_| unlimited.take()));
    }

    #[test]
    fn a_spent_budget_refills_when_its_clocks_second_turns() {
        let budget = RateBudget::new(2);
        let spent_in = loop {
            let at = super::second(budget.epoch);
            while budget.take() {}
            // Spent within one second of the clock (else the window may be the next one).
            if super::second(budget.epoch) == at {
                break at;
            }
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while super::second(budget.epoch) == spent_in {
            assert!(
                std::time::Instant::now() < deadline,
                "the second never turned"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(budget.take() && budget.take(), "a new second, a new budget");
    }

    #[test]
    fn each_app_has_its_own_failure_budget() {
        let budgets = FailureBudgets::new(2);
        let (shop, blog) = (app("shop"), app("blog"));
        assert!(budgets.take(&shop) && budgets.take(&shop));
        assert!(!budgets.take(&shop), "shop spent its second");
        assert!(budgets.take(&blog), "blog still has its own");
        let unlimited = FailureBudgets::new(0);
        assert!((0..1000).all(|_| unlimited.take(&shop)));
    }

    #[test]
    fn a_long_log_is_cut_at_the_byte_cap_with_one_marker_line() {
        let lines = |sizes: &[usize]| -> Vec<LogLine> {
            sizes
                .iter()
                .map(|n| LogLine {
                    at: chrono::Utc::now(),
                    level: LogLevel::Info,
                    message: "é".repeat(*n),
                })
                .collect()
        };
        let mut logs = lines(&[3, 3, 3]); // 6 bytes each
        cap_logs(&mut logs, 13);
        let kept: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(
            kept,
            ["ééé", "ééé", LOG_CUT],
            "13 bytes: two lines, the third cut to 0"
        );
        let mut logs = lines(&[3, 3]);
        cap_logs(&mut logs, 9);
        let kept: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(kept, ["ééé", "é", LOG_CUT], "cut on a character boundary");
        let mut logs = lines(&[3, 3]);
        cap_logs(&mut logs, 12);
        assert_eq!(logs.len(), 2, "exactly at the cap: untouched");
        cap_logs(&mut logs, 0);
        assert_eq!(logs.len(), 2, "0: no bound");
    }

    fn app(name: &str) -> AppName {
        AppName::parse(name).expect("app name")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use shared::store::InvocationFilter;
    use shared::{AppName, InvocationId, InvocationStatus, ScriptName};

    fn record(app: &AppName) -> InvocationRecord {
        InvocationRecord {
            id: InvocationId::new(),
            app: app.clone(),
            script: ScriptName::parse("s").unwrap(),
            version: Some(1),
            trigger: "http".into(),
            status: InvocationStatus::Ok,
            started_at: storage_now(),
            duration_ms: 3,
            http_status: Some(200),
            summary: "GET /".into(),
            logs: Vec::new(),
            error: None,
            request_id: None,
            attempt: None,
            trace_id: None,
        }
    }

    /// Microsecond precision, as both backends keep it.
    fn storage_now() -> chrono::DateTime<Utc> {
        use chrono::SubsecRound;
        Utc::now().trunc_subsecs(6)
    }

    #[tokio::test]
    async fn records_are_broadcast_after_they_are_stored_and_none_after_finish() {
        let db = storage::testing::sqlite_store().await;
        let app = AppName::parse("shop").unwrap();
        db.store.apps.create(&app).await.unwrap();
        let recorder = Recorder::start(db.store.invocations.clone(), 16);
        let mut rx = recorder.subscribe();

        let first = record(&app);
        recorder.push(first.clone());
        let seen = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen.id, first.id);
        let stored = db.store.invocations.get(&app, first.id).await.unwrap();
        assert_eq!(stored.map(|r| r.id), Some(first.id));

        let queued: Vec<_> = (0..3).map(|_| record(&app)).collect();
        for r in &queued {
            recorder.push(r.clone());
        }
        recorder.finish().await;
        let late = record(&app);
        recorder.push(late.clone());

        let filter = InvocationFilter {
            limit: 50,
            ..InvocationFilter::default()
        };
        let listed = db.store.invocations.list(&app, &filter).await.unwrap();
        assert_eq!(listed.len(), 4);
        assert!(listed.iter().all(|r| r.id != late.id));
        db.close().await;
    }
}

/// Successful runs' records stored per node per second at most, one sampler for HTTP runs
/// (`[http] recorded_successes_per_sec`) and one for event runs (`[events]
/// recorded_successes_per_sec`); a success past it is sampled out: not stored, not
/// broadcast, counted in `picloud_invocation_records_sampled_total{source}`.
pub(crate) struct SuccessSampler {
    budget: RateBudget,
    /// `http` or `event`.
    source: &'static str,
    /// Looked up on the first sampled record (a lookup by name and labels per record would
    /// cost more than the record's budget check).
    sampled: std::sync::OnceLock<shared::metrics::LocalCounter>,
    /// One record per app and second past the budget (`admit_app`).
    app_floor: FailureBudgets,
}

impl SuccessSampler {
    /// `per_sec` records a second (0: every success is recorded), counted as `source`.
    pub(crate) fn new(per_sec: u32, source: &'static str) -> Self {
        SuccessSampler {
            budget: RateBudget::new(per_sec),
            source,
            sampled: std::sync::OnceLock::new(),
            app_floor: FailureBudgets::new(1),
        }
    }

    /// `true` when the record of this success is to be stored; otherwise it is counted as
    /// sampled out.
    pub(crate) fn admit(&self) -> bool {
        if self.budget.take() {
            return true;
        }
        self.count_sampled();
        false
    }

    /// As `admit`, but past the node's budget an app's first success of each second is
    /// still stored: every app that ran in a second has a record of it, whose notice on
    /// the bus is what the live streams and the queue-history sampler hear (a busy app
    /// must not use up the budget of a quiet one's last runs).
    pub(crate) fn admit_app(&self, app: &AppName) -> bool {
        if self.budget.take() || self.app_floor.take(app) {
            return true;
        }
        self.count_sampled();
        false
    }

    fn count_sampled(&self) {
        self.sampled
            .get_or_init(|| {
                shared::metrics::LocalCounter::new(metrics::counter!(
                    "picloud_invocation_records_sampled_total",
                    "source" => self.source
                ))
            })
            .increment(1);
    }
}

/// At most `per_sec` takes per wall-clock second (0: unlimited), lock-free: the hot path
/// pays a coarse clock read and two relaxed atomic operations.
pub(crate) struct RateBudget {
    per_sec: u64,
    epoch: std::time::Instant,
    /// The second (of `second`'s clock) the count belongs to, and the count, packed as
    /// `second << 32 | count`.
    window: AtomicU64,
}

/// The whole seconds of a monotonic clock. On Linux the kernel's coarse clock, which
/// moves once per tick (a few milliseconds) and costs a load from the vDSO page where
/// `Instant::elapsed` costs a full clock read and a `Timespec` subtraction; a second of it
/// is a second all the same. Elsewhere (or should it ever fail) the seconds since `epoch`.
fn second(epoch: std::time::Instant) -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a live `timespec` for the call to write to.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &raw mut now) } == 0 {
            return now.tv_sec.unsigned_abs();
        }
    }
    epoch.elapsed().as_secs()
}

impl RateBudget {
    pub(crate) fn new(per_sec: u32) -> Self {
        RateBudget {
            per_sec: u64::from(per_sec),
            epoch: std::time::Instant::now(),
            window: AtomicU64::new(0),
        }
    }

    /// Whether one more may pass this second.
    pub(crate) fn take(&self) -> bool {
        if self.per_sec == 0 {
            return true;
        }
        let second = second(self.epoch) & 0xFFFF_FFFF;
        let mut current = self.window.load(Ordering::Relaxed);
        loop {
            let (window_second, count) = (current >> 32, current & 0xFFFF_FFFF);
            let next = if window_second == second {
                if count >= self.per_sec {
                    return false;
                }
                current + 1
            } else {
                (second << 32) | 1
            };
            match self.window.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }
}
