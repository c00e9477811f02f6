//! The sync HTTP handler: match -> rate -> read body -> lane -> commit effects -> answer ->
//! record. A request over its app's (or script's) rate or concurrency limit is answered
//! 429 with `Retry-After` and is not recorded: it never ran.
//!
//! On a route that opted in, a request with an `Idempotency-Key` takes its key before it
//! runs (`shared::store::IdempotencyRepository`): a key already answered is replayed with
//! `Idempotency-Replayed: true` and nothing runs; a key still running is a 409; a key used
//! with a different request a 422. The run's answer is stored in the transaction that
//! commits its effects; an answer that is not stored (a failure, a 5xx) releases the key.
//!
//! Every step before the lane is in memory; the only I/O is the executor hand-off. The
//! run and its record happen in their own task, so a caller that hangs up mid-run still
//! leaves a record for the app's owner. A successful run's storage writes and emitted
//! events are committed in one transaction (shared with the runs that finish with it:
//! `super::commit`) BEFORE the answer is sent (so a caller that reads right after sees
//! them); a run without effects touches no database.
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use ::http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use ::http::request::Parts;
use ::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use metrics::{Counter, counter};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use sha2::{Digest, Sha256};
use shared::limits::InvocationLimits;
use shared::metrics::{LocalCounter, LocalHistogram};
use shared::store::{App, Claimed, Idempotency, IdempotencyKey, KeyHold, StoredAnswer};
use shared::{
    Effects, ExecError, FailureKind, HttpRequest, Invocation, InvocationId, InvocationInput,
    InvocationRecord, InvocationStatus, LogLine, RequestHeaders, ScriptName, ScriptOutput,
    TriggerId,
};

use super::commit::Answer;
use super::error::{INVOCATION_ID_HEADER, IngressError, invocation_id_value};
use super::{IngressConfig, Orchestrator};
use crate::lane::Outcome;
use crate::recorder::cap_logs;
use crate::routes::{AppRoutes, RouteMatch};
use crate::trace::RunSpan;

/// The request header whose value becomes the invocation's `request_id`.
const REQUEST_ID_HEADER: &str = "x-request-id";
/// A longer request id is cut to this many characters.
const MAX_REQUEST_ID_LEN: usize = 128;
/// The caller's key for a request that must not run twice.
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on an answer replayed from a stored one.
const IDEMPOTENCY_REPLAYED: HeaderName = HeaderName::from_static("idempotency-replayed");
/// How long past the request timeout a key stays taken by a run that never ended (a
/// crash): after that, a retry takes it over.
const KEY_GRACE: TimeDelta = TimeDelta::seconds(60);
/// The record's error when a successful run's effects could not be committed.
const EFFECTS_NOT_COMMITTED: &str = "effects could not be committed";

/// Every path the platform's own routes do not claim, as the router's fallback: the app
/// is the first segment and the script's routes match the rest, so axum's own path
/// parameters would be work for nothing.
pub(super) fn router(orchestrator: Arc<Orchestrator>) -> Router {
    Router::new()
        .fallback(
            |State(orchestrator): State<Arc<Orchestrator>>, request: Request| {
                handle(&orchestrator, request).answer()
            },
        )
        .with_state(orchestrator)
}

/// Header names parsed once (`HeaderName::from_static` validates on every call).
const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);
const INVOCATION_ID: HeaderName = HeaderName::from_static(INVOCATION_ID_HEADER);
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The public ingress's metrics, resolved once (a lookup by name and labels per request
/// costs more than a small script's run). Resolved on first use, after the server has
/// installed its recorder. The two every request touches are kept per thread.
struct IngressMetrics {
    /// `picloud_http_requests_total{status}`, one slot per status 100..=599.
    requests: Vec<OnceLock<LocalCounter>>,
    duration: LocalHistogram,
    /// `picloud_http_throttled_total{reason}`: refused with 429 before running.
    throttled_rate: Counter,
    throttled_concurrency: Counter,
}

static METRICS: LazyLock<IngressMetrics> = LazyLock::new(|| IngressMetrics {
    requests: (100..600).map(|_| OnceLock::new()).collect(),
    duration: LocalHistogram::new("picloud_http_request_duration_seconds"),
    throttled_rate: counter!("picloud_http_throttled_total", "reason" => "rate"),
    throttled_concurrency: counter!("picloud_http_throttled_total", "reason" => "concurrency"),
});

impl IngressMetrics {
    fn count(&self, status: StatusCode) {
        let code = status.as_u16();
        let Some(slot) = self.requests.get(usize::from(code).wrapping_sub(100)) else {
            return;
        };
        slot.get_or_init(|| {
            LocalCounter::new(counter!("picloud_http_requests_total", "status" => code.to_string()))
        })
        .increment(1);
    }
}

/// An answer: made at once, or on its way.
pub enum Answering {
    /// Answered while the request was being handed over: nothing was left to wait for.
    Now(Response),
    /// Still to come (the body, an idempotency key, a script thread, a commit).
    Later(Pin<Box<dyn Future<Output = Response> + Send>>),
}

impl Answering {
    /// The answer, once it is there.
    pub async fn answer(self) -> Response {
        match self {
            Answering::Now(response) => response,
            Answering::Later(answer) => answer.await,
        }
    }
}

