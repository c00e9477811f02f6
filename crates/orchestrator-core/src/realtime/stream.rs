//! `GET /{app}/_realtime?topics=a,b`: check the subscription, then stream.
//!
//! Checks, in order, each answered as JSON before any stream starts: the method (405), the
//! topics (400: none, too many, or not a topic name), the app (404), the token (401:
//! missing, malformed, forged, expired, another app's, or not naming every topic), the
//! topics' exposure (403), the connection limits (503 for the node, 429 for the app, with
//! `Retry-After`).
//!
//! The stream: `retry:` first; then, when resuming (`Last-Event-ID` or `last_event_id`),
//! an `event: reset` if that id is no longer in the buffer, and the events after it from
//! the buffer; then live events. It joins the live feed BEFORE reading the buffer and skips
//! live events at or below the newest id it has sent, so nothing falls between the two and
//! nothing comes twice. It ends with `event: expired` at the token's expiry, when the
//! server shuts down, or when it falls more than the feed's buffer behind (a client that
//! stopped reading; it resumes by id).
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use shared::realtime::{Claims, TokenError, verify};
use shared::store::RealtimeAccess;
use shared::{AppName, ChannelName};
use tokio::sync::broadcast;
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};

use super::RealtimeError;
use super::hub::{Admission, Frame, Hub, encode};

/// The path segment after the app.
const PATH: &str = "/_realtime";
const HEARTBEAT: &[u8] = b": hb\n\n";
const EXPIRED: &[u8] = b"event: expired\ndata: {}\n\n";
/// The longest `topics` query value read.
const MAX_TOPICS_PARAM: usize = 8 * 1024;

/// The app of a realtime path (`/shop/_realtime`), if it is one.
pub(crate) fn is_realtime_path(path: &str) -> Option<&str> {
    // Every public request asks: the suffix first (one comparison for nearly all paths),
    // then the app's segment, in place.
    let app = path.strip_prefix('/')?.strip_suffix(PATH)?;
    (!app.contains('/')).then_some(app)
}

/// What the query string says.
#[derive(Debug, Default, PartialEq)]
struct Query {
    topics: Option<String>,
    token: Option<String>,
    last_event_id: Option<String>,
}

fn parse_query(raw: Option<&str>) -> Query {
    let mut query = Query::default();
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "topics" => query.topics = Some(value.into_owned()),
            "token" => query.token = Some(value.into_owned()),
            "last_event_id" => query.last_event_id = Some(value.into_owned()),
            _ => {}
        }
    }
    query
}

/// The topics asked for, distinct, in order.
fn parse_topics(raw: Option<&str>, max: usize) -> Result<Vec<ChannelName>, RealtimeError> {
    let raw = raw.unwrap_or_default();
    if raw.len() > MAX_TOPICS_PARAM {
        return Err(RealtimeError::InvalidInput(
            "the topics parameter is too long".into(),
        ));
    }
    let mut topics: Vec<ChannelName> = Vec::new();
    for name in raw.split(',').filter(|t| !t.is_empty()) {
        let topic = ChannelName::parse(name).map_err(|e| RealtimeError::InvalidInput(e.0))?;
        if !topics.contains(&topic) {
            topics.push(topic);
        }
        if topics.len() > max {
            return Err(RealtimeError::InvalidInput(format!(
                "a subscription may name at most {max} topics"
            )));
        }
    }
    if topics.is_empty() {
        return Err(RealtimeError::InvalidInput(
            "name the topics to subscribe to: ?topics=a,b".into(),
        ));
    }
    Ok(topics)
}

/// A resume point; anything but a plain number is treated as absent.
fn parse_last_event_id(headers: &HeaderMap, query: Option<&str>) -> Option<u64> {
    let header = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    header.or_else(|| query.and_then(|v| v.trim().parse::<u64>().ok()))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn check_token(
    access: &RealtimeAccess,
    app: &AppName,
    token: Option<&str>,
    topics: &[ChannelName],
) -> Result<Claims, RealtimeError> {
    let token = token.ok_or_else(|| {
        RealtimeError::Unauthorized(
            "a realtime token is required: Authorization: Bearer <token> or ?token=".into(),
        )
    })?;
    let key = access
        .key
        .as_deref()
        .ok_or_else(|| RealtimeError::Unauthorized(TokenError::BadSignature.to_string()))?;
    let now = chrono::Utc::now().timestamp();
    let claims = verify(key, token, now).map_err(|e| RealtimeError::Unauthorized(e.to_string()))?;
    if &claims.app != app {
        return Err(RealtimeError::Unauthorized(
            "the token is for another app".into(),
        ));
    }
    if let Some(topic) = topics.iter().find(|t| !claims.topics.contains(t)) {
        return Err(RealtimeError::Unauthorized(format!(
            "the token does not grant the topic '{topic}'"
        )));
    }
    Ok(claims)
}

/// The `Access-Control-Allow-Origin` to send, if the request's origin is allowed.
fn allowed_origin(headers: &HeaderMap, origins: &[String]) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(text))
        .then(|| origin.clone())
}

