//! Outbound HTTP under the SSRF policy, against test servers on loopback.
//!
//! Every refused case is refused before any connection: the test servers count what
//! reaches them and the tests assert they saw nothing. No traffic leaves loopback.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use executor_core::{
    Executor, ExecutorConfig, HttpError, IpNet, OutboundClient, OutboundConfig, OutboundRequest,
    Resolve,
};
use shared::{
    AppName, CatalogChange, CatalogListener, Execution, ExecutorClient, HttpRequest, Invocation,
    InvocationId, InvocationInput, ScriptName,
};
use storage::testing::{TestDb, sqlite_store};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// A test server on `ip:0` that counts the requests it sees.
struct TestServer {
    port: u16,
    hits: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct ServerState {
    hits: Arc<AtomicUsize>,
    /// Where `/hop` redirects to.
    hop_target: Arc<std::sync::Mutex<String>>,
}

async fn serve_on(ip: &str) -> (TestServer, ServerState) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = ServerState {
        hits: Arc::new(AtomicUsize::new(0)),
        hop_target: Arc::new(std::sync::Mutex::new(String::new())),
    };
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/echo", any(echo))
        .route("/slow", get(slow))
        .route("/big", get(|| async { "x".repeat(10_000) }))
        .route("/loop", get(|| async { redirect("/loop") }))
        .route("/hop", get(hop))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count))
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let server = TestServer {
        port,
        hits: Arc::clone(&state.hits),
    };
    (server, state)
}

async fn serve() -> TestServer {
    serve_on("127.0.0.1").await.0
}

async fn count(
    State(state): State<ServerState>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    next.run(req).await
}

async fn echo(headers: HeaderMap, method: axum::http::Method, body: String) -> Response {
    let header_text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let reply = serde_json::json!({
        "method": method.as_str(),
        "content_type": header_text("content-type"),
        "x_test": header_text("x-test"),
        "body": body,
    });
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::SET_COOKIE, "a=1"),
        ],
        reply.to_string(),
    )
        .into_response()
}

async fn slow() -> &'static str {
    // A server that answers late is the point of the timeout tests that call it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    "late"
}

fn redirect(to: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to.to_owned())]).into_response()
}

async fn hop(State(state): State<ServerState>) -> Response {
    let target = state.hop_target.lock().unwrap().clone();
    redirect(&target)
}

/// A server that streams `total` bytes in chunks without a content-length.
async fn chunked_server(total: usize) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // Read the request head before answering.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 1000, "y".repeat(1000));
                for _ in 0..total / 1000 {
                    if socket.write_all(chunk.as_bytes()).await.is_err() {
                        return; // the client stopped reading: the point of the test
                    }
                }
                let _ = socket.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    (port, hits)
}

/// Names the test controls; anything else does not resolve.
struct MapResolver(HashMap<String, Vec<IpAddr>>);

#[async_trait]
impl Resolve for MapResolver {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        self.0
            .get(host)
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "unknown test name"))
    }
}

fn resolver(entries: &[(&str, &[&str])]) -> Option<Arc<dyn Resolve>> {
    let map = entries
        .iter()
        .map(|(name, ips)| {
            let ips = ips.iter().map(|ip| ip.parse().unwrap()).collect();
            ((*name).to_owned(), ips)
        })
        .collect();
    Some(Arc::new(MapResolver(map)))
}

fn loopback_allowed() -> OutboundConfig {
    OutboundConfig {
        allow_cidrs: vec!["127.0.0.1/32".parse::<IpNet>().unwrap()],
        ..OutboundConfig::default()
    }
}

fn client(config: &OutboundConfig) -> OutboundClient {
    OutboundClient::new(config).unwrap()
}

fn request_to(url: String) -> OutboundRequest {
    OutboundRequest {
        url,
        ..OutboundRequest::default()
    }
}

/// The error's text, checked to leak no loopback address or port.
fn refusal_text(err: &HttpError, port: u16) -> String {
    let text = err.to_string();
    assert!(!text.contains("127.0.0"), "{text} leaks an address");
    assert!(!text.contains(&port.to_string()), "{text} leaks the port");
    text
}

