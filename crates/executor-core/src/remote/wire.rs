//! The frames between an orchestrator and its executor process: a 4-byte big-endian
//! length, then one JSON message. Request ids are the orchestrator's, per connection.
//!
//! The shared types (`Invocation`, `Execution`, `Effects`) are mirrored here rather than
//! made serde types: the wire format is this module's business, and bytes travel as
//! base64 instead of JSON arrays of numbers.
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::{
    AppName, BlobWrite, ChannelName, Effects, EmailMessage, Emit, Event, ExecError, Execution,
    FailureKind, HttpRequest, Invocation, InvocationId, InvocationInput, InvocationLimits, KvWrite,
    LimitOverrides, LogLine, ScriptFailure, ScriptName, ScriptOutput, StoreError,
};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest frame either side accepts (a request body or a response at its caps fits
/// with room to spare); a longer length prefix means the stream is corrupt.
pub(crate) const MAX_FRAME: usize = 1 << 30;

/// Orchestrator -> executor.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum ToExecutor {
    /// Run one invocation; answered by `Done` with the same id.
    Run {
        id: u64,
        invocation: Box<WireInvocation>,
    },
    /// The caller gave up (deadline, client gone): drop the run's reply, delete its objects.
    Cancel { id: u64 },
}

/// Executor -> orchestrator.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum FromExecutor {
    Done {
        id: u64,
        /// Invocations waiting for a script thread when this one ended.
        queued: u64,
        result: Result<WireExecution, WireError>,
    },
}

/// A message as a frame: the length prefix, then its JSON.
pub(crate) fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut frame = vec![0u8; 4];
    // Serializing these types cannot fail: every map key is a string.
    serde_json::to_writer(&mut frame, message).expect("a wire message serializes");
    let len = u32::try_from(frame.len() - 4).unwrap_or(u32::MAX);
    frame[..4].copy_from_slice(&len.to_be_bytes());
    frame
}

