//! A fixed set of named OS threads fed by a bounded queue.
//!
//! Rhai is synchronous, so scripts run here, not on a runtime worker (only an inline try,
//! bounded to a millisecond, runs there: see `executor`). Submitting never
//! waits: a full queue is refused at once (the caller answers 503). A job that panics is
//! caught, so a thread never dies; its reply channel is dropped, which the waiting caller
//! sees as a lost worker.
//!
//! The queue is a bounded multi-consumer crossbeam channel: every thread waits on it
//! directly (no mutex around the receiver), and submitting takes only a read lock.
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubmitError {
    /// The queue is full.
    Full,
    /// The pool was shut down (or no thread could be started).
    Closed,
}

pub(crate) struct Pool<J> {
    /// `None` once shut down: no more jobs are taken.
    jobs: RwLock<Option<Sender<J>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl<J: Send + 'static> Pool<J> {
    /// Start `threads` threads named `{name}-N`, each running `handler` on one job at a
    /// time, each with the first of `stacks` (bytes, largest first) that the machine can
    /// reserve: see `Limits::stack_bytes`.
    pub(crate) fn start(
        name: &str,
        threads: usize,
        capacity: usize,
        stacks: &[usize],
        handler: impl Fn(J) + Send + Sync + 'static,
    ) -> Self {
        let (tx, rx) = bounded::<J>(capacity.max(1));
        let handler = Arc::new(handler);
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let handler = Arc::clone(&handler);
            let spawned = spawn_with_stack(&format!("{name}-{i}"), stacks, move || {
                worker(&rx, &*handler);
            });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(error) => tracing::error!(%error, "could not start a script thread"),
            }
        }
        let jobs = if handles.is_empty() { None } else { Some(tx) };
        Pool {
            jobs: RwLock::new(jobs),
            threads: Mutex::new(handles),
        }
    }

    /// Queue a job without waiting.
    ///
    /// # Errors
    /// `Full` when the queue is at capacity, `Closed` after `shutdown`.
    pub(crate) fn submit(&self, job: J) -> Result<(), SubmitError> {
        let jobs = self.jobs.read().unwrap_or_else(|e| e.into_inner());
        let tx = jobs.as_ref().ok_or(SubmitError::Closed)?;
        tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => SubmitError::Full,
            TrySendError::Disconnected(_) => SubmitError::Closed,
        })
    }

    /// Whether jobs are taken (not shut down).
    pub(crate) fn is_open(&self) -> bool {
        self.jobs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Jobs waiting for a thread (not those running).
    pub(crate) fn queued(&self) -> usize {
        let jobs = self.jobs.read().unwrap_or_else(|e| e.into_inner());
        jobs.as_ref().map_or(0, |tx| tx.len())
    }

    /// Stop taking jobs, let the threads finish what is queued and running, join them.
    /// Idempotent.
    pub(crate) fn shutdown(&self) {
        drop(self.jobs.write().unwrap_or_else(|e| e.into_inner()).take());
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let me = std::thread::current().id();
        for handle in handles {
            if handle.thread().id() != me && handle.join().is_err() {
                tracing::error!("a script thread ended with a panic");
            }
        }
    }
}

/// Spawn with the first stack size the machine can reserve (a small machine may refuse
/// hundreds of MiB of address space under strict overcommit).
fn spawn_with_stack(
    name: &str,
    stacks: &[usize],
    body: impl FnOnce() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    let mut body = Some(body);
    let mut last = None;
    for (n, &size) in stacks.iter().enumerate() {
        let Some(run) = body.take() else { break };
        // The closure comes back only through a failed spawn: keep it in a cell.
        let cell = Arc::new(Mutex::new(Some(run)));
        let inner = Arc::clone(&cell);
        match std::thread::Builder::new()
            .name(name.to_owned())
            .stack_size(size)
            .spawn(move || {
                let run = inner.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(run) = run {
                    run();
                }
            }) {
            Ok(handle) => {
                if n > 0 {
                    tracing::warn!(
                        stack_mib = size >> 20,
                        "a script thread got a smaller stack than its limits ask for: a script \
                         that builds a very deep value could abort the process; lower \
                         limits.max_operations or give the machine more memory"
                    );
                }
                return Ok(handle);
            }
            Err(error) => {
                body = cell.lock().unwrap_or_else(|e| e.into_inner()).take();
                last = Some(error);
            }
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no stack size to try")))
}

fn worker<J>(rx: &Receiver<J>, handler: &(impl Fn(J) + ?Sized)) {
    loop {
        let Ok(job) = rx.recv() else { return };
        if catch_unwind(AssertUnwindSafe(|| handler(job))).is_err() {
            tracing::error!("a script job panicked; the thread goes on");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::channel;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_panicking_job_does_not_kill_its_thread() {
        let (done_tx, done_rx) = channel::<String>();
        let done_tx = Mutex::new(done_tx);
        let pool = Pool::start("test-pool", 1, 4, &[1 << 20], move |job: u32| {
            if job == 0 {
                panic!("job 0 panics on purpose");
            }
            let name = std::thread::current().name().unwrap_or("").to_owned();
            let _ = done_tx.lock().unwrap().send(name);
        });
        pool.submit(0).unwrap();
        pool.submit(1).unwrap();
        let served_by = done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(served_by, "test-pool-0");
        pool.shutdown();
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_a_shut_down_pool_is_closed() {
        let (release_tx, release_rx) = channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let (started_tx, started_rx) = channel::<()>();
        let started_tx = Mutex::new(started_tx);
        let pool = Pool::start("test-full", 1, 1, &[1 << 20], move |_: u32| {
            let _ = started_tx.lock().unwrap().send(());
            let _ = release_rx
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(5));
        });
        pool.submit(1).unwrap();
        started_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        pool.submit(2).unwrap();
        assert_eq!(pool.submit(3), Err(SubmitError::Full));
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        pool.shutdown();
        pool.shutdown();
        assert_eq!(pool.submit(4), Err(SubmitError::Closed));
    }

    #[test]
    fn a_stack_the_machine_cannot_reserve_falls_back_to_the_next_size() {
        let (tx, rx) = channel::<u32>();
        let handle = spawn_with_stack("test-stack", &[usize::MAX / 2, 1 << 20], move || {
            tx.send(7).unwrap();
        })
        .expect("the second size is taken");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 7);
        handle.join().unwrap();
        assert!(spawn_with_stack("test-stack", &[usize::MAX / 2], || {}).is_err());
    }
}
