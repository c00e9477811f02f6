//! One run of a script: what goes in (`Invocation`), what comes out (`Execution`), and
//! what is kept (`InvocationRecord`).
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
    pub method: String,
    /// The path inside the app, starting with `/` (`/users/42` for `GET /shop/users/42`).
    pub path: String,
    /// Route parameters: `/users/:id` matched against `/users/42` gives `id = "42"`.
    pub params: BTreeMap<String, String>,
    /// Query parameters; when a name repeats, the last value wins.
    pub query: BTreeMap<String, String>,
    /// Header names in lowercase; repeated headers are joined with ", ".
    pub headers: BTreeMap<String, String>,
    pub body: Bytes,
}

/// What a script produced, already shaped as an HTTP response.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptOutput {
    pub status: u16,
    pub headers: Vec<(String, String)>,
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
