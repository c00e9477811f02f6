//! The orchestrator's side: `RemoteExecutor` implements `ExecutorClient` over one Unix
//! socket connection (a `Link`), multiplexing concurrent invocations by request id, and a
//! supervisor task that (re)starts or reconnects to the executor process.
//!
//! What must stay true:
//! - an invocation handed over on a link that then closes answers `ExecutorLost` (the run
//!   may have started; none of its effects were committed: they only ever come back in the
//!   reply, and the orchestrator commits them);
//! - an invocation that never reached an executor (none connected within the wait, or the
//!   link closed before it was sent) answers `Overloaded`: no run, so an event does not
//!   spend an attempt on it;
//! - a caller that gives up sends `Cancel`, and a reply nobody waits for has its blob
//!   objects deleted, as in-process.
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use shared::store::ObjectStore;
use shared::{ExecError, Execution, ExecutorClient, Invocation};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::wire::{self, FromExecutor, ToExecutor, WireError, WireExecution};

/// The line a `picloud-executor` prints on stdout once it accepts connections.
pub const READY_LINE: &str = "executor listening on ";

/// Where the executor is.
pub enum Endpoint {
    /// Start the executor as a child process and restart it when it exits. `command`
    /// makes the command line (it must make the child listen on `socket`); `stdin` is
    /// written to the child's stdin once, and the pipe then stays open: the child stops
    /// when it closes (this process ended).
    Spawn {
        command: Box<dyn Fn() -> std::process::Command + Send + Sync>,
        stdin: Vec<u8>,
        socket: PathBuf,
    },
    /// Connect to an executor that something else runs (systemd, a container) and
    /// reconnect when the connection drops.
    Connect { socket: PathBuf },
}

#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// How long the first start (or connection) may take before `start` fails.
    pub start_timeout: Duration,
    /// How long an invocation waits for an executor while none is connected (a restart
    /// under way) before it is refused as `Overloaded`.
    pub unavailable_wait: Duration,
    /// How long a spawned executor has to stop after its stdin closed, on shutdown.
    pub grace: Duration,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            start_timeout: Duration::from_secs(60),
            unavailable_wait: Duration::from_secs(3),
            grace: Duration::from_secs(10),
        }
    }
}

type Reply = oneshot::Sender<Result<Execution, ExecError>>;

/// One connection to an executor.
struct Link {
    out: mpsc::UnboundedSender<Vec<u8>>,
    pending: Mutex<Pending>,
    next: AtomicU64,
}

struct Pending {
    /// False once the connection ended: nothing more is registered.
    open: bool,
    waiting: HashMap<u64, Reply>,
}

impl Link {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection ended: every waiting caller hears `ExecutorLost` (its sender drops).
    fn close(&self) {
        let waiting = {
            let mut pending = self.pending();
            pending.open = false;
            std::mem::take(&mut pending.waiting)
        };
        if !waiting.is_empty() {
            tracing::error!(
                runs = waiting.len(),
                "the executor went away with runs in flight"
            );
            metrics::counter!("picloud_executor_runs_lost_total").increment(waiting.len() as u64);
        }
    }
}

/// Shared by the supervisor and the connections' reader tasks.
struct Shared {
    objects: Arc<dyn ObjectStore>,
    /// The executor's queue depth, as its last reply said.
    queued: AtomicU64,
    link: watch::Sender<Option<Arc<Link>>>,
}

impl Shared {
    fn answer(&self, link: &Link, id: u64, result: Result<WireExecution, WireError>) {
        let waiter = link.pending().waiting.remove(&id);
        let result = result.map(Execution::from).map_err(ExecError::from);
        let abandoned = match waiter {
            Some(reply) => match reply.send(result) {
                Ok(()) => return,
                Err(result) => result,
            },
            None => result,
        };
        // Nobody will commit this run: the objects its blob puts wrote go now.
        if let Ok(execution) = abandoned {
            self.delete_objects(wire::objects_of(&execution.effects));
        }
    }

    fn delete_objects(&self, objects: Vec<String>) {
        if objects.is_empty() {
            return;
        }
        let store = Arc::clone(&self.objects);
        tokio::spawn(async move {
            for key in objects {
                if let Err(error) = store.delete(&key).await {
                    tracing::warn!(?error, "could not delete the object of an abandoned run");
                }
            }
        });
    }
}

