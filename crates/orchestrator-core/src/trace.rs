//! Traces (docs/tracing.md): one span per script run, joined into one trace across HTTP
//! callers, published events, queue messages and nodes by W3C `traceparent`s.
//!
//! - A public request's span continues the caller's `traceparent` header (or starts a
//!   trace); an event's span continues the `traceparent` its outbox row was written with,
//!   which is the span of the run that emitted it. Sync `invoke` runs inside its caller's
//!   run, so in its span.
//! - Spans are made with the OpenTelemetry SDK on explicit contexts (never a thread's
//!   "current span"): a run crosses tasks, script threads, the outbox and other nodes.
//! - Export is off unless `[tracing] otlp_endpoint` is set. Without it no span is recorded;
//!   ids are still made (straight from the SDK's id generator, as its sampler would make
//!   them for a dropped span, without building one), so records and outbox rows still
//!   carry them. With it, ended spans
//!   go to OTLP/HTTP (protobuf) in batches from one task that sleeps on its queue: an idle
//!   node exports nothing and wakes for nothing (the SDK's own batch processor ticks on a
//!   timer even when empty, so it is not used).
use std::borrow::Cow;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    IdGenerator as _, RandomIdGenerator, Sampler, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter as _, SpanProcessor,
};
use tokio::sync::mpsc;

/// Spans waiting for export at most; past it new spans are dropped (and counted).
const QUEUE: usize = 4096;
/// Spans in one export request at most.
const MAX_BATCH: usize = 512;

/// Where and how spans are exported (`[tracing]`).
#[derive(Debug, Clone)]
pub struct TraceExport {
    /// An OTLP/HTTP endpoint: `http://collector:4318` (`/v1/traces` is added when the URL
    /// has no path) or the full traces URL.
    pub endpoint: String,
    /// `service.name` of the spans.
    pub service_name: String,
    /// How long the first span of a batch waits for others before the batch is sent.
    pub delay: Duration,
    /// How long one export request may take.
    pub timeout: Duration,
}

/// Makes this node's spans; cheap to clone.
#[derive(Clone)]
pub struct Tracing {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    /// Set when exporting: the queue's sender, taken on shutdown so the task drains and ends.
    exporting: Option<Arc<Exporting>>,
}

struct Exporting {
    done: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing")
            .field("exporting", &self.exporting.is_some())
            .finish()
    }
}

impl Default for Tracing {
    fn default() -> Self {
        Tracing::off()
    }
}

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("the OTLP exporter could not be built: {0}")]
pub struct TraceSetupError(String);

impl Tracing {
    /// Ids only: spans are not recorded and nothing is exported.
    pub fn off() -> Self {
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::AlwaysOff)
            .build();
        Tracing {
            tracer: provider.tracer("picloud"),
            provider,
            exporting: None,
        }
    }

    /// Record every span and export it to `export.endpoint`. Spawns the export task on the
    /// current tokio runtime.
    ///
    /// # Errors
    /// When the endpoint is not a URL the exporter accepts.
    pub fn exporting(export: &TraceExport) -> Result<Self, TraceSetupError> {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        let endpoint = traces_url(&export.endpoint);
        let client = reqwest::Client::builder()
            .timeout(export.timeout)
            .no_proxy()
            .build()
            .map_err(|e| TraceSetupError(e.to_string()))?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(endpoint)
            .with_timeout(export.timeout)
            .build()
            .map_err(|e| TraceSetupError(e.to_string()))?;
        let resource = Resource::builder_empty()
            .with_service_name(export.service_name.clone())
            .build();
        exporter.set_resource(&resource);
        let (tx, rx) = mpsc::channel(QUEUE);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let delay = export.delay;
        tokio::spawn(async move {
            export_loop(rx, exporter, delay).await;
            let _ = done_tx.send(());
        });
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(resource)
            .with_span_processor(QueueProcessor {
                tx: Mutex::new(Some(tx)),
            })
            .build();
        Ok(Tracing {
            tracer: provider.tracer("picloud"),
            provider,
            exporting: Some(Arc::new(Exporting {
                done: Mutex::new(Some(done_rx)),
            })),
        })
    }

    /// Start a span named `name`, a child of `parent` (a W3C `traceparent`) when it is a
    /// valid one, else the root of a new trace.
    pub fn start(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        parent: Option<&str>,
        attributes: Vec<KeyValue>,
    ) -> RunSpan {
        self.start_described(kind, parent, || (name.into(), attributes))
    }

    /// `start`, with the name and attributes made by `describe` only when spans are
    /// recorded: with export off, a span only makes ids, and formatting a name and
    /// attributes that are dropped at once costs more than a small script's run.
    pub fn start_described(
        &self,
        kind: SpanKind,
        parent: Option<&str>,
        describe: impl FnOnce() -> (Cow<'static, str>, Vec<KeyValue>),
    ) -> RunSpan {
        let remote = parent.and_then(parse_traceparent);
        if self.exporting.is_none() {
            // Not recorded: only the ids a dropped span would get (the parent's trace, a
            // new span id, not sampled), made when first asked for.
            return RunSpan::Ids(Unrecorded {
                parent: remote.map(|remote| remote.trace_id()),
                ids: OnceLock::new(),
            });
        }
        let parent_cx = match remote {
            Some(remote) => Context::new().with_remote_span_context(remote),
            None => Context::new(),
        };
        let (name, attributes) = describe();
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent_cx);
        RunSpan::Recorded(parent_cx.with_span(span))
    }

    /// Export what is queued and stop exporting (waits at most `grace`).
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.provider.shutdown();
        let done = self
            .exporting
            .as_ref()
            .and_then(|e| e.done.lock().ok()?.take());
        if let Some(done) = done {
            let _ = tokio::time::timeout(grace, done).await;
        }
    }
}