/// Every public request: no tracing span (it costs as much as a small script). A caller's
/// `x-request-id` is kept in the invocation record and echoed back; without one, the
/// invocation id (`x-picloud-invocation-id`) is what names the call. Error answers are
/// logged inside a span that names both.
///
/// A request without a body (or whose body has arrived with its head) to a route without
/// idempotency keys, whose script the executor can answer at once (an inline try) and
/// whose run has no effects to commit, is answered here, without a future: routing, the
/// run, the answer and the record are all in memory. Anything that has to wait goes on
/// in a future of its own, with the same steps.
pub(super) fn handle(orchestrator: &Arc<Orchestrator>, request: Request) -> Answering {
    if let Some(app) = crate::realtime::is_realtime_path(request.uri().path()) {
        let app = app.to_owned();
        // Boxed: its state is not carried, nor moved, with every request's.
        let subscribe = crate::realtime::subscribe(orchestrator.realtime.clone(), app, request);
        return Answering::Later(Box::pin(subscribe));
    }
    let started = Instant::now();
    let id = InvocationId::new();
    let Caller {
        request_id,
        traceparent,
    } = Caller::of(request.headers());
    let end = End {
        started,
        id,
        echoed: request_id
            .as_deref()
            .and_then(|rid| HeaderValue::from_str(rid).ok()),
    };
    let (mut parts, body) = request.into_parts();
    let found = match route(orchestrator, &parts) {
        Ok(found) => found,
        Err(error) => return Answering::Now(end.answer(Err(error), &parts)),
    };
    if found.idempotency.is_some() || !axum::body::HttpBody::is_end_stream(&body) {
        // The body, or the key, has to be waited for.
        let orchestrator = Arc::clone(orchestrator);
        return Answering::Later(Box::pin(async move {
            let caller = (request_id, traceparent);
            let served = serve(orchestrator, &mut parts, body, found, id, caller).await;
            end.answer(served, &parts)
        }));
    }
    // Kept here, taken by the run: the guard below captures only references, so neither
    // is copied into it.
    let mut invocation = Some(invocation(
        &mut parts,
        &found.routed,
        found.invocation,
        id,
        request_id,
        Bytes::new(),
    ));
    let mut start = invocation.as_ref().map(|invocation| {
        RunStart::new(
            orchestrator,
            invocation,
            &parts.method,
            started,
            traceparent.as_deref(),
        )
    });
    // One guard for the run, its settling and its record: a panic in any of them is
    // answered as an internal error naming the invocation, as `FinishOnDrop` answers one
    // in a run that waits. What comes out of it is small (the settled run is boxed only
    // when it has effects to commit), so the answer is not copied on its way out.
    let at_once = caught(id, || {
        const SET: &str = "set above, taken once";
        let Some(outcome) = orchestrator.lane.try_now(invocation.as_ref().expect(SET)) else {
            // A script thread runs it, in the span and on the clock started here.
            let run = finishing_run(
                Arc::clone(orchestrator),
                found.routed,
                invocation.take().expect(SET),
                &parts,
                None,
                start.take().expect(SET),
            );
            return Ok(AtOnce::Later(Box::pin(run)));
        };
        invocation = None;
        let settling = settle_run(orchestrator, start.take().expect(SET), outcome)?;
        if settling.effects.is_empty() {
            let routed = &found.routed;
            return Ok(AtOnce::Answer(settling.record(
                orchestrator,
                routed,
                &parts.method,
                &parts.uri,
            )));
        }
        Ok(AtOnce::Commit(Box::new(settling), found.routed))
    })
    .flatten();
    match at_once {
        Ok(AtOnce::Answer(recorded)) => Answering::Now(end.answer(recorded, &parts)),
        Ok(AtOnce::Later(run)) => end.later(parts, run),
        Ok(AtOnce::Commit(settling, routed)) => {
            // Its effects are committed before it is answered, even if the caller hangs up.
            let orchestrator = Arc::clone(orchestrator);
            let (method, uri) = (parts.method.clone(), parts.uri.clone());
            let commit = FinishOnDrop::new(id, async move {
                let settling = settling.commit(&orchestrator, &routed, None).await;
                settling.record(&orchestrator, &routed, &method, &uri)
            });
            end.later(parts, commit)
        }
        Err(error) => Answering::Now(end.answer(Err(error), &parts)),
    }
}

/// Where a run tried at once goes on: answered, to a script thread, or to its commit.
enum AtOnce {
    Answer(Result<Response, IngressError>),
    Later(Pin<Box<dyn Future<Output = Result<Response, IngressError>> + Send>>),
    Commit(Box<Settling>, Routed),
}

/// `f`'s result, or the internal error that names the invocation when it panics.
fn caught<T>(id: InvocationId, f: impl FnOnce() -> T) -> Result<T, IngressError> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|_panic| IngressError::Internal {
        id,
        source: "the run panicked".into(),
    })
}

/// What every answer gets on its way out, whichever way it was made.
struct End {
    started: Instant,
    id: InvocationId,
    /// The caller's request id, to echo.
    echoed: Option<HeaderValue>,
}

