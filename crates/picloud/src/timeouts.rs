//! Per-connection timeouts: how long a client may take to send a request head, a request
//! body, or the next request on a kept-alive connection.
//!
//! hyper's own header timeout starts as soon as it waits for a head, so it cannot tell an
//! idle kept-alive connection from a slow head. Here the socket (`TimedIo`), the service
//! (`TimedService`) and the connection's deadline (`Deadlines`) share an `Activity`: the
//! socket notes the bytes of a head, the service counts the requests in flight, and the
//! deadline times the wait for a request while none is in flight; the request body
//! (`TimedBody`) enforces its own deadline while the handler reads it. What must stay true:
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
//!
//! What it costs a request: `Deadlines` is polled with the connection, in its task, after
//! each poll of hyper's connection, so it sees a request end without being woken for it.
//! It reads the clock once when a wait begins and touches the timer only when the new
//! deadline is earlier than the one the timer is set for, or when the timer fires before
//! the deadline (then it is set again): a busy connection re-arms its timer about once per
//! `header_read`, not once per request.
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, Response, header};
use axum::response::IntoResponse;
use futures::task::AtomicWaker;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use orchestrator_core::Answering;

use crate::front::Front;

/// The four client-side timeouts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientTimeouts {
    pub header_read: Duration,
    pub body_read: Duration,
    pub idle: Duration,
    pub write: Duration,
}

/// What the parts of one connection share: its requests in flight, how many times it went
/// back to waiting for a request, and in which of those waits the bytes of a head arrived.
pub(crate) struct Activity {
    /// `waits << 32 | in_flight`: one word, so that a request's end and the wait it begins
    /// are seen together.
    state: AtomicU64,
    /// `waits + 1` of the last wait in which bytes arrived (0: none). A new connection has
    /// its first head's clock running from the start, as if its bytes had begun.
    head: AtomicU64,
    /// Woken when the last request in flight ends, for a connection whose requests may
    /// end in another task (HTTP/2); an HTTP/1 request ends in the connection's own task.
    idle: AtomicWaker,
}

const IN_FLIGHT: u64 = u32::MAX as u64;
const ONE_WAIT: u64 = 1 << 32;

impl Default for Activity {
    fn default() -> Self {
        Activity {
            state: AtomicU64::new(0),
            head: AtomicU64::new(1),
            idle: AtomicWaker::new(),
        }
    }
}

impl Activity {
    /// `(waits, in_flight)`.
    fn load(&self) -> (u64, u64) {
        let state = self.state.load(Ordering::Acquire);
        (state >> 32, state & IN_FLIGHT)
    }

    fn begin(&self) {
        self.state.fetch_add(1, Ordering::AcqRel);
    }

    fn end(&self) {
        // The last request in flight ends and a new wait begins, in one step.
        let (Ok(previous) | Err(previous)) =
            self.state
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                    Some(match state & IN_FLIGHT {
                        0 => state,
                        1 => (state & !IN_FLIGHT).wrapping_add(ONE_WAIT),
                        _ => state - 1,
                    })
                });
        if previous & IN_FLIGHT == 1 {
            self.idle.wake();
        }
    }

    /// Bytes arrived on the socket: while no request is in flight, they begin a head.
    fn bytes_arrived(&self) {
        let (waits, in_flight) = self.load();
        if in_flight == 0 {
            self.head.store(waits + 1, Ordering::Release);
        }
    }

    fn head_begun(&self, waits: u64) -> bool {
        self.head.load(Ordering::Acquire) == waits + 1
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

/// Which wait a connection's deadline is timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// A request is in flight: no deadline.
    InFlight,
    /// Waiting for the first byte of a request, after `n` answers.
    Request(u64),
    /// Reading a request head, after `n` answers.
    Head(u64),
}

/// Why a connection was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimedOut {
    /// No request began within `idle`.
    Idle,
    /// A head was not in within `header_read` of its first byte.
    Head,
}

impl std::error::Error for TimedOut {}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimedOut::Idle => "waiting for a request timed out",
            TimedOut::Head => "reading the request head timed out",
        })
    }
}

/// The deadline of a connection's wait for a request (or for the rest of its head):
/// ready with the reason when the wait is over. Polled along with the connection, in the
/// same task, each time the task runs.
pub(crate) struct Deadlines {
    activity: Arc<Activity>,
    timeouts: ClientTimeouts,
    wait: Wait,
    /// When the current wait is over.
    due: Instant,
    /// Set for `due` or earlier; when it fires early it is set again.
    timer: Pin<Box<Sleep>>,
    /// Requests may end in another task: ask to be woken when the last one does.
    wake_on_end: bool,
}

impl Deadlines {
    /// For a new connection, whose first head's clock starts now.
    pub(crate) fn new(activity: Arc<Activity>, timeouts: ClientTimeouts, h2: bool) -> Self {
        let due = Instant::now() + timeouts.header_read;
        Deadlines {
            activity,
            timeouts,
            wait: Wait::Head(0),
            due,
            timer: Box::pin(tokio::time::sleep_until(due)),
            wake_on_end: h2,
        }
    }

