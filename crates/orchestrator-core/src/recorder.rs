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
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shared::store::InvocationRepository;
use shared::{InvocationRecord, StoreError};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
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

pub(crate) struct Recorder {
    queue: mpsc::Sender<InvocationRecord>,
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
        let task = tokio::spawn(write_loop(store, rx, recorded.clone(), closing.clone()));
        Recorder {
            queue,
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
    closing: CancellationToken,
) {
    let mut buf = Vec::with_capacity(BATCH);
    let mut closed = false;
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut buf, BATCH) => n,
            () = closing.cancelled(), if !closed => {
                // No new sends from here on; what is buffered is still received.
                rx.close();
                closed = true;
                continue;
            }
        };
        if n == 0 {
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
    use super::RateBudget;

    #[test]
    fn a_budget_lets_per_sec_through_then_refuses_until_the_next_second() {
        let budget = RateBudget::new(3);
        assert!((0..3).all(|_| budget.take()));
        assert!(!budget.take());
        let unlimited = RateBudget::new(0);
        assert!((0..10_000).all(|_| unlimited.take()));
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

/// At most `per_sec` takes per wall-clock second (0: unlimited), lock-free: the hot path
/// pays two relaxed atomic operations.
pub(crate) struct RateBudget {
    per_sec: u64,
    epoch: std::time::Instant,
    /// The second (since `epoch`) the count belongs to, and the count, packed as
    /// `second << 32 | count`.
    window: AtomicU64,
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
        let second = self.epoch.elapsed().as_secs() & 0xFFFF_FFFF;
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