/// A run's span; ended when dropped.
pub enum RunSpan {
    /// Recorded (export is on): the span in its context.
    Recorded(Context),
    /// Not recorded (export is off): its ids only.
    Ids(Unrecorded),
}

/// The ids of a span that is not recorded: made only if asked for (a run with a record
/// or with emitted events), the trace the caller's when it sent one.
pub struct Unrecorded {
    parent: Option<TraceId>,
    ids: OnceLock<SpanContext>,
}

impl Unrecorded {
    fn context(&self) -> &SpanContext {
        self.ids.get_or_init(|| {
            let ids = RandomIdGenerator::default();
            SpanContext::new(
                self.parent.unwrap_or_else(|| ids.new_trace_id()),
                ids.new_span_id(),
                TraceFlags::default(),
                false,
                TraceState::default(),
            )
        })
    }
}

impl RunSpan {
    fn with_context<T>(&self, f: impl FnOnce(&SpanContext) -> T) -> T {
        match self {
            RunSpan::Recorded(cx) => f(cx.span().span_context()),
            RunSpan::Ids(unrecorded) => f(unrecorded.context()),
        }
    }

    #[cfg(test)]
    fn context(&self) -> SpanContext {
        self.with_context(Clone::clone)
    }

    /// The `traceparent` a child of this span is started under.
    pub fn traceparent(&self) -> String {
        self.with_context(|sc| {
            let mut out = String::with_capacity(55);
            out.push_str("00-");
            push_hex(&mut out, &sc.trace_id().to_bytes());
            out.push('-');
            push_hex(&mut out, &sc.span_id().to_bytes());
            out.push('-');
            push_hex(&mut out, &[sc.trace_flags().to_u8()]);
            out
        })
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        let mut out = String::with_capacity(32);
        self.with_context(|sc| push_hex(&mut out, &sc.trace_id().to_bytes()));
        out
    }

    pub fn set_attribute(&self, attribute: KeyValue) {
        if let RunSpan::Recorded(cx) = self {
            cx.span().set_attribute(attribute);
        }
    }

    /// Mark the run failed with `message`.
    pub fn fail(&self, message: impl Into<Cow<'static, str>>) {
        if let RunSpan::Recorded(cx) = self {
            cx.span().set_status(Status::error(message));
        }
    }
}

/// `bytes` as lowercase hex, as the ids' `Display` writes them, without `fmt` (every event
/// writes two ids).
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// A W3C `traceparent` (`00-<trace id>-<span id>-<flags>`) as a remote span context;
/// `None` when it is not one (any version but `ff`; for version 00, exactly four fields).
pub fn parse_traceparent(raw: &str) -> Option<SpanContext> {
    let raw = raw.trim();
    let mut parts = raw.split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    let rest = parts.next();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex(version, 2) || version == "ff" || (version == "00" && rest.is_some()) {
        return None;
    }
    if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}

/// `http://host:4318` -> `http://host:4318/v1/traces`; a URL with a path is kept.
fn traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim();
    let after_scheme = trimmed.split_once("://").map_or(trimmed, |(_, rest)| rest);
    match after_scheme.find('/') {
        Some(i) if after_scheme[i..].trim_end_matches('/').is_empty() => {
            format!("{}/v1/traces", trimmed.trim_end_matches('/'))
        }
        Some(_) => trimmed.to_owned(),
        None => format!("{trimmed}/v1/traces"),
    }
}