    fn current_wait(&self) -> Wait {
        let (waits, in_flight) = self.activity.load();
        if in_flight > 0 {
            Wait::InFlight
        } else if self.activity.head_begun(waits) {
            Wait::Head(waits)
        } else {
            Wait::Request(waits)
        }
    }
}

impl Future for Deadlines {
    type Output = TimedOut;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TimedOut> {
        let this = &mut *self;
        let wait = this.current_wait();
        if wait != this.wait {
            this.wait = wait;
            let within = match wait {
                Wait::InFlight => {
                    if this.wake_on_end {
                        this.activity.idle.register(cx.waker());
                        // The last request may have ended meanwhile.
                        if this.current_wait() != Wait::InFlight {
                            cx.waker().wake_by_ref();
                        }
                    }
                    return Poll::Pending;
                }
                Wait::Request(_) => this.timeouts.idle,
                Wait::Head(_) => this.timeouts.header_read,
            };
            this.due = Instant::now() + within;
            // A timer set for later than the new deadline (or already fired) is set anew;
            // one set for earlier is left: it wakes early and is set again then.
            if this.due < this.timer.deadline() || this.timer.is_elapsed() {
                this.timer.as_mut().reset(this.due);
            }
        }
        if wait == Wait::InFlight {
            return Poll::Pending;
        }
        loop {
            ready!(this.timer.as_mut().poll(cx));
            if Instant::now() >= this.due {
                return Poll::Ready(match wait {
                    Wait::Head(_) => TimedOut::Head,
                    _ => TimedOut::Idle,
                });
            }
            this.timer.as_mut().reset(this.due);
        }
    }
}

/// The socket: notes the bytes of a head for `Deadlines`, and puts a deadline on writes
/// that wait on a client that does not read.
pub(crate) struct TimedIo<T> {
    inner: T,
    activity: Arc<Activity>,
    write_timeout: Duration,
    /// Set while a write waits on a full send buffer; reset by every byte written. Made
    /// the first time a write has to wait.
    write_deadline: Option<Pin<Box<Sleep>>>,
    write_waiting: bool,
}

impl<T> TimedIo<T> {
    pub(crate) fn new(inner: T, activity: Arc<Activity>, write_timeout: Duration) -> Self {
        TimedIo {
            inner,
            activity,
            write_timeout,
            write_deadline: None,
            write_waiting: false,
        }
    }

    /// After a write-side poll: progress disarms the write deadline, a wait arms it (once)
    /// and fails the write when it passes.
    fn write_progress<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.write_waiting = false;
            return polled;
        }
        let at = Instant::now() + self.write_timeout;
        let deadline = self
            .write_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if !self.write_waiting {
            self.write_waiting = true;
            deadline.as_mut().reset(at);
        }
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(timed_out("sending the answer"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() > before
        {
            self.activity.bytes_arrived();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
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
/// their bodies. A hyper service (called by reference: nothing is cloned per request).
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

impl hyper::service::Service<Request<Incoming>> for TimedService {
    type Response = Response<Answer>;
    type Error = Infallible;
    type Future = Serving;

    fn call(&self, request: Request<Incoming>) -> Serving {
        let in_flight = InFlight::new(&self.activity);
        let mut late = None;
        let request = request.map(|body| {
            if body.is_end_stream() {
                // Nothing to read: an empty body is not boxed (and nothing waits on it).
                Body::empty()
            } else {
                let flag = Arc::new(AtomicBool::new(false));
                late = Some(Arc::clone(&flag));
                Body::new(TimedBody {
                    inner: body,
                    deadline: Instant::now() + self.body_read,
                    sleep: None,
                    late: flag,
                })
            }
        });
        Serving {
            answer: Some(self.front.serve(request)),
            in_flight: Some(in_flight),
            late,
        }
    }
}

/// A request being served; its answer keeps the request in flight.
pub(crate) struct Serving {
    /// Taken when the answer is out.
    answer: Option<Answering>,
    in_flight: Option<InFlight>,
    /// Set when the request has a body: whether it came in too late.
    late: Option<Arc<AtomicBool>>,
}

impl Future for Serving {
    type Output = Result<Response<Answer>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut response = match this.answer.take() {
            Some(Answering::Now(response)) => response,
            Some(Answering::Later(mut answer)) => match answer.as_mut().poll(cx) {
                Poll::Ready(response) => response,
                Poll::Pending => {
                    this.answer = Some(Answering::Later(answer));
                    return Poll::Pending;
                }
            },
            None => panic!("`Serving` polled after its answer"),
        };
        if this
            .late
            .as_ref()
            .is_some_and(|l| l.load(Ordering::Relaxed))
        {
            response = body_timeout_response();
        }
        // The request stays in flight until its answer has been sent.
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|inner| Answer {
            inner,
            _in_flight: in_flight,
        })))
    }
}

