//! One run of a script: what goes in (`Invocation`), what comes out (`Execution`), and
//! what is kept (`InvocationRecord`).
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{Effects, Event};
use crate::ids::{AppName, InvocationId, ScriptName};
use crate::limits::InvocationLimits;

/// A request for the executor to run an app's script once.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub id: InvocationId,
    pub app: AppName,
    pub script: ScriptName,
    pub input: InvocationInput,
    /// The request id of the HTTP request that caused it, for log correlation.
    pub request_id: Option<String>,
    /// The app's and script's limits (default: the executor's own, no concurrency cap).
    pub limits: InvocationLimits,
}

#[derive(Debug, Clone)]
pub enum InvocationInput {
    /// A sync HTTP request to an `http` trigger; the script sees it as `request`.
    Http(HttpRequest),
    /// An outbox event; the script sees it as `event` (id, kind, topic or queue, payload,
    /// attempt, scheduled_at).
    Event(Event),
}

impl InvocationInput {
    /// The trigger kind that produced this input, as recorded in the invocation history.
    pub fn trigger_kind(&self) -> &'static str {
        match self {
            InvocationInput::Http(_) => "http",
            InvocationInput::Event(e) => e.kind.as_str(),
        }
    }
}

/// The parts of an HTTP request a script sees as `request`.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// A standard method's name is a constant, not a copy.
    pub method: Cow<'static, str>,
    /// The path inside the app, starting with `/` (`/users/42` for `GET /shop/users/42`).
    pub path: String,
    /// Route parameters: `/users/:id` matched against `/users/42` gives `id = "42"`.
    pub params: BTreeMap<String, String>,
    /// Query parameters; when a name repeats, the last value wins.
    pub query: BTreeMap<String, String>,
    /// Header names in lowercase; repeated headers are joined with ", ".
    pub headers: RequestHeaders,
    pub body: Bytes,
}

/// A request's headers as a script sees them: lowercase names (as `http` keeps them), the
/// values of a repeated header joined with ", ", bytes that are not UTF-8 as U+FFFD.
///
/// Kept as the request's own `HeaderMap` and only turned into text when read: most
/// scripts never look at them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestHeaders(http::HeaderMap);

impl RequestHeaders {
    /// A header's value (the values of a repeated one joined), if the request has it. A
    /// `HeaderName` is looked up as it is; a `&str` name is parsed first.
    pub fn get<K: http::header::AsHeaderName>(&self, name: K) -> Option<Cow<'_, str>> {
        Self::value_in(&self.0, name)
    }

    /// A header's value in `headers` as `get` reads it (for a request's headers before
    /// they are a `RequestHeaders`).
    pub fn value_in<K: http::header::AsHeaderName>(
        headers: &http::HeaderMap,
        name: K,
    ) -> Option<Cow<'_, str>> {
        let mut values = headers.get_all(name).iter();
        let first = values.next()?;
        Some(joined_text(first, values))
    }

    /// Every header once, by name, in the map's order (not sorted).
    ///
    /// One pass over the map: its iterator yields every value of a name one after the
    /// other, so no name is looked up again.
    pub fn joined(&self) -> impl Iterator<Item = (&str, Cow<'_, str>)> {
        let mut entries = self.0.iter().peekable();
        std::iter::from_fn(move || {
            let (name, first) = entries.next()?;
            let rest =
                std::iter::from_fn(|| entries.next_if(|(next, _)| *next == name).map(|(_, v)| v));
            Some((name.as_str(), joined_text(first, rest)))
        })
    }

    /// Every header as text, by name.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.joined()
            .map(|(name, value)| (name.to_owned(), value.into_owned()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.0.keys_len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One header's values as text, joined with ", " (borrowed when there is one).
fn joined_text<'a>(
    first: &'a http::HeaderValue,
    rest: impl Iterator<Item = &'a http::HeaderValue>,
) -> Cow<'a, str> {
    let mut text = header_text(first);
    for value in rest {
        let joined = text.to_mut();
        joined.push_str(", ");
        joined.push_str(&header_text(value));
    }
    text
}

/// A header value as text; bytes that are not UTF-8 become U+FFFD.
fn header_text(value: &http::HeaderValue) -> Cow<'_, str> {
    // Nearly every value is visible ASCII, which `to_str` checks more cheaply than UTF-8.
    match value.to_str() {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(value.as_bytes()),
    }
}

impl From<http::HeaderMap> for RequestHeaders {
    fn from(headers: http::HeaderMap) -> Self {
        RequestHeaders(headers)
    }
}

/// Headers given as text (a request from another process, a test): a name or value that
/// is not valid HTTP is left out.
impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for RequestHeaders {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let mut headers = http::HeaderMap::new();
        for (name, value) in pairs {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_ref().as_bytes()),
                http::HeaderValue::from_str(value.as_ref()),
            ) {
                headers.append(name, value);
            }
        }
        RequestHeaders(headers)
    }
}

impl<const N: usize> From<[(&str, &str); N]> for RequestHeaders {
    fn from(pairs: [(&str, &str); N]) -> Self {
        pairs.into_iter().collect()
    }
}