impl End {
    /// The answer once `served` is done, `parts` kept for it.
    fn later(
        self,
        parts: Parts,
        served: impl Future<Output = Result<Response, IngressError>> + Send + 'static,
    ) -> Answering {
        Answering::Later(Box::pin(async move {
            let served = served.await;
            self.answer(served, &parts)
        }))
    }

    fn answer(self, served: Result<Response, IngressError>, parts: &Parts) -> Response {
        let mut response = match served {
            Ok(response) => response,
            Err(error) => {
                let request_id = self.echoed.as_ref().and_then(|v| v.to_str().ok());
                let span = tracing::info_span!("request", method = %parts.method, path = parts.uri.path(), request_id, invocation = %self.id);
                span.in_scope(|| error.into_response())
            }
        };
        if let Some(value) = self.echoed {
            // A script that set its own keeps it.
            response.headers_mut().entry(REQUEST_ID).or_insert(value);
        }
        let metrics = &*METRICS;
        metrics.count(response.status());
        metrics
            .duration
            .record(self.started.elapsed().as_secs_f64());
        response
    }
}

/// A request matched to its route and admitted under its rate.
struct Found {
    routed: Routed,
    idempotency: Option<KeyedRoute>,
    invocation: Matched,
}

/// What the route match gives the invocation.
struct Matched {
    script: ScriptName,
    params: BTreeMap<String, String>,
    /// The path inside the app.
    path: String,
    limits: InvocationLimits,
}

/// The app's route for the request, admitted under the app's and script's request rates.
fn route(orchestrator: &Orchestrator, parts: &Parts) -> Result<Found, IngressError> {
    let (app, path) = split_app(parts.uri.path());
    let routes = orchestrator.routes.app(app).ok_or(IngressError::NotFound)?;
    let (script, route, params, trigger, idempotency) = match routes.find(&parts.method, path) {
        RouteMatch::Found {
            script,
            route,
            params,
            trigger,
            idempotency,
        } => (script, route, params, trigger, idempotency),
        RouteMatch::MethodNotAllowed { allow } => {
            return Err(IngressError::MethodNotAllowed {
                method: parts.method.to_string(),
                allow,
            });
        }
        RouteMatch::NotFound => return Err(IngressError::NotFound),
    };
    let limits = orchestrator.limits.resolve(&routes.app.name, &script);
    if let Err(wait) = orchestrator
        .limits
        .admit_request(&routes.app.name, &script, &limits)
    {
        METRICS.throttled_rate.increment(1);
        return Err(IngressError::TooManyRequests {
            reason: "over the request rate allowed to this app or script".into(),
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        });
    }
    Ok(Found {
        idempotency: idempotency.map(|policy| KeyedRoute { policy, trigger }),
        invocation: Matched {
            script,
            params,
            path: path.to_owned(),
            limits: limits.invocation,
        },
        routed: Routed { routes, route },
    })
}

/// A route that takes idempotency keys: its policy and trigger.
struct KeyedRoute {
    policy: Idempotency,
    trigger: TriggerId,
}

/// The invocation of a matched request.
fn invocation(
    parts: &mut Parts,
    routed: &Routed,
    matched: Matched,
    id: InvocationId,
    request_id: Option<String>,
    body: Bytes,
) -> Invocation {
    Invocation {
        id,
        app: routed.routes.app.name.clone(),
        script: matched.script,
        request_id,
        limits: matched.limits,
        input: InvocationInput::Http(HttpRequest {
            method: method_name(&parts.method),
            path: matched.path,
            params: matched.params,
            query: parse_query(parts.uri.query()),
            headers: std::mem::take(&mut parts.headers).into(),
            body,
        }),
    }
}

/// The method's name: a standard one's is a constant.
fn method_name(method: &Method) -> Cow<'static, str> {
    const STANDARD: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT",
    ];
    let name = method.as_str();
    match STANDARD.iter().find(|standard| **standard == name) {
        Some(standard) => Cow::Borrowed(standard),
        None => Cow::Owned(name.to_owned()),
    }
}

/// A request that waits for its body or its idempotency key: the rest of `handle`.
async fn serve(
    orchestrator: Arc<Orchestrator>,
    parts: &mut Parts,
    body: Body,
    found: Found,
    id: InvocationId,
    (request_id, traceparent): (Option<String>, Option<String>),
) -> Result<Response, IngressError> {
    let body = read_body(&parts.headers, body, orchestrator.config.max_body_bytes).await?;
    let keyed = match found.idempotency {
        Some(KeyedRoute { policy, trigger }) => match idempotency_key(&parts.headers)? {
            Some(key) => {
                let hold = KeyHold {
                    app: found.routed.routes.app.name.clone(),
                    trigger,
                    key,
                    holder: id,
                };
                let fingerprint = fingerprint(&parts.method, &parts.uri, &body);
                let running_until = Utc::now()
                    + TimeDelta::from_std(orchestrator.config.request_timeout)
                        .unwrap_or(TimeDelta::MAX)
                    + KEY_GRACE;
                let claimed = orchestrator
                    .store
                    .idempotency
                    .claim(&hold, &fingerprint, running_until)
                    .await
                    .map_err(|e| IngressError::Internal {
                        id,
                        source: Box::new(e),
                    })?;
                match claimed {
                    Claimed::Run => Some(Keyed {
                        hold,
                        ttl: TimeDelta::from_std(policy.ttl()).unwrap_or(TimeDelta::MAX),
                    }),
                    Claimed::Running => return Err(IngressError::IdempotencyKeyInFlight),
                    Claimed::Reused => return Err(IngressError::IdempotencyKeyReused),
                    Claimed::Answered(answer) => return Ok(replay(answer)),
                }
            }
            None => None,
        },
        None => None,
    };
    let invocation = invocation(parts, &found.routed, found.invocation, id, request_id, body);
    let start = RunStart::new(
        &orchestrator,
        &invocation,
        &parts.method,
        Instant::now(),
        traceparent.as_deref(),
    );
    finishing_run(orchestrator, found.routed, invocation, parts, keyed, start).await
}