/// Hands ended, sampled spans to the export task; never blocks a run.
#[derive(Debug)]
struct QueueProcessor {
    tx: Mutex<Option<mpsc::Sender<SpanData>>>,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let sent = match self.tx.lock() {
            Ok(tx) => tx.as_ref().is_some_and(|tx| tx.try_send(span).is_ok()),
            Err(_) => false,
        };
        if !sent {
            metrics::counter!("picloud_trace_spans_dropped_total").increment(1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        // Dropping the sender lets the task export what is queued and end.
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        Ok(())
    }
}

/// Sleeps until a span arrives, gathers more for `delay` (or up to a full batch), exports
/// them, and sleeps again: no timer runs while the queue is empty.
async fn export_loop(
    mut rx: mpsc::Receiver<SpanData>,
    exporter: opentelemetry_otlp::SpanExporter,
    delay: Duration,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::sleep(delay);
        tokio::pin!(deadline);
        let mut closed = false;
        while batch.len() < MAX_BATCH {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(span) => batch.push(span),
                    None => {
                        closed = true;
                        break;
                    }
                },
                () = &mut deadline => break,
            }
        }
        let spans = batch.len() as u64;
        match exporter.export(batch).await {
            Ok(()) => metrics::counter!("picloud_trace_spans_exported_total").increment(spans),
            Err(error) => {
                metrics::counter!("picloud_trace_export_failures_total").increment(1);
                tracing::warn!(%error, spans, "exporting spans failed; they are dropped");
            }
        }
        if closed {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_written_as_their_display_writes_them() {
        let trace = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
        let span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let mut out = String::new();
        push_hex(&mut out, &trace.to_bytes());
        assert_eq!(out, trace.to_string());
        out.clear();
        push_hex(&mut out, &span.to_bytes());
        assert_eq!(out, span.to_string());
        out.clear();
        push_hex(&mut out, &[0x01, 0xff]);
        assert_eq!(out, "01ff");
    }

    #[test]
    fn a_traceparent_is_read_only_when_well_formed() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = parse_traceparent(good).unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?}");
        }
        // A later version may add fields.
        assert!(parse_traceparent(&format!("01{}-more", &good[2..])).is_some());
    }

    #[test]
    fn a_child_span_keeps_its_parents_trace_and_a_root_starts_one() {
        let tracing = Tracing::off();
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let child = tracing.start("run", SpanKind::Server, Some(parent), Vec::new());
        assert_eq!(child.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let header = child.traceparent();
        assert!(header.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(
            !header.contains("00f067aa0ba902b7"),
            "a new span id: {header}"
        );
        assert!(parse_traceparent(&header).is_some());
        let root = tracing.start("run", SpanKind::Server, Some("garbage"), Vec::new());
        assert_ne!(root.trace_id(), child.trace_id());
        assert!(parse_traceparent(&root.traceparent()).is_some());
    }

    #[test]
    fn ids_are_written_as_the_formatter_writes_them() {
        let tracing = Tracing::off();
        for parent in [
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            Some("00-0000000000000000000000000000000a-000000000000000b-00"),
            None,
        ] {
            let span = tracing.start("run", SpanKind::Server, parent, Vec::new());
            let sc = span.context();
            let expected = format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            );
            assert_eq!(span.traceparent(), expected);
            assert_eq!(span.trace_id(), sc.trace_id().to_string());
        }
    }

    #[test]
    fn a_span_is_described_only_when_spans_are_recorded() {
        let described = std::cell::Cell::new(false);
        let span = Tracing::off().start_described(SpanKind::Server, None, || {
            described.set(true);
            ("run".into(), Vec::new())
        });
        assert!(!described.get(), "nothing is recorded: no name is made");
        assert!(parse_traceparent(&span.traceparent()).is_some());
        assert!(
            span.traceparent().ends_with("-00"),
            "unsampled, as the SDK's sampler made it"
        );
        assert!(matches!(span, RunSpan::Ids(_)), "no SDK span is built");
    }

    #[test]
    fn an_unrecorded_spans_ids_are_made_once_and_keep_the_callers_trace() {
        let span =
            Tracing::off().start_described(SpanKind::Server, None, || ("run".into(), Vec::new()));
        let first = span.traceparent();
        assert_eq!(span.traceparent(), first, "the same ids every time");
        assert_eq!(&first[3..35], span.trace_id());
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let child = Tracing::off().start_described(SpanKind::Server, Some(parent), || {
            ("run".into(), Vec::new())
        });
        assert_eq!(child.trace_id(), "0af7651916cd43dd8448eb211c80319c");
        assert_ne!(
            &child.traceparent()[36..52],
            "b7ad6b7169203331",
            "a span id of its own"
        );
    }

    #[test]
    fn the_traces_path_is_added_only_to_a_bare_endpoint() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://127.0.0.1:4318/"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otel.example.com/custom/traces"),
            "https://otel.example.com/custom/traces"
        );
    }
}
