//! Traces (docs/tracing.md): a request's `traceparent` is continued through a published
//! event and a queue message into their handlers, recorded on every invocation, and the
//! spans are exported over OTLP/HTTP to a small receiver on loopback.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::common::{TestApp, invocation_id, spawn_app_with};
use testkit::{Backend, eventually};

const WAIT: Duration = Duration::from_secs(30);
/// The caller's trace and span.
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const LOOKUP_TRACE: &str = "5cf92f3577b34da6a3ce929d0e0e4737";

/// One exported span, as the receiver decoded it.
#[derive(Debug, Clone)]
struct Got {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    service: String,
    invocation: String,
}

/// An OTLP/HTTP (protobuf) trace receiver on a free loopback port.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Got>>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn receive(State(spans): State<Arc<Mutex<Vec<Got>>>>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf request");
    let mut got = spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                let invocation = span
                    .attributes
                    .iter()
                    .find(|kv| kv.key == "picloud.invocation_id")
                    .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                        AnyValue::StringValue(s) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                got.push(Got {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    name: span.name,
                    service: service.clone(),
                    invocation,
                });
            }
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

async fn start_receiver() -> Receiver {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(spans.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { url, spans }
}

impl Receiver {
    /// The spans of `trace` once there are `n` of them.
    async fn trace(&self, trace: &str, n: usize) -> Vec<Got> {
        eventually(&format!("{n} spans of trace {trace}"), WAIT, async || {
            let spans: Vec<Got> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace_id == trace)
                .cloned()
                .collect();
            (spans.len() >= n).then_some(spans)
        })
        .await
    }
}

fn named<'a>(spans: &'a [Got], name: &str) -> &'a Got {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name} in {spans:?}"))
}

/// The newest invocation record of `script`.
/// `method path` called as a child of the caller's span in `trace`.
async fn call_traced(app: &TestApp, method: Method, path: &str, trace: &str) -> reqwest::Response {
    app.call(method, path)
        .header("traceparent", format!("00-{trace}-{CALLER_SPAN}-01"))
        .send()
        .await
        .unwrap()
}

async fn record(app: &TestApp, script: &str) -> Value {
    eventually(&format!("a record of {script}"), WAIT, async || {
        let listed = app
            .invocations("shop", &format!("script={script}&limit=1"))
            .await;
        listed["invocations"].as_array()?.first().cloned()
    })
    .await
}

async fn a_requests_trace_runs_through_a_published_event_and_a_queue_message(db: Backend) {
    let receiver = start_receiver().await;
    let endpoint = receiver.url.clone();
    let app = spawn_app_with(db, move |c| {
        c.tracing.otlp_endpoint = Some(endpoint);
        c.tracing.service_name = "picloud-test".into();
        c.tracing.export_delay_ms = 20;
    })
    .await;
    assert_eq!(app.create_app("shop").await.status(), 201);
    assert!(
        app.deploy("shop", "helper", "event.payload.n * 2")
            .await
            .status()
            .is_success()
    );
    app.handler(
        "shop",
        "ship",
        json!({"kind": "topic", "topic": "orders"}),
        // A sync invoke runs inside this run's span; what it returns goes on.
        r#"let doubled = invoke("helper", #{ n: event.payload.n }); queue::send("mail", #{ n: doubled })"#,
    )
    .await;
    app.handler(
        "shop",
        "mail",
        json!({"kind": "queue", "queue": "mail"}),
        r#"kv::set("mailed", event.payload.n)"#,
    )
    .await;
    app.endpoint(
        "shop",
        "order",
        "POST /orders",
        r#"pubsub::publish("orders", #{ n: 21 }); "queued""#,
    )
    .await;

    let res = call_traced(&app, Method::POST, "/shop/orders", TRACE).await;
    let request_invocation = invocation_id(&res);
    assert_eq!(res.text().await.unwrap(), "queued");
    eventually("the message was handled", WAIT, async || {
        (app.kv("shop", "mailed").await == Some(json!(42))).then_some(())
    })
    .await;

    // One trace: the caller's span -> the request's run -> the topic handler -> the queue
    // handler, each a child of the one that emitted its event.
    let spans = receiver.trace(TRACE, 3).await;
    let request = named(&spans, "POST shop/order");
    let topic = named(&spans, "topic shop/ship");
    let queue = named(&spans, "queue shop/mail");
    assert_eq!(request.parent, CALLER_SPAN);
    assert_eq!(request.invocation, request_invocation);
    assert_eq!(topic.parent, request.span_id);
    assert_eq!(queue.parent, topic.span_id);
    assert_eq!(spans.len(), 3, "{spans:?}");
    assert!(
        spans.iter().all(|s| s.service == "picloud-test"),
        "{spans:?}"
    );

    // Every run's record names the trace.
    for script in ["order", "ship", "mail"] {
        let r = record(&app, script).await;
        assert_eq!(r["trace_id"], TRACE, "{script}: {r}");
    }
    let r = record(&app, "ship").await;
    assert_eq!(r["id"].as_str().unwrap(), topic.invocation);

    // Without a traceparent a request starts its own trace, with no parent.
    let res = app
        .call(Method::POST, "/shop/orders")
        .header("traceparent", "not a traceparent")
        .send()
        .await
        .unwrap();
    let id = invocation_id(&res);
    let r = eventually("the second request's record", WAIT, async || {
        let r = record(&app, "order").await;
        (r["id"] == id.as_str()).then_some(r)
    })
    .await;
    let trace = r["trace_id"].as_str().unwrap().to_owned();
    assert_eq!(trace.len(), 32);
    assert_ne!(trace, TRACE);
    let spans = receiver.trace(&trace, 3).await;
    assert_eq!(named(&spans, "POST shop/order").parent, "");

    // A run on a script thread (a KV read is not tried inline) has one span as well: the
    // span its request started before asking for an answer at once.
    app.endpoint("shop", "lookup", "GET /lookup", r#"kv::get("mailed")"#)
        .await;
    let res = call_traced(&app, Method::GET, "/shop/lookup", LOOKUP_TRACE).await;
    assert_eq!(res.status(), 200);
    let spans = receiver.trace(LOOKUP_TRACE, 1).await;
    assert_eq!(named(&spans, "GET shop/lookup").parent, CALLER_SPAN);
    // A second span of that run, were there one, is exported within the export delay.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = receiver.trace(LOOKUP_TRACE, 1).await;
    assert_eq!(spans.len(), 1, "{spans:?}");
}

testkit::on_both_backends!(a_requests_trace_runs_through_a_published_event_and_a_queue_message);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_records_still_carry_the_callers_trace() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    app.endpoint("shop", "order", "GET /orders", r#""ok""#)
        .await;
    let res = call_traced(&app, Method::GET, "/shop/orders", TRACE).await;
    assert_eq!(res.status(), 200);
    let r = record(&app, "order").await;
    assert_eq!(r["trace_id"], TRACE);
}