/// The run on the lane and its record, which go on if the caller hangs up mid-run.
fn finishing_run(
    orchestrator: Arc<Orchestrator>,
    routed: Routed,
    invocation: Invocation,
    parts: &Parts,
    keyed: Option<Keyed>,
    start: RunStart,
) -> FinishOnDrop<impl Future<Output = Result<Response, IngressError>> + Send + 'static> {
    let id = invocation.id;
    let run = run_and_record(
        orchestrator,
        routed,
        invocation,
        parts.method.clone(),
        parts.uri.clone(),
        keyed,
        start,
    );
    FinishOnDrop::new(id, run)
}

/// A request that took its idempotency key: its answer is stored for `ttl`.
struct Keyed {
    hold: KeyHold,
    ttl: TimeDelta,
}

/// The request's `Idempotency-Key`, if it sent one (400 when it is no key, or sent twice).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, IngressError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(raw) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(IngressError::InvalidIdempotencyKey(
            "a request may carry one Idempotency-Key".into(),
        ));
    }
    IdempotencyKey::parse(raw.as_bytes())
        .map(Some)
        .map_err(|e| IngressError::InvalidIdempotencyKey(e.0))
}

/// What names a request for its key: method, path with query, and the body's hash. Only
/// used to refuse a key sent again with a different request, never as a key itself.
fn fingerprint(method: &Method, uri: &Uri, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(method.as_str().as_bytes());
    hash.update(b" ");
    hash.update(
        uri.path_and_query()
            .map_or(uri.path(), |pq| pq.as_str())
            .as_bytes(),
    );
    hash.update(b"\n");
    hash.update(body);
    format!("{:x}", hash.finalize())
}

/// A stored answer as it was sent, marked as replayed.
fn replay(answer: StoredAnswer) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.append(name, value);
        }
    }
    headers.insert(IDEMPOTENCY_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// A script's answer as it will be stored, and the answer again to send (its body is
/// whole bytes already, so reading it does not wait).
async fn to_stored(response: Response) -> Result<(Response, StoredAnswer), axum::Error> {
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await?;
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let stored = StoredAnswer {
        status: parts.status.as_u16(),
        headers,
        body: body.clone(),
    };
    Ok((Response::from_parts(parts, Body::from(body)), stored))
}

/// Polls a future in place; when dropped before it is done (the caller hung up), the rest
/// of it runs on a task of its own, and an error it ends with is still logged. Cheaper than
/// spawning every request's run. A panic in the run is caught and answered as an internal
/// error that names the invocation (as a failed task would be).
struct FinishOnDrop<F: Future<Output = Result<Response, IngressError>> + Send + 'static> {
    id: InvocationId,
    inner: Option<Pin<Box<F>>>,
}

impl<F: Future<Output = Result<Response, IngressError>> + Send + 'static> FinishOnDrop<F> {
    fn new(id: InvocationId, future: F) -> Self {
        FinishOnDrop {
            id,
            inner: Some(Box::pin(future)),
        }
    }
}

impl<F: Future<Output = Result<Response, IngressError>> + Send + 'static> Future
    for FinishOnDrop<F>
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let id = self.id;
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Pending;
        };
        let done = match caught(id, || inner.as_mut().poll(cx)) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(done)) => done,
            Err(panicked) => Err(panicked),
        };
        self.inner = None;
        Poll::Ready(done)
    }
}

impl<F: Future<Output = Result<Response, IngressError>> + Send + 'static> Drop for FinishOnDrop<F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        if let Some(rest) = self.inner.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let id = self.id;
            runtime.spawn(async move {
                if let Err(error) = rest.await {
                    // Nobody reads the answer, but making it logs the failure.
                    let span = tracing::info_span!("request", invocation = %id, caller = "gone");
                    drop(span.in_scope(|| error.into_response()));
                }
            });
        }
    }
}

/// `/shop/users/42` -> (`shop`, `/users/42`); `/shop` -> (`shop`, `/`).
fn split_app(uri_path: &str) -> (&str, &str) {
    let trimmed = uri_path.strip_prefix('/').unwrap_or(uri_path);
    // A byte scan: the app's name is short, shorter than a searcher takes to set up.
    match trimmed.bytes().position(|b| b == b'/') {
        Some(i) => (&trimmed[..i], &trimmed[i..]),
        None => (trimmed, "/"),
    }
}

