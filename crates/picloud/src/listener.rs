//! The accept loop in front of hyper: a connection limit, the client timeouts of
//! `timeouts`, HTTP/1.1 (HTTP/2 cleartext only when configured) and the drain on shutdown.
//!
//! What must stay true:
//! - at most `max_connections` connections are served at once; one more gets a short 503
//!   and is closed, and the loop keeps accepting;
//! - when `accept` fails for want of resources (`EMFILE`: too many open files), the loop
//!   waits until one of its connections closes (or a second passes) instead of spinning;
//! - on shutdown the loop stops accepting at once; each connection finishes the request it
//!   is serving and closes, and `serve` returns when all have closed or `grace` has
//!   passed, whichever is first (then the rest are dropped).
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::front::Front;
use crate::timeouts::{Activity, ClientTimeouts, Deadlines, TimedIo, TimedService};

/// How the listener treats its clients.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListenerOptions {
    pub timeouts: ClientTimeouts,
    pub max_connections: usize,
    /// Accept HTTP/2 with prior knowledge (h2c) besides HTTP/1.1.
    pub h2c: bool,
    /// On shutdown, how long open connections get to finish.
    pub grace: Duration,
}

/// What a connection past the limit gets before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 65\r\n\r\n\
{\"error\":{\"code\":\"unavailable\",\"message\":\"too many connections\"}}";

/// How long the loop waits after an `accept` failure when no connection closes sooner.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serve `front` on `listener` until `shutdown` is cancelled and the connections are done.
pub(crate) async fn serve(
    listener: TcpListener,
    front: Front,
    options: ListenerOptions,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let closed = Arc::new(Notify::new());
    let connections = TaskTracker::new();
    let lingering = Arc::new(Semaphore::new(MAX_LINGERING));
    // Cancelled when the grace is over: connections still open are dropped.
    let abandon = CancellationToken::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => match Arc::clone(&slots).try_acquire_owned() {
                Ok(slot) => {
                    let connection = Connection {
                        front: front.clone(),
                        options,
                        shutdown: shutdown.clone(),
                        abandon: abandon.clone(),
                        _slot: slot,
                        closed: Arc::clone(&closed),
                    };
                    connections.spawn(connection.run(stream));
                }
                Err(_) => refuse(stream, &lingering, &connections),
            },
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(error = %e, "a connection failed while being accepted");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept connections; waiting for one to close");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = closed.notified() => {}
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(options.grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = options.grace.as_millis() as u64,
            "in-flight requests outlived the shutdown grace; closing them"
        );
        abandon.cancel();
        connections.wait().await;
    }
}

/// Errors of one connection (the loop goes on at once), as opposed to a lack of
/// resources (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`), which the loop waits out.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Refused connections answered after their request head (the rest are closed at once).
const MAX_LINGERING: usize = 64;
/// How long a refused connection is kept, in all.
const LINGER: Duration = Duration::from_secs(2);
/// How much of a refused connection's request is read, at most.
const LINGER_BYTES: usize = 64 * 1024;

/// Refuse a connection past the limit with 503 and close it.
///
/// An HTTP client expects the answer after its request, and closing a socket with an
/// unread request resets it (the client may then lose the answer). So, for up to
/// `MAX_LINGERING` connections at once and `LINGER` each, the request head is read first,
/// the answer sent, and what follows is read and discarded until the client closes.
/// Past that the answer is written without waiting (a new socket's send buffer takes
/// these few bytes at once) and the socket closed.
fn refuse(stream: TcpStream, lingering: &Arc<Semaphore>, tasks: &TaskTracker) {
    metrics::counter!("picloud_http_connections_refused_total").increment(1);
    tracing::debug!("connection limit reached; refusing a connection");
    match Arc::clone(lingering).try_acquire_owned() {
        Ok(permit) => {
            tasks.spawn(async move {
                let _ = tokio::time::timeout(LINGER, refuse_after_head(stream)).await;
                drop(permit);
            });
        }
        Err(_) => {
            let _ = stream.try_write(REFUSAL);
        }
    }
}