/// What a script produced, already shaped as an HTTP response.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptOutput {
    pub status: u16,
    /// Lowercase names; a default content type is a constant, not a copy.
    pub headers: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    pub body: Bytes,
}

/// Why a run ended without output. `message` is meant for the app's owner (it goes into
/// the invocation record): script-level text with line and column, never host internals.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptFailure {
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The script threw, or hit a runtime error (type error, unknown function, ...).
    Error,
    /// A resource limit stopped it: operations, call depth, string/array/map size, output size.
    LimitExceeded,
    /// The wall-clock limit stopped it.
    Timeout,
}

/// The result of one run, with what the script logged.
#[derive(Debug, Clone)]
pub struct Execution {
    /// The script version that ran.
    pub version: i64,
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
    pub logs: Vec<LogLine>,
    pub result: Result<ScriptOutput, ScriptFailure>,
    /// The run's buffered writes and emitted events; empty when the run failed.
    pub effects: Effects,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Print,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Print => "print",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// One line a script wrote with `print` or `log::*`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, Deserialize)]
pub struct LogLine {
    pub at: DateTime<Utc>,
    pub level: LogLevel,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvocationStatus {
    Ok,
    Error,
    Timeout,
}

impl InvocationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvocationStatus::Ok => "ok",
            InvocationStatus::Error => "error",
            InvocationStatus::Timeout => "timeout",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "ok" => Some(InvocationStatus::Ok),
            "error" => Some(InvocationStatus::Error),
            "timeout" => Some(InvocationStatus::Timeout),
            _ => None,
        }
    }
}

/// The history entry of one run, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, Deserialize)]
pub struct InvocationRecord {
    pub id: InvocationId,
    pub app: AppName,
    pub script: ScriptName,
    /// The version that ran; `None` when the run never started (e.g. the executor was overloaded).
    pub version: Option<i64>,
    /// `http` for now; event kinds later.
    pub trigger: String,
    pub status: InvocationStatus,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// The HTTP status answered to the caller, for `http` invocations.
    pub http_status: Option<u16>,
    /// `GET /users/42` for HTTP; a short label of what caused the run.
    pub summary: String,
    pub logs: Vec<LogLine>,
    pub error: Option<String>,
    pub request_id: Option<String>,
    /// For event invocations: which attempt this was (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The W3C trace id (32 hex digits) of the run's span: the caller's `traceparent`
    /// trace, or the trace of the event's emitter (docs/tracing.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_headers_are_joined_with_a_comma() {
        let mut headers = http::HeaderMap::new();
        headers.append("X-Tag", http::HeaderValue::from_static("a"));
        headers.append("x-tag", http::HeaderValue::from_static("b"));
        headers.insert("Accept", http::HeaderValue::from_static("text/plain"));
        headers.append("x-more", http::HeaderValue::from_static("1"));
        headers.append("x-more", http::HeaderValue::from_bytes(b"caf\xe9").unwrap());
        headers.append("x-more", http::HeaderValue::from_static("3"));
        headers.insert("x-last", http::HeaderValue::from_bytes(b"\xff").unwrap());
        let headers = RequestHeaders::from(headers);
        let collected = headers.to_map();
        assert_eq!(collected.len(), 4);
        assert_eq!(collected.get("x-tag").map(String::as_str), Some("a, b"));
        assert_eq!(
            collected.get("x-more").map(String::as_str),
            Some("1, caf\u{fffd}, 3")
        );
        assert_eq!(
            collected.get("x-last").map(String::as_str),
            Some("\u{fffd}")
        );
        assert_eq!(
            collected.get("accept").map(String::as_str),
            Some("text/plain")
        );
    }

    #[test]
    fn a_header_is_read_by_its_lowercase_name_with_repeated_values_joined() {
        let mut headers = http::HeaderMap::new();
        headers.append("X-Tag", http::HeaderValue::from_static("a"));
        headers.append("x-tag", http::HeaderValue::from_static("b"));
        headers.insert("traceparent", http::HeaderValue::from_static("00-x"));
        let headers = RequestHeaders::from(headers);
        assert_eq!(headers.get("x-tag").as_deref(), Some("a, b"));
        assert_eq!(headers.get("X-Tag").as_deref(), Some("a, b"));
        assert_eq!(headers.get("traceparent").as_deref(), Some("00-x"));
        assert_eq!(headers.get("missing"), None);
        assert_eq!(headers.len(), 2);
    }

    #[test]
    fn headers_given_as_text_keep_the_valid_ones_and_read_back_the_same() {
        let headers: RequestHeaders = [
            ("user-agent", "test"),
            ("x-joined", "a, b"),
            ("bad name", "x"),
            ("x-bad-value", "line\nbreak"),
        ]
        .into();
        let map = headers.to_map();
        assert_eq!(map.len(), 2, "{map:?}");
        assert_eq!(map["user-agent"], "test");
        assert_eq!(map["x-joined"], "a, b");
        let again: RequestHeaders = map.iter().collect();
        assert_eq!(again, headers);
    }
}