/// The body, refused with 413 past `limit` (early when `Content-Length` says so).
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, IngressError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(IngressError::PayloadTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(IngressError::PayloadTooLarge { limit })
        }
        Err(e) => Err(IngressError::UnreadableBody(e)),
    }
}

/// Query parameters, percent-decoded; the last value of a repeated name wins.
fn parse_query(query: Option<&str>) -> BTreeMap<String, String> {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return BTreeMap::new();
    };
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// What a request's headers say of its caller, read in one pass (a request has few
/// headers; a lookup by name hashes the name, twice for two).
struct Caller {
    /// Its `x-request-id` (the first, cut to `MAX_REQUEST_ID_LEN` characters).
    request_id: Option<String>,
    /// Its `traceparent`, as a script reads it (`RequestHeaders`: the values of a repeated
    /// one joined with ", ").
    traceparent: Option<String>,
}

impl Caller {
    fn of(headers: &HeaderMap) -> Caller {
        let mut request_id = None;
        let mut traced = false;
        for (name, value) in headers {
            if *name == REQUEST_ID {
                request_id = request_id.or(Some(value));
            } else if *name == TRACEPARENT {
                traced = true;
            }
        }
        Caller {
            request_id: request_id.and_then(request_id_text),
            // Looked up by name only when it is there.
            traceparent: traced
                .then(|| RequestHeaders::value_in(headers, TRACEPARENT).map(Cow::into_owned))
                .flatten(),
        }
    }
}

/// The caller's `x-request-id`, cut to `MAX_REQUEST_ID_LEN` characters.
fn request_id_text(value: &HeaderValue) -> Option<String> {
    let raw = value.to_str().ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(match raw.char_indices().nth(MAX_REQUEST_ID_LEN) {
        Some((cut, _)) => raw[..cut].to_owned(),
        None => raw.to_owned(),
    })
}

/// The route table a request was routed by, and the route in it: the invocation's app and
/// script, named again for its record without copying them for every run.
struct Routed {
    routes: Arc<AppRoutes>,
    route: usize,
}

/// Runs the invocation on the lane, commits its effects (to the app it was routed to, and
/// to no app created under its name meanwhile), shapes the answer and queues the record
/// (successes within the record budget, every failure).
async fn run_and_record(
    orchestrator: Arc<Orchestrator>,
    routed: Routed,
    invocation: Invocation,
    method: Method,
    uri: Uri,
    keyed: Option<Keyed>,
    start: RunStart,
) -> Result<Response, IngressError> {
    let outcome = orchestrator.lane.run(invocation).await;
    let settling = match settle_run(&orchestrator, start, outcome) {
        Ok(settling) => settling,
        Err(refused) => {
            release(&orchestrator, keyed.as_ref()).await;
            return Err(refused);
        }
    };
    let settling = settling
        .commit(&orchestrator, &routed, keyed.as_ref())
        .await;
    if !settling.stored {
        release(&orchestrator, keyed.as_ref()).await;
    }
    settling.record(&orchestrator, &routed, &method, &uri)
}

/// A run about to start: its clock and span.
struct RunStart {
    clock: Instant,
    id: InvocationId,
    request_id: Option<String>,
    span: RunSpan,
}

impl RunStart {
    /// `clock`: when the run's time began; `parent`: the caller's `traceparent`, if it
    /// sent one.
    fn new(
        orchestrator: &Orchestrator,
        invocation: &Invocation,
        method: &Method,
        clock: Instant,
        parent: Option<&str>,
    ) -> Self {
        RunStart {
            clock,
            id: invocation.id,
            request_id: invocation.request_id.clone(),
            span: start_span(orchestrator, invocation, method, parent),
        }
    }
}

/// A run's outcome, settled: its answer, what its record keeps, and its effects to
/// commit before the answer is sent.
struct Settling {
    start: RunStart,
    effects: Effects,
    settled: Settled,
    answer: Result<Response, IngressError>,
    /// Whether the answer was stored for its idempotency key.
    stored: bool,
}

/// The outcome as an answer and a record; a refusal over the concurrency limit is
/// answered 429 and not recorded (it never ran), like a request over its rate.
fn settle_run(
    orchestrator: &Orchestrator,
    start: RunStart,
    mut outcome: Outcome,
) -> Result<Settling, IngressError> {
    if let Outcome::Refused(ExecError::ConcurrencyLimit { of, limit }) = outcome {
        METRICS.throttled_concurrency.increment(1);
        return Err(IngressError::TooManyRequests {
            reason: format!("the {of} is at its limit of {limit} invocations at once"),
            retry_after_secs: 1,
        });
    }
    let mut effects = match &mut outcome {
        Outcome::Ran(execution) => std::mem::take(&mut execution.effects),
        Outcome::TimedOut | Outcome::Refused(_) => Effects::default(),
    };
    // What it emitted continues its trace (only emitted events carry it).
    if !effects.emitted.is_empty() {
        effects.trace = Some(start.span.traceparent());
    }
    let (settled, answer) = settle(start.id, outcome, &orchestrator.config);
    Ok(Settling {
        start,
        effects,
        settled,
        answer,
        stored: false,
    })
}