fn with_cors(mut response: Response, origin: Option<HeaderValue>) -> Response {
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("origin"));
    }
    response
}

/// Answer one realtime request (`path` is `/{app}/_realtime`).
pub(crate) async fn subscribe(hub: Arc<Hub>, app: String, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    // The origin is only known once the app's settings are read.
    let mut origin = None;
    match open(&hub, &app, &parts, &mut origin).await {
        Ok(response) => with_cors(response, origin),
        Err(error) => with_cors(error.into_response(), origin),
    }
}

async fn open(
    hub: &Arc<Hub>,
    app: &str,
    parts: &http::request::Parts,
    origin: &mut Option<HeaderValue>,
) -> Result<Response, RealtimeError> {
    let preflight = parts.method == Method::OPTIONS;
    if parts.method != Method::GET && !preflight {
        return Err(RealtimeError::MethodNotAllowed);
    }
    let app = AppName::parse(app).map_err(|_| RealtimeError::UnknownApp(app.into()))?;
    let access = hub
        .store()
        .realtime
        .access(&app)
        .await?
        .ok_or_else(|| RealtimeError::UnknownApp(app.to_string()))?;
    *origin = allowed_origin(&parts.headers, &access.cors_origins);
    if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        if origin.is_some() {
            let headers = response.headers_mut();
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, last-event-id, cache-control"),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
        return Ok(response);
    }
    let query = parse_query(parts.uri.query());
    let topics = parse_topics(query.topics.as_deref(), hub.config.max_topics)?;
    let token = bearer(&parts.headers).or(query.token.as_deref());
    let claims = check_token(&access, &app, token, &topics)?;
    if let Some(topic) = topics.iter().find(|t| !access.exposed.contains(t)) {
        return Err(RealtimeError::NotExposed(topic.to_string()));
    }
    let resume = parse_last_event_id(&parts.headers, query.last_event_id.as_deref());

    // Live first, then the buffer: nothing committed in between is missed.
    let (live, admission) = hub.join(&app, &topics).await?;
    let mut stream = Subscription::new(hub, app, topics, live, admission, &claims);
    if let Some(after) = resume {
        stream.resume_from(after).await?;
    }
    let body = Body::from_stream(futures::stream::unfold(stream, |mut s| async move {
        let chunk = s.next().await?;
        Some((Ok::<_, Infallible>(chunk), s))
    }));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// One open stream.
struct Subscription {
    hub: Arc<Hub>,
    app: AppName,
    topics: Vec<ChannelName>,
    live: broadcast::Receiver<Arc<Frame>>,
    /// The newest id sent (or skipped as another topic's): live events at or below it
    /// were already read from the buffer.
    last: u64,
    /// Still reading the buffer, after `last`.
    replaying: bool,
    /// Sent before anything else: `retry:`, then maybe `reset`.
    preamble: VecDeque<Bytes>,
    heartbeat: Interval,
    /// The token's expiry: one timer for the stream's life, not one per wake.
    expires: Pin<Box<Sleep>>,
    done: bool,
    _admission: Admission,
}

impl Subscription {
    fn new(
        hub: &Arc<Hub>,
        app: AppName,
        topics: Vec<ChannelName>,
        live: broadcast::Receiver<Arc<Frame>>,
        admission: Admission,
        claims: &Claims,
    ) -> Self {
        let config = &hub.config;
        let period = config.heartbeat.max(Duration::from_millis(10));
        let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let left = claims
            .exp
            .saturating_mul(1_000)
            .saturating_sub(chrono::Utc::now().timestamp_millis());
        let expires = Instant::now() + Duration::from_millis(u64::try_from(left).unwrap_or(0));
        let expires = Box::pin(tokio::time::sleep_until(expires));
        let retry = format!("retry: {}\n\n", config.retry.as_millis());
        Subscription {
            hub: Arc::clone(hub),
            app,
            topics,
            live,
            last: 0,
            replaying: false,
            preamble: VecDeque::from([Bytes::from(retry)]),
            heartbeat,
            expires,
            done: false,
            _admission: admission,
        }
    }

    /// Resume after `after`: a `reset` first when events after it are gone (or it is
    /// ahead of every id given out), then the buffer from the oldest kept.
    async fn resume_from(&mut self, after: u64) -> Result<(), RealtimeError> {
        let bounds = self.hub.store().realtime.bounds(&self.app).await?;
        let mut from = after;
        if after.saturating_add(1) < bounds.oldest || after > bounds.last {
            let reset = format!("event: reset\ndata: {{\"oldest\":{}}}\n\n", bounds.oldest);
            self.preamble.push_back(Bytes::from(reset));
            from = bounds.oldest.saturating_sub(1);
        }
        self.last = from;
        self.replaying = true;
        Ok(())
    }

    /// The next chunk to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if let Some(chunk) = self.preamble.pop_front() {
            return Some(chunk);
        }
        while self.replaying {
            if let Some(chunk) = self.replay_page().await? {
                return Some(chunk);
            }
        }
        loop {
            tokio::select! {
                biased;
                () = self.hub.closed.cancelled() => return None,
                () = self.expires.as_mut() => {
                    self.done = true;
                    return Some(Bytes::from_static(EXPIRED));
                }
                received = self.live.recv() => match received {
                    Ok(frame) => {
                        if frame.id <= self.last {
                            continue;
                        }
                        self.last = frame.id;
                        if self.topics.contains(&frame.topic) {
                            return Some(frame.bytes.clone());
                        }
                    }
                    // Fell more than the feed's buffer behind, or the feed is gone: end;
                    // the client resumes by id.
                    Err(_) => return None,
                },
                _ = self.heartbeat.tick() => return Some(Bytes::from_static(HEARTBEAT)),
            }
        }
    }

    /// One page of the buffer after `last`, as one chunk (`Some(None)`: nothing of ours in
    /// it); `None` when the buffer cannot be read (the stream ends; the client resumes).
    async fn replay_page(&mut self) -> Option<Option<Bytes>> {
        let page = self.hub.config.page.max(1);
        let events = match self
            .hub
            .store()
            .realtime
            .events_after(&self.app, self.last, page)
            .await
        {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(error = ?error, app = %self.app, "a realtime replay failed");
                return None;
            }
        };
        if events.len() < page as usize {
            self.replaying = false;
        }
        let mut chunk = String::new();
        for event in &events {
            self.last = event.id;
            if self.topics.contains(&event.topic) {
                chunk.push_str(&encode(event));
            }
        }
        Some((!chunk.is_empty()).then(|| Bytes::from(chunk)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_apps_realtime_path_is_one() {
        assert_eq!(is_realtime_path("/shop/_realtime"), Some("shop"));
        for other in [
            "/shop",
            "/shop/_realtime/x",
            "/shop/realtime",
            "/_realtime",
            "/shop_realtime",
            "/shop/x/_realtime",
            "shop/_realtime",
            "",
        ] {
            assert_eq!(is_realtime_path(other), None, "{other}");
        }
    }

    #[test]
    fn topics_must_be_names_and_few() {
        let names = |v: Vec<ChannelName>| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(names(parse_topics(Some("a,b,a,"), 2).unwrap()), ["a", "b"]);
        assert!(parse_topics(Some("a,b,c"), 2).is_err());
        assert!(parse_topics(Some(""), 2).is_err());
        assert!(parse_topics(None, 2).is_err());
        assert!(parse_topics(Some("a b"), 2).is_err());
        assert!(parse_topics(Some(&"x".repeat(129)), 2).is_err());
    }

    #[test]
    fn a_garbage_last_event_id_is_absent_and_the_header_wins() {
        let mut headers = HeaderMap::new();
        assert_eq!(parse_last_event_id(&headers, Some("7")), Some(7));
        assert_eq!(parse_last_event_id(&headers, Some("x")), None);
        headers.insert("last-event-id", HeaderValue::from_static("9"));
        assert_eq!(parse_last_event_id(&headers, Some("7")), Some(9));
        headers.insert("last-event-id", HeaderValue::from_static("-1"));
        assert_eq!(parse_last_event_id(&headers, Some("7")), Some(7));
        headers.insert("last-event-id", HeaderValue::from_static("nine"));
        assert_eq!(parse_last_event_id(&headers, None), None);
    }

    #[test]
    fn the_query_gives_topics_token_and_resume_point() {
        let q = parse_query(Some("topics=a%2Cb&token=t.x&last_event_id=3&other=1"));
        assert_eq!(q.topics.as_deref(), Some("a,b"));
        assert_eq!(q.token.as_deref(), Some("t.x"));
        assert_eq!(q.last_event_id.as_deref(), Some("3"));
    }
}