/// The next frame's message; `Ok(None)` at a clean end of the stream.
pub(crate) async fn read<T, R>(reader: &mut R) -> std::io::Result<Option<T>>
where
    T: for<'de> Deserialize<'de>,
    R: AsyncRead + Unpin,
{
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut buf = vec![0u8; len];
    reader.read_exact(&mut buf).await?;
    serde_json::from_slice(&buf)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

mod b64 {
    use base64::Engine as _;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireInvocation {
    id: InvocationId,
    app: AppName,
    script: ScriptName,
    input: WireInput,
    request_id: Option<String>,
    run_limits: LimitOverrides,
    app_concurrency: Option<u32>,
    script_concurrency: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireInput {
    Http {
        method: Cow<'static, str>,
        path: String,
        params: BTreeMap<String, String>,
        query: BTreeMap<String, String>,
        headers: BTreeMap<String, String>,
        #[serde(with = "b64")]
        body: Bytes,
    },
    Event(Box<Event>),
}

impl From<Invocation> for WireInvocation {
    fn from(inv: Invocation) -> Self {
        WireInvocation {
            id: inv.id,
            app: inv.app,
            script: inv.script,
            input: match inv.input {
                InvocationInput::Http(r) => WireInput::Http {
                    method: r.method,
                    path: r.path,
                    params: r.params,
                    query: r.query,
                    headers: r.headers.to_map(),
                    body: r.body,
                },
                InvocationInput::Event(e) => WireInput::Event(Box::new(e)),
            },
            request_id: inv.request_id,
            run_limits: inv.limits.run,
            app_concurrency: inv.limits.app_concurrency,
            script_concurrency: inv.limits.script_concurrency,
        }
    }
}

impl From<WireInvocation> for Invocation {
    fn from(w: WireInvocation) -> Self {
        Invocation {
            id: w.id,
            app: w.app,
            script: w.script,
            input: match w.input {
                WireInput::Http {
                    method,
                    path,
                    params,
                    query,
                    headers,
                    body,
                } => InvocationInput::Http(HttpRequest {
                    method,
                    path,
                    params,
                    query,
                    headers: headers.into_iter().collect(),
                    body,
                }),
                WireInput::Event(e) => InvocationInput::Event(*e),
            },
            request_id: w.request_id,
            limits: InvocationLimits {
                run: w.run_limits,
                app_concurrency: w.app_concurrency,
                script_concurrency: w.script_concurrency,
            },
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireExecution {
    version: i64,
    started_at: DateTime<Utc>,
    duration: Duration,
    logs: Vec<LogLine>,
    result: Result<WireOutput, WireFailure>,
    effects: WireEffects,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireOutput {
    status: u16,
    headers: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    #[serde(with = "b64")]
    body: Bytes,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireFailure {
    kind: WireFailureKind,
    message: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireFailureKind {
    Error,
    LimitExceeded,
    Timeout,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct WireEffects {
    kv: Vec<WireKv>,
    blobs: Vec<WireBlob>,
    emitted: Vec<WireEmit>,
    /// The run's `traceparent`, carried into the events it emitted.
    trace: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum WireKv {
    Set {
        key: String,
        value: Value,
        ttl: Option<Duration>,
    },
    Delete {
        key: String,
    },
    Incr {
        key: String,
        by: i64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum WireBlob {
    Put {
        name: String,
        object: String,
        size: u64,
        content_type: Option<String>,
    },
    Delete {
        name: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum WireEmit {
    Publish {
        topic: ChannelName,
        payload: Value,
    },
    Send {
        queue: ChannelName,
        payload: Value,
        delay: Option<Duration>,
        idempotency_key: Option<String>,
    },
    InvokeAsync {
        script: ScriptName,
        payload: Value,
    },
    Email {
        message: EmailMessage,
    },
}

impl From<Execution> for WireExecution {
    fn from(e: Execution) -> Self {
        WireExecution {
            version: e.version,
            started_at: e.started_at,
            duration: e.duration,
            logs: e.logs,
            result: match e.result {
                Ok(o) => Ok(WireOutput {
                    status: o.status,
                    headers: o.headers,
                    body: o.body,
                }),
                Err(f) => Err(WireFailure {
                    kind: match f.kind {
                        FailureKind::Error => WireFailureKind::Error,
                        FailureKind::LimitExceeded => WireFailureKind::LimitExceeded,
                        FailureKind::Timeout => WireFailureKind::Timeout,
                    },
                    message: f.message,
                }),
            },
            effects: e.effects.into(),
        }
    }
}

impl From<WireExecution> for Execution {
    fn from(w: WireExecution) -> Self {
        Execution {
            version: w.version,
            started_at: w.started_at,
            duration: w.duration,
            logs: w.logs,
            result: match w.result {
                Ok(o) => Ok(ScriptOutput {
                    status: o.status,
                    headers: o.headers,
                    body: o.body,
                }),
                Err(f) => Err(ScriptFailure {
                    kind: match f.kind {
                        WireFailureKind::Error => FailureKind::Error,
                        WireFailureKind::LimitExceeded => FailureKind::LimitExceeded,
                        WireFailureKind::Timeout => FailureKind::Timeout,
                    },
                    message: f.message,
                }),
            },
            effects: w.effects.into(),
        }
    }
}

impl From<Effects> for WireEffects {
    fn from(e: Effects) -> Self {
        WireEffects {
            kv: e
                .kv
                .into_iter()
                .map(|w| match w {
                    KvWrite::Set { key, value, ttl } => WireKv::Set { key, value, ttl },
                    KvWrite::Delete { key } => WireKv::Delete { key },
                    KvWrite::Incr { key, by } => WireKv::Incr { key, by },
                })
                .collect(),
            blobs: e
                .blobs
                .into_iter()
                .map(|w| match w {
                    BlobWrite::Put {
                        name,
                        object,
                        size,
                        content_type,
                    } => WireBlob::Put {
                        name,
                        object,
                        size,
                        content_type,
                    },
                    BlobWrite::Delete { name } => WireBlob::Delete { name },
                })
                .collect(),
            emitted: e
                .emitted
                .into_iter()
                .map(|m| match m {
                    Emit::Publish { topic, payload } => WireEmit::Publish { topic, payload },
                    Emit::Send {
                        queue,
                        payload,
                        delay,
                        idempotency_key,
                    } => WireEmit::Send {
                        queue,
                        payload,
                        delay,
                        idempotency_key,
                    },
                    Emit::InvokeAsync { script, payload } => {
                        WireEmit::InvokeAsync { script, payload }
                    }
                    Emit::Email { message } => WireEmit::Email { message },
                })
                .collect(),
            trace: e.trace,
        }
    }
}

impl From<WireEffects> for Effects {
    fn from(w: WireEffects) -> Self {
        Effects {
            kv: w
                .kv
                .into_iter()
                .map(|k| match k {
                    WireKv::Set { key, value, ttl } => KvWrite::Set { key, value, ttl },
                    WireKv::Delete { key } => KvWrite::Delete { key },
                    WireKv::Incr { key, by } => KvWrite::Incr { key, by },
                })
                .collect(),
            blobs: w
                .blobs
                .into_iter()
                .map(|b| match b {
                    WireBlob::Put {
                        name,
                        object,
                        size,
                        content_type,
                    } => BlobWrite::Put {
                        name,
                        object,
                        size,
                        content_type,
                    },
                    WireBlob::Delete { name } => BlobWrite::Delete { name },
                })
                .collect(),
            emitted: w
                .emitted
                .into_iter()
                .map(|m| match m {
                    WireEmit::Publish { topic, payload } => Emit::Publish { topic, payload },
                    WireEmit::Send {
                        queue,
                        payload,
                        delay,
                        idempotency_key,
                    } => Emit::Send {
                        queue,
                        payload,
                        delay,
                        idempotency_key,
                    },
                    WireEmit::InvokeAsync { script, payload } => {
                        Emit::InvokeAsync { script, payload }
                    }
                    WireEmit::Email { message } => Emit::Email { message },
                })
                .collect(),
            trace: w.trace,
        }
    }
}

/// `ExecError` on the wire. A store error's detail stays in the executor's log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub(crate) enum WireError {
    Overloaded,
    ConcurrencyLimit { of: String, limit: u32 },
    ScriptNotFound { script: String },
    WorkerLost,
    Store,
}

/// The backend error behind a `Store` answer, as the orchestrator sees it.
#[derive(Debug, thiserror::Error)]
#[error("the executor could not reach the store")]
struct RemoteStoreError;

impl From<ExecError> for WireError {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::Overloaded => WireError::Overloaded,
            ExecError::ConcurrencyLimit { of, limit } => WireError::ConcurrencyLimit {
                of: of.to_owned(),
                limit,
            },
            ExecError::ScriptNotFound(script) => WireError::ScriptNotFound { script },
            // Never produced by the executor itself; the orchestrator's side says it.
            ExecError::WorkerLost | ExecError::ExecutorLost => WireError::WorkerLost,
            ExecError::Store(error) => {
                tracing::error!(?error, "a run could not reach the store");
                WireError::Store
            }
        }
    }
}

impl From<WireError> for ExecError {
    fn from(w: WireError) -> Self {
        match w {
            WireError::Overloaded => ExecError::Overloaded,
            WireError::ConcurrencyLimit { of, limit } => ExecError::ConcurrencyLimit {
                of: if of == "script" { "script" } else { "app" },
                limit,
            },
            WireError::ScriptNotFound { script } => ExecError::ScriptNotFound(script),
            WireError::WorkerLost => ExecError::WorkerLost,
            WireError::Store => ExecError::Store(StoreError::backend(RemoteStoreError)),
        }
    }
}

/// The object keys a run's blob puts wrote (to delete when nobody will commit them).
pub(crate) fn objects_of(effects: &Effects) -> Vec<String> {
    effects
        .blobs
        .iter()
        .filter_map(|w| match w {
            BlobWrite::Put { object, .. } => Some(object.clone()),
            BlobWrite::Delete { .. } => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::LogLevel;

    fn roundtrip<T: Serialize + for<'de> Deserialize<'de>>(value: &T) -> T {
        let frame = encode(value);
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        serde_json::from_slice(&frame[4..]).unwrap()
    }

    #[test]
    fn an_invocation_and_its_execution_cross_the_wire_unchanged() {
        let invocation = Invocation {
            id: InvocationId::new(),
            app: AppName::parse("shop").unwrap(),
            script: ScriptName::parse("hello").unwrap(),
            input: InvocationInput::Http(HttpRequest {
                method: "POST".into(),
                path: "/users/42".into(),
                params: [("id".to_owned(), "42".to_owned())].into(),
                query: [("q".to_owned(), "ü".to_owned())].into(),
                headers: [("x-a", "1")].into(),
                body: Bytes::from_static(b"\x00\xffbinary"),
            }),
            request_id: Some("req-1".into()),
            limits: InvocationLimits {
                run: LimitOverrides {
                    timeout_ms: Some(5),
                    ..LimitOverrides::default()
                },
                app_concurrency: Some(3),
                script_concurrency: None,
            },
        };
        let back: Invocation = roundtrip(&WireInvocation::from(invocation.clone())).into();
        assert_eq!(format!("{back:?}"), format!("{invocation:?}"));

        let execution = Execution {
            version: 7,
            started_at: Utc::now(),
            duration: Duration::from_micros(1234),
            logs: vec![LogLine {
                at: Utc::now(),
                level: LogLevel::Warn,
                message: "careful".into(),
            }],
            result: Ok(ScriptOutput {
                status: 201,
                headers: vec![("content-type".into(), "text/plain".into())],
                body: Bytes::from_static(b"made"),
            }),
            effects: Effects {
                kv: vec![
                    KvWrite::Incr {
                        key: "n".into(),
                        by: 2,
                    },
                    KvWrite::Set {
                        key: "k".into(),
                        value: serde_json::json!({"a": [1, 2]}),
                        ttl: Some(Duration::from_secs(9)),
                    },
                    KvWrite::Delete { key: "d".into() },
                ],
                blobs: vec![
                    BlobWrite::Put {
                        name: "a.txt".into(),
                        object: "obj-1".into(),
                        size: 3,
                        content_type: None,
                    },
                    BlobWrite::Delete { name: "b".into() },
                ],
                emitted: vec![
                    Emit::Publish {
                        topic: ChannelName::parse("orders").unwrap(),
                        payload: serde_json::json!(1),
                    },
                    Emit::Send {
                        queue: ChannelName::parse("jobs").unwrap(),
                        payload: serde_json::json!(null),
                        delay: Some(Duration::from_millis(1500)),
                        idempotency_key: Some("k1".into()),
                    },
                    Emit::InvokeAsync {
                        script: ScriptName::parse("other").unwrap(),
                        payload: serde_json::json!("x"),
                    },
                ],
                trace: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            },
        };
        let back: Execution = roundtrip(&WireExecution::from(execution.clone())).into();
        assert_eq!(format!("{back:?}"), format!("{execution:?}"));
    }

    #[test]
    fn errors_keep_their_kind_and_never_their_store_detail() {
        let cases = [
            (ExecError::Overloaded, "Overloaded"),
            (
                ExecError::ConcurrencyLimit {
                    of: "script",
                    limit: 2,
                },
                "ConcurrencyLimit { of: \"script\", limit: 2 }",
            ),
            (
                ExecError::ScriptNotFound("s".into()),
                "ScriptNotFound(\"s\")",
            ),
        ];
        for (error, debug) in cases {
            let back: ExecError = roundtrip(&WireError::from(error)).into();
            assert_eq!(format!("{back:?}"), debug);
        }
        let store = ExecError::Store(StoreError::backend(std::io::Error::other(
            "connect to /var/lib/secret failed",
        )));
        let wire = encode(&WireError::from(store));
        assert!(!String::from_utf8_lossy(&wire).contains("secret"));
        let back: ExecError = serde_json::from_slice::<WireError>(&wire[4..])
            .unwrap()
            .into();
        assert!(matches!(back, ExecError::Store(_)));
    }

    #[tokio::test]
    async fn frames_are_read_back_in_order_and_a_clean_end_is_none() {
        let mut bytes = encode(&ToExecutor::Cancel { id: 1 });
        bytes.extend(encode(&ToExecutor::Cancel { id: 2 }));
        let mut reader = &bytes[..];
        for want in [1, 2] {
            match read::<ToExecutor, _>(&mut reader).await.unwrap() {
                Some(ToExecutor::Cancel { id }) => assert_eq!(id, want),
                other => panic!("{other:?}"),
            }
        }
        assert!(read::<ToExecutor, _>(&mut reader).await.unwrap().is_none());
        let huge = (u32::MAX).to_be_bytes();
        let mut reader = &huge[..];
        assert!(read::<ToExecutor, _>(&mut reader).await.is_err());
    }
}