impl Settling {
    /// Commits a successful run's effects, and its answer for a keyed request (the module
    /// doc); a commit that fails turns the answer into an internal error.
    async fn commit(
        mut self,
        orchestrator: &Orchestrator,
        routed: &Routed,
        keyed: Option<&Keyed>,
    ) -> Settling {
        let effects = std::mem::take(&mut self.effects);
        self.answer = match self.answer {
            Ok(response) => {
                match commit(orchestrator, &routed.routes.app, effects, response, keyed).await {
                    Ok((response, stored)) => {
                        self.stored = stored;
                        Ok(response)
                    }
                    Err(source) => {
                        self.settled.status = InvocationStatus::Error;
                        self.settled.error = Some(EFFECTS_NOT_COMMITTED.into());
                        Err(IngressError::Internal {
                            id: self.start.id,
                            source,
                        })
                    }
                }
            }
            Err(error) => Err(error),
        };
        self
    }

    /// Ends the run's span and queues its record (successes within the record budget,
    /// every failure within its app's); the answer to send.
    fn record(
        self,
        orchestrator: &Orchestrator,
        routed: &Routed,
        method: &Method,
        uri: &Uri,
    ) -> Result<Response, IngressError> {
        let Settling {
            start,
            mut settled,
            answer,
            ..
        } = self;
        let owner = &routed.routes.app;
        let http_status = match &answer {
            Ok(response) => response.status(),
            Err(error) => error.code().status(),
        };
        let span = start.span;
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(http_status.as_u16()),
        ));
        if settled.status != InvocationStatus::Ok {
            span.fail(settled.error.clone().unwrap_or_default());
        }
        if settled.status == InvocationStatus::Ok && !orchestrator.successes.admit() {
            return answer;
        }
        if settled.status != InvocationStatus::Ok && !orchestrator.failure_budgets.take(&owner.name)
        {
            orchestrator.recorder.count_bounded(&owner.name);
            return answer;
        }
        let Some(script) = routed.routes.script_of(routed.route) else {
            return answer;
        };
        // Only a recorded run needs its trace id as text.
        let trace_id = span.trace_id();
        drop(span);
        cap_logs(&mut settled.logs, orchestrator.config.records.max_log_bytes);
        let clock = start.clock;
        let elapsed_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        orchestrator.recorder.push(InvocationRecord {
            id: start.id,
            app: owner.name.clone(),
            script: script.clone(),
            version: settled.version,
            trigger: "http".into(),
            status: settled.status,
            started_at: settled
                .started_at
                .unwrap_or_else(|| Utc::now() - clock.elapsed()),
            duration_ms: settled.duration_ms.unwrap_or(elapsed_ms),
            http_status: Some(http_status.as_u16()),
            summary: format!("{method} {}", split_app(uri.path()).1),
            logs: settled.logs,
            error: settled.error,
            request_id: start.request_id,
            attempt: None,
            trace_id: Some(trace_id),
        });
        answer
    }
}

/// The run's span: a child of the caller's `traceparent` header, or a new trace. Its name
/// and attributes are made only when spans are recorded.
fn start_span(
    orchestrator: &Orchestrator,
    invocation: &Invocation,
    method: &Method,
    parent: Option<&str>,
) -> RunSpan {
    orchestrator
        .config
        .tracing
        .start_described(SpanKind::Server, parent, || {
            (
                format!("{method} {}/{}", invocation.app, invocation.script).into(),
                vec![
                    KeyValue::new("http.request.method", method.to_string()),
                    KeyValue::new("picloud.app", invocation.app.to_string()),
                    KeyValue::new("picloud.script", invocation.script.to_string()),
                    KeyValue::new("picloud.invocation_id", invocation.id.to_string()),
                ],
            )
        })
}

/// Commit a successful run's effects (in a group commit with the runs that finish with
/// it): with its answer for a keyed request whose answer can be replayed, alone otherwise
/// (touching no database when there are none). Returns, once they are committed, the
/// answer to send and whether it was stored for its key.
async fn commit(
    orchestrator: &Orchestrator,
    owner: &App,
    effects: Effects,
    response: Response,
    keyed: Option<&Keyed>,
) -> Result<(Response, bool), Box<dyn std::error::Error + Send + Sync>> {
    match keyed {
        // A 5xx is not replayed: its key is released, so a retry runs.
        Some(keyed) if !response.status().is_server_error() => {
            let (response, answer) = to_stored(response).await?;
            let answer = Answer {
                hold: keyed.hold.clone(),
                answer,
                expires_at: Utc::now() + keyed.ttl,
            };
            orchestrator
                .writes
                .commit(owner.clone(), effects, Some(answer))
                .await?;
            Ok((response, true))
        }
        _ if effects.is_empty() => Ok((response, false)),
        _ => {
            orchestrator
                .writes
                .commit(owner.clone(), effects, None)
                .await?;
            Ok((response, false))
        }
    }
}

/// Let go of a key whose answer was not stored, so a retry runs. Best effort: a key left
/// taken expires after the request timeout and `KEY_GRACE`.
async fn release(orchestrator: &Orchestrator, keyed: Option<&Keyed>) {
    let Some(keyed) = keyed else { return };
    if let Err(error) = orchestrator.store.idempotency.release(&keyed.hold).await {
        tracing::warn!(error = ?error, invocation = %keyed.hold.holder, "could not release an idempotency key; it expires on its own");
    }
}

