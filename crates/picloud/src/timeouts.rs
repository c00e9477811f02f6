//! Per-connection timeouts: how long a client may take to send a request head, a request
//! body, or the next request on a kept-alive connection.
//!
//! hyper's own header timeout starts as soon as it waits for a head, so it cannot tell an
//! idle kept-alive connection from a slow head. Here the socket (`TimedIo`) and the
//! service (`TimedService`) share an `Activity`: the socket enforces the wait for a
//! request while none is in flight, the request body (`TimedBody`) enforces its own
//! deadline while the handler reads it. What must stay true:
//! - a new connection has `header_read` to send its first head in full;
//! - after an answer, the client has `idle` to start the next request, and from its first
//!   byte `header_read` to finish that head;
//! - while a request is in flight (its body, the script, a streamed answer) the socket has
//!   no deadline of its own: the body has `body_read` from the request's arrival, and the
//!   script has the request timeout;
//! - a body that is not in by its deadline ends the request with 408 and closes the
//!   connection;
//! - a client that stops reading its answer (the socket's send buffer stays full) is cut
//!   off after `write` without progress, so it cannot hold a connection and its answer
//!   forever; any progress (a single byte taken) restarts that clock.
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tower::Service;

use crate::front::Front;

/// The three client-side timeouts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientTimeouts {
    pub header_read: Duration,
    pub body_read: Duration,
    pub idle: Duration,
    pub write: Duration,
}

/// Requests in flight on one connection, and how many times it went back to idle.
#[derive(Default)]
pub(crate) struct Activity(Mutex<ActivityState>);

#[derive(Default)]
struct ActivityState {
    in_flight: usize,
    /// Incremented each time `in_flight` returns to 0: a new wait for a request begins.
    idles: u64,
    /// The socket's reader, parked while a request was in flight: woken when the last
    /// one ends so that it arms the idle deadline.
    reader: Option<Waker>,
}

impl Activity {
    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `(in_flight, idles)`; while requests are in flight, `waker` is woken when they end.
    fn snapshot(&self, waker: &Waker) -> (usize, u64) {
        let mut state = self.lock();
        if state.in_flight > 0 {
            match &mut state.reader {
                Some(parked) => parked.clone_from(waker),
                None => state.reader = Some(waker.clone()),
            }
        }
        (state.in_flight, state.idles)
    }

    fn begin(&self) {
        self.lock().in_flight += 1;
    }

    fn end(&self) {
        let reader = {
            let mut state = self.lock();
            state.in_flight = state.in_flight.saturating_sub(1);
            if state.in_flight > 0 {
                return;
            }
            state.idles += 1;
            state.reader.take()
        };
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

/// One request in flight, until its answer has been sent (or abandoned).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.begin();
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Which wait the socket's deadline is armed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Armed {
    /// A request is in flight: no deadline.
    Nothing,
    /// Waiting for the first byte of a request, after `idles` answers.
    Idle(u64),
    /// Reading a request head, after `idles` answers.
    Head(u64),
}

/// The socket, with a deadline while the connection waits for (the rest of) a request head.
pub(crate) struct TimedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
    timeouts: ClientTimeouts,
    deadline: Pin<Box<Sleep>>,
    armed: Armed,
    /// Armed while a write waits on a full send buffer; reset by every byte written.
    write_deadline: Pin<Box<Sleep>>,
    write_waiting: bool,
}

impl TimedIo {
    pub(crate) fn new(inner: TcpStream, activity: Arc<Activity>, timeouts: ClientTimeouts) -> Self {
        TimedIo {
            inner,
            activity,
            timeouts,
            // A new connection is reading its first head from the start.
            deadline: Box::pin(tokio::time::sleep(timeouts.header_read)),
            armed: Armed::Head(0),
            write_deadline: Box::pin(tokio::time::sleep(timeouts.write)),
            write_waiting: false,
        }
    }

    /// After a write-side poll: progress disarms the write deadline, a wait arms it (once)
    /// and fails the write when it passes.
    fn write_progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.write_waiting = false;
            return polled;
        }
        if !self.write_waiting {
            self.write_waiting = true;
            let at = Instant::now() + self.timeouts.write;
            self.write_deadline.as_mut().reset(at);
        }
        match self.write_deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(timed_out("sending the answer"))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn arm(&mut self, armed: Armed, within: Duration) {
        self.armed = armed;
        self.deadline.as_mut().reset(Instant::now() + within);
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

impl AsyncRead for TimedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let (in_flight, idles) = self.activity.snapshot(cx.waker());
        if in_flight > 0 {
            self.armed = Armed::Nothing;
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        if !matches!(self.armed, Armed::Idle(n) | Armed::Head(n) if n == idles) {
            let within = self.timeouts.idle;
            self.arm(Armed::Idle(idles), within);
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() > before
        {
            // The first byte of a head starts its own clock.
            if self.armed == Armed::Idle(idles) {
                let within = self.timeouts.header_read;
                self.arm(Armed::Head(idles), within);
            } else if Instant::now() >= self.deadline.deadline() {
                // A head trickling in byte by byte is still a head out of time.
                return Poll::Ready(Err(timed_out("reading the request head")));
            }
            return polled;
        }
        if polled.is_ready() {
            return polled;
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) if self.armed == Armed::Head(idles) => {
                Poll::Ready(Err(timed_out("reading the request head")))
            }
            Poll::Ready(()) => Poll::Ready(Err(timed_out("waiting for a request"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.write_progress(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.write_progress(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.write_progress(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The front door for one connection: marks requests in flight and puts a deadline on
/// their bodies.
#[derive(Clone)]
pub(crate) struct TimedService {
    front: Front,
    activity: Arc<Activity>,
    body_read: Duration,
}

impl TimedService {
    pub(crate) fn new(front: Front, activity: Arc<Activity>, body_read: Duration) -> Self {
        TimedService {
            front,
            activity,
            body_read,
        }
    }
}

impl Service<axum::http::Request<Incoming>> for TimedService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::new(&self.activity);
        let late = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + self.body_read;
        let request: Request = request.map(|body| {
            if body.is_end_stream() {
                Body::new(body)
            } else {
                Body::new(TimedBody {
                    inner: body,
                    deadline,
                    sleep: None,
                    late: Arc::clone(&late),
                })
            }
        });
        let answer = self.front.call(request);
        Box::pin(async move {
            let Ok(mut response) = answer.await;
            if late.load(Ordering::Relaxed) {
                response = body_timeout_response();
            }
            // The request stays in flight until its answer has been sent.
            Ok(response.map(|body| {
                Body::new(Answer {
                    inner: body,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// 408 for a body that did not arrive in time; the connection closes after it.
fn body_timeout_response() -> Response {
    let code = shared::ErrorCode::RequestTimeout;
    let body = shared::ErrorBody::new(code, "the request body did not arrive in time");
    let mut response = (code.status(), axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body with a deadline: frames that arrive in time pass through; waiting past
/// the deadline is an error (and marks the request `late`).
struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    /// Made the first time the body has to wait: a body that arrived with its head
    /// never touches the timer.
    sleep: Option<Pin<Box<Sleep>>>,
    late: Arc<AtomicBool>,
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if frame.is_some() && Instant::now() >= this.deadline {
                    this.late.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Box::new(timed_out("reading the request body")))));
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.late.store(true, Ordering::Relaxed);
                        Poll::Ready(Some(Err(Box::new(timed_out("reading the request body")))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer's body, holding its request in flight until hyper has sent (or dropped) it.
struct Answer {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