/// An executor in another process, behind `ExecutorClient`.
pub struct RemoteExecutor {
    shared: Arc<Shared>,
    link: watch::Receiver<Option<Arc<Link>>>,
    unavailable_wait: Duration,
    stop: watch::Sender<bool>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl RemoteExecutor {
    /// Start (or connect to) the executor and return once the first connection is up.
    ///
    /// # Errors
    /// The executor did not start, or did not accept a connection, within
    /// `config.start_timeout`.
    pub async fn start(
        endpoint: Endpoint,
        objects: Arc<dyn ObjectStore>,
        config: RemoteConfig,
    ) -> Result<Arc<RemoteExecutor>, String> {
        let (link_tx, link_rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            objects,
            queued: AtomicU64::new(0),
            link: link_tx,
        });
        let (stop, stopped) = watch::channel(false);
        let (first_tx, first) = oneshot::channel();
        let supervisor = tokio::spawn(supervise(
            endpoint,
            Arc::clone(&shared),
            config.clone(),
            stopped,
            first_tx,
        ));
        let started = match tokio::time::timeout(config.start_timeout, first).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the executor supervisor ended".to_owned()),
            Err(_) => Err(format!(
                "the executor did not accept a connection within {} s",
                config.start_timeout.as_secs()
            )),
        };
        if let Err(error) = started {
            let _ = stop.send(true);
            let _ = supervisor.await;
            return Err(error);
        }
        Ok(Arc::new(RemoteExecutor {
            shared,
            link: link_rx,
            unavailable_wait: config.unavailable_wait,
            stop,
            supervisor: Mutex::new(Some(supervisor)),
        }))
    }

    /// The executor's queue depth as of its last reply.
    pub fn queue_depth(&self) -> usize {
        usize::try_from(self.shared.queued.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    /// Whether an executor is connected right now.
    pub fn connected(&self) -> bool {
        self.link.borrow().is_some()
    }

    /// Disconnect, and stop a spawned executor (closing its stdin, then killing it after
    /// the grace). Call after the runs have finished. Idempotent.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    async fn current(&self) -> Option<Arc<Link>> {
        if let Some(link) = self.link.borrow().clone() {
            return Some(link);
        }
        let mut link = self.link.clone();
        let waited = tokio::time::timeout(self.unavailable_wait, link.wait_for(Option::is_some));
        match waited.await {
            Ok(Ok(link)) => link.clone(),
            _ => None,
        }
    }
}

/// The wait for one reply; dropped early (the caller gave up), it tells the executor.
struct Waiting<'a> {
    link: &'a Link,
    id: u64,
    answered: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let was_waiting = {
            let mut pending = self.link.pending();
            pending.waiting.remove(&self.id).is_some() && pending.open
        };
        if was_waiting {
            let _ = self
                .link
                .out
                .send(wire::encode(&ToExecutor::Cancel { id: self.id }));
        }
    }
}

#[async_trait]
impl ExecutorClient for RemoteExecutor {
    async fn execute(&self, invocation: Invocation) -> Result<Execution, ExecError> {
        let Some(link) = self.current().await else {
            metrics::counter!("picloud_executor_unavailable_total").increment(1);
            return Err(ExecError::Overloaded);
        };
        let id = link.next.fetch_add(1, Ordering::Relaxed);
        let frame = wire::encode(&ToExecutor::Run {
            id,
            invocation: Box::new(invocation.into()),
        });
        let (reply, done) = oneshot::channel();
        {
            let mut pending = link.pending();
            if !pending.open {
                return Err(ExecError::Overloaded);
            }
            pending.waiting.insert(id, reply);
        }
        let mut waiting = Waiting {
            link: &link,
            id,
            answered: false,
        };
        if link.out.send(frame).is_err() {
            // The writer is gone, so the run was never sent.
            return Err(ExecError::Overloaded);
        }
        let result = done.await;
        waiting.answered = true;
        result.unwrap_or(Err(ExecError::ExecutorLost))
    }
}

/// A spawned executor process.
struct Child {
    child: std::process::Child,
    /// Open while we run; the child stops when it closes.
    stdin: Option<std::process::ChildStdin>,
}

impl Child {
    /// Kill it (it may be gone already) and reap it.
    async fn kill(mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = tokio::task::spawn_blocking(move || self.child.wait()).await;
    }

    /// Close its stdin, give it `grace` to stop, then kill it.
    async fn stop(mut self, grace: Duration) {
        drop(self.stdin.take());
        let deadline = Instant::now() + grace;
        // Shutdown only: a short bounded wait for the exit.
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::warn!("the executor did not stop within the grace; killing it");
        self.kill().await;
    }
}

