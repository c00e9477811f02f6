//! The executor process's side: accept connections on the Unix socket and run each
//! `Run` frame on the local `Executor`, answering `Done` with the same id.
//!
//! What must stay true: effects are never committed here, only returned (the orchestrator
//! commits them with the event's row, under its lease, or with the HTTP answer); a `Cancel`
//! or a closed connection drops the run's reply, so its blob objects are deleted as when
//! an in-process caller gives up.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use shared::ExecutorClient;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::client::write_frames;
use super::wire::{self, FromExecutor, ToExecutor};
use crate::Executor;

/// Serve connections until `shutdown` completes; runs of open connections are dropped
/// then (their callers hear `ExecutorLost`).
pub async fn serve(
    listener: UnixListener,
    executor: Arc<Executor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, Arc::clone(&executor)));
                }
                Err(error) => {
                    tracing::warn!(%error, "could not accept an orchestrator connection");
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

type Runs = Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>;

/// Cancels every run of a connection when the connection ends (or its task is aborted).
struct CancelOnDrop(Runs);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        lock(&self.0).clear();
    }
}

async fn connection(stream: UnixStream, executor: Arc<Executor>) {
    let (reader, writer) = stream.into_split();
    let (out, frames) = mpsc::unbounded_channel();
    let writing = tokio::spawn(write_frames(writer, frames));
    // Dropping a run's sender cancels it; the guard drops them all when this ends.
    let runs: Runs = Arc::default();
    let _cancel = CancelOnDrop(Arc::clone(&runs));
    let mut reader = tokio::io::BufReader::new(reader);
    // Only the read is awaited here: a frame read half-way must never be dropped.
    loop {
        match wire::read::<ToExecutor, _>(&mut reader).await {
            Ok(Some(ToExecutor::Run { id, invocation })) => {
                let (cancel, cancelled) = oneshot::channel();
                lock(&runs).insert(id, cancel);
                let executor = Arc::clone(&executor);
                let out = out.clone();
                let runs = Arc::clone(&runs);
                tokio::spawn(async move {
                    let result = tokio::select! {
                        result = executor.execute((*invocation).into()) => result,
                        // Cancelled: dropping the run's future closes its reply.
                        _ = cancelled => return,
                    };
                    lock(&runs).remove(&id);
                    let queued = executor.queue_depth() as u64;
                    let frame = wire::encode(&FromExecutor::Done {
                        id,
                        queued,
                        result: result.map(Into::into).map_err(Into::into),
                    });
                    if out.send(frame).is_err() {
                        tracing::debug!(id, "the orchestrator left before a run's answer");
                    }
                });
            }
            Ok(Some(ToExecutor::Cancel { id })) => {
                lock(&runs).remove(&id);
            }
            Ok(None) => break,
            Err(error) => {
                tracing::error!(%error, "an orchestrator connection failed");
                break;
            }
        }
    }
    // The orchestrator is gone: nobody will commit what is still running.
    lock(&runs).clear();
    drop(out);
    let _ = writing.await;
}

fn lock(runs: &Runs) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<()>>> {
    runs.lock().unwrap_or_else(|e| e.into_inner())
}