/// What the record keeps of an outcome; `None` fields are filled from the request's clock.
#[derive(Debug)]
struct Settled {
    version: Option<i64>,
    started_at: Option<DateTime<Utc>>,
    duration_ms: Option<u64>,
    logs: Vec<LogLine>,
    status: InvocationStatus,
    /// For the app's owner only: never sent to the caller.
    error: Option<String>,
}

/// The answer to the caller and the record's view of one outcome.
fn settle(
    id: InvocationId,
    outcome: Outcome,
    config: &IngressConfig,
) -> (Settled, Result<Response, IngressError>) {
    let not_run = |status, error: String| Settled {
        version: None,
        started_at: None,
        duration_ms: None,
        logs: Vec::new(),
        status,
        error: Some(error),
    };
    match outcome {
        Outcome::Ran(execution) => {
            let mut settled = Settled {
                version: Some(execution.version),
                started_at: Some(execution.started_at),
                duration_ms: Some(
                    u64::try_from(execution.duration.as_millis()).unwrap_or(u64::MAX),
                ),
                logs: execution.logs,
                status: InvocationStatus::Ok,
                error: None,
            };
            let answer = match execution.result {
                Ok(output) => script_response(id, output).inspect_err(|_| {
                    settled.status = InvocationStatus::Error;
                    settled.error = Some("the script's response is not valid HTTP".into());
                }),
                Err(failure) if failure.kind == FailureKind::Timeout => {
                    settled.status = InvocationStatus::Timeout;
                    settled.error = Some(failure.message);
                    Err(IngressError::Timeout(id))
                }
                Err(failure) => {
                    settled.status = InvocationStatus::Error;
                    settled.error = Some(failure.message);
                    Err(IngressError::ScriptFailed(id))
                }
            };
            (settled, answer)
        }
        Outcome::TimedOut => {
            let text = format!(
                "no answer within the request timeout of {} ms",
                config.request_timeout.as_millis()
            );
            (
                not_run(InvocationStatus::Timeout, text),
                Err(IngressError::Timeout(id)),
            )
        }
        Outcome::Refused(e) => {
            let settled = not_run(InvocationStatus::Error, e.to_string());
            let answer = match e {
                // A concurrency refusal is answered (429) before settling.
                ExecError::Overloaded | ExecError::ConcurrencyLimit { .. } => {
                    IngressError::Unavailable(id)
                }
                e @ ExecError::ScriptNotFound(_) => IngressError::ScriptNotFound { id, source: e },
                // The executor process died with the run: nothing was committed, and the
                // node is restarting it, so the caller may try again.
                ExecError::ExecutorLost => IngressError::ExecutorLost(id),
                e @ (ExecError::WorkerLost | ExecError::Store(_)) => IngressError::Internal {
                    id,
                    source: Box::new(e),
                },
            };
            (settled, Err(answer))
        }
    }
}