async fn supervise(
    endpoint: Endpoint,
    shared: Arc<Shared>,
    config: RemoteConfig,
    mut stopped: watch::Receiver<bool>,
    first: oneshot::Sender<Result<(), String>>,
) {
    const MIN_DELAY: Duration = Duration::from_millis(100);
    const MAX_DELAY: Duration = Duration::from_secs(5);
    /// A run of the executor this long resets the restart delay.
    const STABLE: Duration = Duration::from_secs(10);
    let mut first = Some(first);
    let mut delay = MIN_DELAY;
    loop {
        let began = Instant::now();
        let attempt = match &endpoint {
            Endpoint::Spawn {
                command,
                stdin,
                socket,
            } => spawn(command(), stdin, socket, config.start_timeout).await,
            Endpoint::Connect { socket } => connect(socket).await.map(|s| (s, None)),
        };
        match attempt {
            Ok((stream, child)) => {
                let (link, closed) = open_link(stream, Arc::clone(&shared));
                shared.link.send_replace(Some(link));
                if let Some(first) = first.take() {
                    let _ = first.send(Ok(()));
                } else {
                    tracing::info!("the executor is back");
                }
                tokio::select! {
                    _ = closed => {}
                    () = stop_requested(&mut stopped) => {
                        shared.link.send_replace(None);
                        if let Some(child) = child {
                            child.stop(config.grace).await;
                        }
                        return;
                    }
                }
                shared.link.send_replace(None);
                metrics::counter!("picloud_executor_restarts_total").increment(1);
                tracing::error!("the connection to the executor closed; restarting it");
                if let Some(child) = child {
                    child.kill().await;
                }
            }
            Err(error) => match (first.take(), &endpoint) {
                // A child that cannot start now will not start later: say why at once.
                (Some(first), Endpoint::Spawn { .. }) => {
                    let _ = first.send(Err(error));
                    return;
                }
                // An executor someone else starts may come up after us: keep trying
                // until `start` gives up.
                (waiting, _) => {
                    first = waiting;
                    tracing::warn!(%error, "could not start or reach the executor");
                }
            },
        }
        delay = if began.elapsed() >= STABLE {
            MIN_DELAY
        } else {
            (delay * 2).min(MAX_DELAY)
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop_requested(&mut stopped) => return,
        }
    }
}

/// Resolves once a stop was asked for (or the `RemoteExecutor` is gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await.map(|_| ());
}

async fn connect(socket: &Path) -> Result<UnixStream, String> {
    UnixStream::connect(socket)
        .await
        .map_err(|e| format!("cannot connect to the executor socket: {e}"))
}

/// Start the child, wait for its ready line, connect.
async fn spawn(
    mut command: std::process::Command,
    stdin: &[u8],
    socket: &Path,
    timeout: Duration,
) -> Result<(UnixStream, Option<Child>), String> {
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot remove the old executor socket: {e}")),
    }
    let program: OsString = command.get_program().to_owned();
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = command.spawn().map_err(|e| {
        format!(
            "cannot start the executor {}: {e}",
            Path::new(&program).display()
        )
    })?;
    let mut input = child.stdin.take();
    if let Some(pipe) = input.as_mut() {
        // Small (the configuration): fits in the pipe's buffer, so this does not block.
        let _ = pipe.write_all(stdin).and_then(|()| pipe.flush());
    }
    let out = child.stdout.take();
    let child = Child {
        child,
        stdin: input,
    };
    let (ready_tx, ready) = oneshot::channel::<()>();
    if let Some(out) = out {
        // Reads until the ready line, then drains whatever else the child prints, until
        // it exits.
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.starts_with(READY_LINE)
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(());
                }
            }
        });
    }
    match tokio::time::timeout(timeout, ready).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => {
            child.kill().await;
            return Err("the executor exited before it accepted connections".into());
        }
        Err(_) => {
            child.kill().await;
            return Err(format!(
                "the executor did not accept connections within {} s",
                timeout.as_secs()
            ));
        }
    }
    match connect(socket).await {
        Ok(stream) => Ok((stream, Some(child))),
        Err(e) => {
            child.kill().await;
            Err(e)
        }
    }
}

/// Start the connection's writer and reader; `closed` fires when the reader ends.
fn open_link(stream: UnixStream, shared: Arc<Shared>) -> (Arc<Link>, oneshot::Receiver<()>) {
    let (reader, writer) = stream.into_split();
    let (out, frames) = mpsc::unbounded_channel();
    let link = Arc::new(Link {
        out,
        pending: Mutex::new(Pending {
            open: true,
            waiting: HashMap::new(),
        }),
        next: AtomicU64::new(1),
    });
    tokio::spawn(write_frames(writer, frames));
    let (closed_tx, closed) = oneshot::channel();
    let reading = Arc::clone(&link);
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(reader);
        loop {
            match wire::read::<FromExecutor, _>(&mut reader).await {
                Ok(Some(FromExecutor::Done { id, queued, result })) => {
                    shared.queued.store(queued, Ordering::Relaxed);
                    shared.answer(&reading, id, result);
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::error!(%error, "the executor's connection failed");
                    break;
                }
            }
        }
        reading.close();
        let _ = closed_tx.send(());
    });
    (link, closed)
}

/// Writes queued frames, flushing once per burst.
pub(crate) async fn write_frames<W>(writer: W, mut frames: mpsc::UnboundedReceiver<Vec<u8>>)
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut writer = BufWriter::new(writer);
    while let Some(frame) = frames.recv().await {
        if writer.write_all(&frame).await.is_err() {
            return;
        }
        while let Ok(more) = frames.try_recv() {
            if writer.write_all(&more).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
}