#[tokio::test]
async fn an_allowed_range_reaches_the_test_server() {
    let server = serve().await;
    let http = client(&loopback_allowed());
    let resp = http
        .send(request_to(format!(
            "http://127.0.0.1:{}/hello",
            server.port
        )))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.as_ref(), b"hello");
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_default_policy_refuses_every_spelling_of_loopback_and_private_without_connecting() {
    let server = serve().await;
    let port = server.port;
    let http = client(&OutboundConfig::default());
    for url in [
        format!("http://127.0.0.1:{port}/hello"),
        format!("http://localhost:{port}/hello"),
        format!("http://[::1]:{port}/hello"),
        format!("http://2130706433:{port}/hello"),
        format!("http://0177.0.0.1:{port}/hello"),
        format!("http://0x7f.1:{port}/hello"),
        format!("http://[::ffff:127.0.0.1]:{port}/hello"),
        format!("http://127.0.0.1.:{port}/hello"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[fd00:ec2::254]/".to_owned(),
        "http://100.100.100.200/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "http://192.168.1.1/".to_owned(),
        "http://0.0.0.0/".to_owned(),
    ] {
        let err = http.send(request_to(url.clone())).await.unwrap_err();
        assert_eq!(
            refusal_text(&err, port),
            "http: destination not allowed",
            "{url}"
        );
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused_unless_the_name_is_allow_listed() {
    let server = serve().await;
    let names = resolver(&[("rebind.test", &["127.0.0.1"])]);
    let url = format!("http://rebind.test:{}/hello", server.port);

    let default = client(&OutboundConfig {
        resolver: names.clone(),
        ..OutboundConfig::default()
    });
    let err = default.send(request_to(url.clone())).await.unwrap_err();
    assert_eq!(
        refusal_text(&err, server.port),
        "http: destination not allowed"
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);

    let allowed = client(&OutboundConfig {
        allow_hosts: vec!["rebind.test".into()],
        resolver: names,
        ..OutboundConfig::default()
    });
    let resp = allowed.send(request_to(url)).await.unwrap();
    assert_eq!(resp.body.as_ref(), b"hello");
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn one_refused_address_among_the_resolved_ones_refuses_the_name() {
    let server = serve().await;
    // 127.0.0.1 is allowed, 10.0.0.1 is not: the name is refused as a whole.
    let http = client(&OutboundConfig {
        resolver: resolver(&[("mixed.test", &["127.0.0.1", "10.0.0.1"])]),
        ..loopback_allowed()
    });
    let err = http
        .send(request_to(format!(
            "http://mixed.test:{}/hello",
            server.port
        )))
        .await
        .unwrap_err();
    assert_eq!(
        refusal_text(&err, server.port),
        "http: destination not allowed"
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_name_that_does_not_resolve_says_so_without_detail() {
    let http = client(&OutboundConfig {
        resolver: resolver(&[]),
        ..OutboundConfig::default()
    });
    let err = http
        .send(request_to("http://nowhere.test/".into()))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "http: host not found");
}

#[tokio::test]
async fn a_redirect_to_a_loopback_address_outside_the_allowed_range_is_refused_at_the_hop() {
    let (first, state) = serve_on("127.0.0.1").await;
    let (second, _) = serve_on("127.0.0.2").await;
    *state.hop_target.lock().unwrap() = format!("http://127.0.0.2:{}/hello", second.port);
    let http = client(&loopback_allowed());
    let err = http
        .send(request_to(format!("http://127.0.0.1:{}/hop", first.port)))
        .await
        .unwrap_err();
    assert_eq!(
        refusal_text(&err, second.port),
        "http: destination not allowed"
    );
    assert_eq!(first.hits.load(Ordering::SeqCst), 1);
    assert_eq!(second.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_redirect_to_a_name_is_checked_by_the_resolver_at_the_hop() {
    let (first, state) = serve_on("127.0.0.1").await;
    *state.hop_target.lock().unwrap() = format!("http://rebind.test:{}/hello", first.port);
    let http = client(&OutboundConfig {
        resolver: resolver(&[("rebind.test", &["127.0.0.2"])]),
        ..loopback_allowed()
    });
    let err = http
        .send(request_to(format!("http://127.0.0.1:{}/hop", first.port)))
        .await
        .unwrap_err();
    assert_eq!(
        refusal_text(&err, first.port),
        "http: destination not allowed"
    );
    assert_eq!(first.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_redirect_to_another_scheme_is_not_followed() {
    let (first, state) = serve_on("127.0.0.1").await;
    let http = client(&loopback_allowed());
    let targets = [
        "file:///etc/passwd".to_owned(),
        format!("ftp://127.0.0.1:{}/", first.port),
        format!("gopher://127.0.0.1:{}/", first.port),
    ];
    for (i, target) in targets.iter().enumerate() {
        *state.hop_target.lock().unwrap() = target.clone();
        // The script sees the 302 itself, with where it pointed.
        let resp = http
            .send(request_to(format!("http://127.0.0.1:{}/hop", first.port)))
            .await
            .unwrap();
        assert_eq!(resp.status, 302, "{target}");
        assert_eq!(resp.body.as_ref(), b"");
        let location = resp.headers.iter().find(|(n, _)| n == "location");
        assert_eq!(location.map(|(_, v)| v), Some(target), "{target}");
        assert_eq!(first.hits.load(Ordering::SeqCst), i + 1, "{target}");
    }
}

#[tokio::test]
async fn a_redirect_loop_stops_at_max_redirects() {
    let server = serve().await;
    let http = client(&OutboundConfig {
        max_redirects: 3,
        ..loopback_allowed()
    });
    let err = http
        .send(request_to(format!("http://127.0.0.1:{}/loop", server.port)))
        .await
        .unwrap_err();
    assert_eq!(refusal_text(&err, server.port), "http: too many redirects");
    // The first request and three followed hops.
    assert_eq!(server.hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn schemes_other_than_http_and_https_are_refused() {
    let server = serve().await;
    let http = client(&loopback_allowed());
    for url in [
        "file:///etc/passwd".to_owned(),
        format!("gopher://127.0.0.1:{}/", server.port),
        format!("ftp://127.0.0.1:{}/", server.port),
        "data:text/plain,hi".to_owned(),
    ] {
        let err = http.send(request_to(url.clone())).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "http: only http and https URLs are allowed",
            "{url}"
        );
    }
    let err = http.send(request_to("not a url".into())).await.unwrap_err();
    assert_eq!(err.to_string(), "http: invalid URL");
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_slow_server_times_out_at_the_requested_timeout() {
    let server = serve().await;
    let http = client(&loopback_allowed());
    let started = std::time::Instant::now();
    let err = http
        .send(OutboundRequest {
            timeout: Some(Duration::from_millis(200)),
            ..request_to(format!("http://127.0.0.1:{}/slow", server.port))
        })
        .await
        .unwrap_err();
    assert_eq!(refusal_text(&err, server.port), "http: request timed out");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_body_over_the_cap_is_an_error_whether_announced_or_streamed() {
    let server = serve().await;
    let http = client(&loopback_allowed());
    let err = http
        .send(OutboundRequest {
            max_bytes: Some(1000),
            ..request_to(format!("http://127.0.0.1:{}/big", server.port))
        })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "http: response larger than 1000 bytes");

    // A script cannot raise the server's cap.
    let (port, hits) = chunked_server(1_000_000).await;
    let capped = client(&OutboundConfig {
        max_response_bytes: 5000,
        ..loopback_allowed()
    });
    let err = capped
        .send(OutboundRequest {
            max_bytes: Some(1 << 30),
            ..request_to(format!("http://127.0.0.1:{port}/"))
        })
        .await
        .unwrap_err();
    assert_eq!(
        refusal_text(&err, port),
        "http: response larger than 5000 bytes"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

// ---- through scripts ------------------------------------------------------------

struct Harness {
    db: TestDb,
    executor: Arc<Executor>,
    app: AppName,
}

impl Harness {
    async fn start(outbound: OutboundConfig) -> Harness {
        Harness::start_with(outbound, ExecutorConfig::default().limits).await
    }

    async fn start_with(outbound: OutboundConfig, limits: executor_core::Limits) -> Harness {
        let db = sqlite_store().await;
        let app = AppName::parse("shop").unwrap();
        db.store.apps.create(&app).await.unwrap();
        let config = ExecutorConfig {
            threads: 1,
            queue_capacity: 8,
            outbound,
            limits,
            email_senders: Vec::new(),
            ..ExecutorConfig::default()
        };
        let executor = Executor::start(config, db.store.clone(), tokio::runtime::Handle::current());
        Harness { db, executor, app }
    }

    async fn run(&self, source: &str) -> Execution {
        let name = ScriptName::parse("caller").unwrap();
        self.db
            .store
            .scripts
            .deploy(&self.app, &name, source)
            .await
            .unwrap();
        self.executor
            .catalog_changed(&CatalogChange::Script {
                app: self.app.clone(),
                script: name.clone(),
            })
            .await;
        self.executor
            .execute(Invocation {
                id: InvocationId::new(),
                app: self.app.clone(),
                script: name,
                input: InvocationInput::Http(HttpRequest::default()),
                request_id: None,
                limits: Default::default(),
            })
            .await
            .unwrap()
    }

    async fn close(self) {
        self.executor.shutdown();
        self.db.close().await;
    }
}

fn json_of(e: &Execution) -> serde_json::Value {
    let out = e.result.as_ref().expect("the script should succeed");
    serde_json::from_slice(&out.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_posts_a_map_as_json_with_its_headers_and_reads_the_json_reply() {
    let server = serve().await;
    let h = Harness::start(loopback_allowed()).await;
    let source = format!(
        r#"let r = http::post("http://127.0.0.1:{}/echo", #{{ n: 1 }}, #{{ headers: #{{ "X-Test": "yes" }} }});
           #{{ status: r.status, json: r.json, cookie: r.headers["set-cookie"], text: r.body.len() > 0 }}"#,
        server.port
    );
    let out = json_of(&h.run(&source).await);
    assert_eq!(out["status"], 200);
    assert_eq!(out["json"]["method"], "POST");
    assert_eq!(out["json"]["content_type"], "application/json");
    assert_eq!(out["json"]["x_test"], "yes");
    assert_eq!(out["json"]["body"], r#"{"n":1}"#);
    assert_eq!(out["cookie"], "a=1");
    assert_eq!(out["text"], true);
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_gets_text_and_sends_put_patch_and_delete() {
    let server = serve().await;
    let h = Harness::start(loopback_allowed()).await;
    let base = format!("http://127.0.0.1:{}", server.port);
    let source = format!(
        r#"let g = http::get("{base}/hello");
           let p = http::put("{base}/echo", "plain", #{{ timeout: 5 }});
           let a = http::patch("{base}/echo", ());
           let d = http::delete("{base}/echo", #{{ max_bytes: 10000 }});
           #{{ get: g.body, get_json: g.json, put: p.json.method, put_type: p.json.content_type,
              patch: a.json.method, delete: d.json.method }}"#
    );
    let out = json_of(&h.run(&source).await);
    assert_eq!(out["get"], "hello");
    assert_eq!(out["get_json"], serde_json::Value::Null);
    assert_eq!(out["put"], "PUT");
    assert_eq!(out["put_type"], "text/plain; charset=utf-8");
    assert_eq!(out["patch"], "PATCH");
    assert_eq!(out["delete"], "DELETE");
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_is_told_its_destination_is_not_allowed_and_nothing_more() {
    let server = serve().await;
    let h = Harness::start(OutboundConfig::default()).await;
    let source = format!(r#"http::get("http://2130706433:{}/hello")"#, server.port);
    let execution = h.run(&source).await;
    let failure = execution.result.expect_err("the call should fail");
    assert!(
        failure.message.contains("http: destination not allowed"),
        "{}",
        failure.message
    );
    assert!(!failure.message.contains("127.0.0"), "{}", failure.message);
    assert!(
        !failure.message.contains(&server.port.to_string()),
        "{}",
        failure.message
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_can_catch_an_http_error() {
    let h = Harness::start(OutboundConfig::default()).await;
    let out = json_of(
        &h.run(r#"let caught = (); try { http::get("gopher://example.com/"); } catch (e) { caught = e; } #{ caught: caught }"#)
            .await,
    );
    assert_eq!(out["caught"], "http: only http and https URLs are allowed");
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_waiting_on_a_slow_server_still_ends_at_its_wall_clock_limit() {
    let server = serve().await;
    let limits = executor_core::Limits {
        timeout: Duration::from_millis(500),
        ..ExecutorConfig::default().limits
    };
    let h = Harness::start_with(loopback_allowed(), limits).await;
    let started = std::time::Instant::now();
    let execution = h
        .run(&format!(
            r#"http::get("http://127.0.0.1:{}/slow")"#,
            server.port
        ))
        .await;
    let failure = execution
        .result
        .expect_err("the call cannot finish in time");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(failure.message.contains("timed out"), "{}", failure.message);
    h.close().await;
}