/// The script's output as an HTTP response, with the invocation id header. Headers that
/// are not valid HTTP, and framing headers the server sets itself, are left out.
fn script_response(id: InvocationId, output: ScriptOutput) -> Result<Response, IngressError> {
    let status = StatusCode::from_u16(output.status).map_err(|e| IngressError::Internal {
        id,
        source: Box::new(e),
    })?;
    let mut response = Response::new(Body::from(output.body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    // Sized once for the script's headers and the id: no growing on the first insert.
    headers.reserve(output.headers.len() + 1);
    for (name, value) in output.headers {
        let (Ok(name), Ok(value)) = (header_name(&name), header_value(&value)) else {
            tracing::debug!(invocation = %id, "a response header of the script is not valid HTTP; skipped");
            continue;
        };
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == CONNECTION {
            continue;
        }
        headers.append(name, value);
    }
    if let Some(value) = invocation_id_value(id) {
        headers.insert(INVOCATION_ID, value);
    }
    Ok(response)
}

/// The content types the executor gives a body by default, made once.
const DEFAULT_CONTENT_TYPES: [HeaderValue; 3] = [
    HeaderValue::from_static("text/plain; charset=utf-8"),
    HeaderValue::from_static("application/json"),
    HeaderValue::from_static("application/octet-stream"),
];

/// A script's header name; `content-type`, on nearly every answer, without parsing it.
fn header_name(name: &str) -> Result<HeaderName, ::http::header::InvalidHeaderName> {
    if name == CONTENT_TYPE.as_str() {
        return Ok(CONTENT_TYPE);
    }
    HeaderName::from_bytes(name.as_bytes())
}

/// A script's header value; a default content type without checking or copying it.
fn header_value(value: &str) -> Result<HeaderValue, ::http::header::InvalidHeaderValue> {
    match DEFAULT_CONTENT_TYPES
        .iter()
        .find(|d| d.as_bytes() == value.as_bytes())
    {
        Some(default) => Ok(default.clone()),
        None => HeaderValue::from_str(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_run_is_an_internal_error_naming_the_invocation() {
        let id = InvocationId::new();
        let run = async move {
            if id != InvocationId::default() {
                panic!("the run panics on purpose");
            }
            Ok(Response::new(Body::empty()))
        };
        let answer = FinishOnDrop::new(id, run).await;
        assert!(
            matches!(answer, Err(IngressError::Internal { id: got, .. }) if got == id),
            "{answer:?}"
        );
    }

    #[test]
    fn the_app_is_the_first_segment_and_the_rest_is_the_path_inside_it() {
        assert_eq!(split_app("/shop/users/42"), ("shop", "/users/42"));
        assert_eq!(split_app("/shop"), ("shop", "/"));
        assert_eq!(split_app("/shop/"), ("shop", "/"));
    }

    #[test]
    fn the_last_value_of_a_repeated_query_name_wins_and_values_are_decoded() {
        let q = parse_query(Some("a=1&b=x%20y&a=2&c=p+q"));
        assert_eq!(q.get("a").map(String::as_str), Some("2"));
        assert_eq!(q.get("b").map(String::as_str), Some("x y"));
        assert_eq!(q.get("c").map(String::as_str), Some("p q"));
        assert!(parse_query(None).is_empty());
        assert!(parse_query(Some("")).is_empty());
    }

    #[test]
    fn the_callers_ids_are_read_in_one_pass_as_lookups_by_name_read_them() {
        let mut headers = HeaderMap::new();
        assert!(Caller::of(&headers).request_id.is_none());
        assert!(Caller::of(&headers).traceparent.is_none());
        headers.append("host", HeaderValue::from_static("example"));
        headers.append("x-request-id", HeaderValue::from_static("first"));
        headers.append("x-request-id", HeaderValue::from_static("second"));
        headers.append("traceparent", HeaderValue::from_static("00-a"));
        let caller = Caller::of(&headers);
        // The first request id, as `HeaderMap::get` gives it.
        assert_eq!(caller.request_id.as_deref(), Some("first"));
        assert_eq!(caller.traceparent.unwrap(), "00-a");
        headers.append("traceparent", HeaderValue::from_static("00-b"));
        let caller = Caller::of(&headers);
        // Joined, as `RequestHeaders::get` reads a repeated header.
        let joined = shared::RequestHeaders::from(headers.clone());
        assert_eq!(
            caller.traceparent.as_deref(),
            joined.get(TRACEPARENT).as_deref()
        );
        headers.insert("x-request-id", HeaderValue::from_static(""));
        assert!(
            Caller::of(&headers).request_id.is_none(),
            "an empty id is none"
        );
        let long = "x".repeat(MAX_REQUEST_ID_LEN + 5);
        headers.insert("x-request-id", HeaderValue::from_str(&long).unwrap());
        assert_eq!(
            Caller::of(&headers).request_id.map(|r| r.len()),
            Some(MAX_REQUEST_ID_LEN)
        );
    }

    #[test]
    fn a_standard_methods_name_is_a_constant_and_any_other_is_kept() {
        for method in [Method::GET, Method::POST, Method::DELETE, Method::CONNECT] {
            let name = method_name(&method);
            assert!(matches!(name, Cow::Borrowed(_)), "{method}");
            assert_eq!(name, method.as_str());
        }
        let custom = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(method_name(&custom), "PURGE");
    }

    #[test]
    fn a_script_response_keeps_its_headers_but_not_framing_ones() {
        let id = InvocationId::new();
        let response = script_response(
            id,
            ScriptOutput {
                status: 201,
                headers: vec![
                    ("set-cookie".into(), "a=1".into()),
                    ("set-cookie".into(), "b=2".into()),
                    ("content-length".into(), "999".into()),
                    ("bad header".into(), "x".into()),
                    ("content-type".into(), "application/json".into()),
                ],
                body: Bytes::from_static(b"hi"),
            },
        )
        .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(response.headers().get_all("set-cookie").iter().count(), 2);
        assert!(response.headers().get(CONTENT_LENGTH).is_none());
        assert_eq!(
            response.headers()[INVOCATION_ID_HEADER],
            id.to_string().as_str()
        );
    }

    #[test]
    fn an_invalid_script_status_is_an_internal_error_recorded_as_a_failure() {
        let id = InvocationId::new();
        let execution = shared::Execution {
            version: 3,
            started_at: Utc::now(),
            duration: std::time::Duration::from_millis(7),
            logs: Vec::new(),
            result: Ok(ScriptOutput {
                status: 1000,
                headers: Vec::new(),
                body: Bytes::new(),
            }),
            effects: Effects::default(),
        };
        let (settled, answer) = settle(id, Outcome::Ran(execution), &IngressConfig::default());
        assert!(matches!(answer, Err(IngressError::Internal { .. })));
        assert_eq!(settled.status, InvocationStatus::Error);
        assert_eq!(settled.version, Some(3));
        assert_eq!(settled.duration_ms, Some(7));
    }

    #[test]
    fn a_refused_run_is_recorded_without_a_version() {
        let id = InvocationId::new();
        let (settled, answer) = settle(
            id,
            Outcome::Refused(ExecError::Overloaded),
            &IngressConfig::default(),
        );
        assert!(matches!(answer, Err(IngressError::Unavailable(got)) if got == id));
        assert_eq!(settled.version, None);
        assert_eq!(settled.status, InvocationStatus::Error);
        assert!(settled.error.unwrap().contains("capacity"));
    }
}