async fn refuse_after_head(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let read_head = async {
        while head.len() < LINGER_BYTES && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    };
    // A client that sends nothing still gets its answer, half-way through the linger.
    if let Ok(false) = tokio::time::timeout(LINGER / 2, read_head).await {
        return;
    }
    if stream.write_all(REFUSAL).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// One accepted connection and what it holds: its slot under the limit.
struct Connection {
    front: Front,
    options: ListenerOptions,
    shutdown: CancellationToken,
    abandon: CancellationToken,
    _slot: OwnedSemaphorePermit,
    closed: Arc<Notify>,
}

impl Connection {
    async fn run(self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let timeouts = self.options.timeouts;
        let activity = Arc::new(Activity::default());
        let io = TokioIo::new(TimedIo::new(stream, Arc::clone(&activity), timeouts.write));
        let deadlines = Deadlines::new(Arc::clone(&activity), timeouts, self.options.h2c);
        let service = TimedService::new(self.front.clone(), activity, timeouts.body_read);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        if !self.options.h2c {
            builder = builder.http1_only();
        }
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection, deadlines);
        // `biased`: the deadlines are polled right after the connection, each time, so
        // they see a request end in the same turn (see `timeouts`).
        let served = tokio::select! {
            biased;
            served = connection.as_mut() => served,
            timed_out = deadlines.as_mut() => Err(timed_out.into()),
            () = self.shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                tokio::select! {
                    biased;
                    served = connection.as_mut() => served,
                    timed_out = deadlines.as_mut() => Err(timed_out.into()),
                    () = self.abandon.cancelled() => Ok(()),
                }
            }
        };
        if let Err(e) = served {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The slot is released right after this: wake an accept loop that ran out of files.
        self.closed.notify_one();
    }
}

/// The connection limit when none is configured, from the soft open-file limit
/// (`ulimit -n`; 1024 when unknown): see `connections_for`.
pub(crate) fn default_max_connections() -> usize {
    let files = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| soft_open_files(&limits))
        .unwrap_or(1024);
    connections_for(files)
}

/// Three quarters of `files`, and at least `RESERVED_FILES` below it (for the database,
/// blobs, outbound requests and refusals), within 16..=1024.
fn connections_for(files: u64) -> usize {
    let below = (files / 4 * 3).min(files.saturating_sub(RESERVED_FILES));
    usize::try_from(below)
        .unwrap_or(MAX_DEFAULT_CONNECTIONS)
        .clamp(MIN_DEFAULT_CONNECTIONS, MAX_DEFAULT_CONNECTIONS)
}

/// Files kept for everything but client connections when the limit is derived.
const RESERVED_FILES: u64 = 128;
const MIN_DEFAULT_CONNECTIONS: usize = 16;
const MAX_DEFAULT_CONNECTIONS: usize = 1024;

/// The soft limit on the `Max open files` line of `/proc/self/limits` (`None` when it is
/// `unlimited` or missing).
fn soft_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_declares_its_body_length() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "unavailable");
    }

    #[test]
    fn the_soft_open_file_limit_is_read_from_proc_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             63704                63704                processes\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(soft_open_files(limits), Some(1024));
        assert_eq!(
            soft_open_files(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
        assert_eq!(soft_open_files(""), None);
        let derived = default_max_connections();
        assert!((MIN_DEFAULT_CONNECTIONS..=MAX_DEFAULT_CONNECTIONS).contains(&derived));
    }

    #[test]
    fn the_derived_connection_limit_leaves_files_for_everything_else() {
        assert_eq!(connections_for(1024), 768);
        assert_eq!(connections_for(256), 128);
        assert_eq!(connections_for(65_536), 1024);
        assert_eq!(connections_for(64), 16);
        for files in [200, 512, 1024, 4096] {
            let n = connections_for(files) as u64;
            assert!(n + RESERVED_FILES <= files, "{files}: {n}");
        }
    }
}