/// 408 for a body that did not arrive in time; the connection closes after it.
fn body_timeout_response() -> axum::response::Response {
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
pub(crate) struct Answer {
    inner: Body,
    _in_flight: Option<InFlight>,
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

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    const MS: Duration = Duration::from_millis(1);
    /// Short timeouts on the real clock: a timer never fires before its deadline, so the
    /// lower bounds are exact; the upper bounds leave room for a loaded machine.
    const TIMEOUTS: ClientTimeouts = ClientTimeouts {
        header_read: Duration::from_millis(100),
        body_read: Duration::from_millis(100),
        idle: Duration::from_millis(400),
        write: Duration::from_millis(100),
    };
    const LATE: Duration = Duration::from_secs(10);

    fn setup() -> (Arc<Activity>, Pin<Box<Deadlines>>) {
        let activity = Arc::new(Activity::default());
        let deadlines = Box::pin(Deadlines::new(Arc::clone(&activity), TIMEOUTS, false));
        (activity, deadlines)
    }

    /// One poll, as the connection's task makes after each turn of hyper's connection.
    fn turn(deadlines: &mut Pin<Box<Deadlines>>) -> Poll<TimedOut> {
        deadlines
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
    }

    /// The deadline's outcome and how long after `from` it came.
    async fn outcome(deadlines: &mut Pin<Box<Deadlines>>, from: Instant) -> (TimedOut, Duration) {
        let timed_out = tokio::time::timeout(LATE, deadlines.as_mut())
            .await
            .expect("the wait timed out");
        (timed_out, from.elapsed())
    }

    #[tokio::test]
    async fn a_new_connection_has_header_read_for_its_first_head() {
        let started = Instant::now();
        let (_activity, mut deadlines) = setup();
        let (timed_out, after) = outcome(&mut deadlines, started).await;
        assert_eq!(timed_out, TimedOut::Head);
        assert!(after >= TIMEOUTS.header_read, "{after:?}");
    }

    #[tokio::test]
    async fn after_an_answer_the_client_has_idle_from_its_end_not_from_the_first_heads_clock() {
        let (activity, mut deadlines) = setup();
        assert!(turn(&mut deadlines).is_pending());
        tokio::time::sleep(50 * MS).await;
        // A request answered at 50 ms: the timer, set for the first head's 100 ms, fires
        // early and is set again for the idle wait.
        let request = InFlight::new(&activity);
        assert!(turn(&mut deadlines).is_pending());
        drop(request);
        let answered = Instant::now();
        assert!(turn(&mut deadlines).is_pending());
        let (timed_out, after) = outcome(&mut deadlines, answered).await;
        assert_eq!(timed_out, TimedOut::Idle);
        assert!(after >= TIMEOUTS.idle, "{after:?}");
    }

    #[tokio::test]
    async fn the_next_head_has_header_read_from_its_first_byte() {
        let (activity, mut deadlines) = setup();
        drop(InFlight::new(&activity));
        assert!(turn(&mut deadlines).is_pending());
        tokio::time::sleep(150 * MS).await;
        activity.bytes_arrived();
        let first_byte = Instant::now();
        assert!(turn(&mut deadlines).is_pending());
        let (timed_out, after) = outcome(&mut deadlines, first_byte).await;
        assert_eq!(timed_out, TimedOut::Head);
        assert!(after >= TIMEOUTS.header_read, "{after:?}");
    }

    #[tokio::test]
    async fn a_request_in_flight_has_no_deadline_on_its_connection() {
        let (activity, mut deadlines) = setup();
        let first = InFlight::new(&activity);
        assert!(turn(&mut deadlines).is_pending());
        // Bytes while a request is in flight (a pipelined head, HTTP/2 frames) start no
        // head clock.
        activity.bytes_arrived();
        let second = InFlight::new(&activity);
        let past_both = TIMEOUTS.idle + TIMEOUTS.header_read + 100 * MS;
        assert!(
            tokio::time::timeout(past_both, deadlines.as_mut())
                .await
                .is_err()
        );
        drop(first);
        assert!(turn(&mut deadlines).is_pending());
        // The last one's end starts the idle wait (the timer has fired meanwhile).
        drop(second);
        let answered = Instant::now();
        let (timed_out, after) = outcome(&mut deadlines, answered).await;
        assert_eq!(timed_out, TimedOut::Idle);
        assert!(after >= TIMEOUTS.idle, "{after:?}");
    }

    #[test]
    fn each_return_to_no_request_in_flight_is_a_new_wait() {
        let activity = Arc::new(Activity::default());
        assert_eq!(activity.load(), (0, 0));
        assert!(activity.head_begun(0));
        let a = InFlight::new(&activity);
        let b = InFlight::new(&activity);
        assert_eq!(activity.load(), (0, 2));
        drop(a);
        assert_eq!(activity.load(), (0, 1));
        drop(b);
        assert_eq!(activity.load(), (1, 0));
        assert!(!activity.head_begun(1));
        activity.bytes_arrived();
        assert!(activity.head_begun(1));
    }
}
