//! The one place end-to-end helpers live: `spawn_app` starts a real server on a random
//! loopback port with a fresh database, and `TestApp` has one method per user action.
#![allow(dead_code)]

use std::time::Duration;

use picloud::config::TEST_ADMIN_TOKEN;
use picloud::{Config, Server};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use shared::InvocationRecord;
use storage::testing::TestUrl;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use testkit::Backend;

pub struct TestApp {
    pub url: String,
    pub client: reqwest::Client,
    pub store: shared::Store,
    pub database_url: String,
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
    server: Option<Server>,
    /// A PostgreSQL test's schema, dropped after the server (declared last: dropped last).
    _schema: Option<TestUrl>,
}

/// A fresh server on `127.0.0.1:0` with its own database and data directory.
pub async fn spawn_app(db: Backend) -> TestApp {
    spawn_app_with(db, |_| {}).await
}

pub async fn spawn_app_with(db: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let schema = match db {
        Backend::Sqlite => None,
        Backend::Postgres => Some(TestUrl::postgres().await),
    };
    let database_url = match &schema {
        None => storage::testing::fresh_sqlite_url(dir.path()),
        Some(schema) => schema.url.clone(),
    };
    let mut config = Config::for_tests(&dir.path().join("data"), &database_url);
    tweak(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = picloud::start(listener, config, shutdown.clone())
        .await
        .unwrap();
    TestApp {
        url,
        client: reqwest::Client::new(),
        store: server.store.clone(),
        database_url,
        dir,
        shutdown,
        server: Some(server),
        _schema: schema,
    }
}

impl TestApp {
    pub fn admin(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}/api/v1{path}", self.url))
            .bearer_auth(TEST_ADMIN_TOKEN)
    }

    pub async fn create_app(&self, name: &str) -> Response {
        self.admin(Method::POST, "/apps")
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap()
    }

    pub async fn deploy(&self, app: &str, script: &str, source: &str) -> Response {
        self.admin(Method::PUT, &format!("/apps/{app}/scripts/{script}"))
            .json(&json!({ "source": source }))
            .send()
            .await
            .unwrap()
    }

    pub async fn add_route(&self, app: &str, method: &str, path: &str, script: &str) -> Response {
        self.admin(Method::POST, &format!("/apps/{app}/triggers"))
            .json(&json!({ "kind": "http", "method": method, "path": path, "script": script }))
            .send()
            .await
            .unwrap()
    }

    /// Create the app if needed, deploy `source` as `script` and bind `METHOD path` to it.
    pub async fn endpoint(&self, app: &str, script: &str, route: &str, source: &str) {
        let created = self.create_app(app).await.status();
        assert!(created == 201 || created == 409, "create app: {created}");
        let deployed = self.deploy(app, script, source).await;
        assert!(
            deployed.status().is_success(),
            "deploy: {}",
            deployed.text().await.unwrap()
        );
        let (method, path) = route.split_once(' ').unwrap();
        let bound = self.add_route(app, method, path, script).await;
        assert_eq!(
            bound.status(),
            201,
            "route: {}",
            bound.text().await.unwrap()
        );
    }

    /// Create a trigger from its JSON (`{"kind": "topic", "topic": "orders", "script": "s"}`).
    pub async fn add_trigger(&self, app: &str, trigger: Value) -> Response {
        self.admin(Method::POST, &format!("/apps/{app}/triggers"))
            .json(&trigger)
            .send()
            .await
            .unwrap()
    }

    /// Deploy `source` as `script` and bind it with `trigger` (the `script` field is added).
    pub async fn handler(&self, app: &str, script: &str, mut trigger: Value, source: &str) {
        let created = self.create_app(app).await.status();
        assert!(created == 201 || created == 409, "create app: {created}");
        let deployed = self.deploy(app, script, source).await;
        assert!(
            deployed.status().is_success(),
            "deploy: {}",
            deployed.text().await.unwrap()
        );
        trigger["script"] = Value::from(script);
        let bound = self.add_trigger(app, trigger).await;
        assert_eq!(
            bound.status(),
            201,
            "trigger: {}",
            bound.text().await.unwrap()
        );
    }

    /// A KV value through the admin API (`None` when missing).
    pub async fn kv(&self, app: &str, key: &str) -> Option<Value> {
        let res = self
            .admin(Method::GET, &format!("/apps/{app}/kv/{}", encode(key)))
            .send()
            .await
            .unwrap();
        match res.status().as_u16() {
            200 => Some(res.json::<Value>().await.unwrap()["value"].clone()),
            404 => None,
            other => panic!("kv get answered {other}: {}", res.text().await.unwrap()),
        }
    }

    pub async fn dead_letters(&self, app: &str) -> Vec<Value> {
        let res = self
            .admin(Method::GET, &format!("/apps/{app}/dead-letters"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json::<Value>().await.unwrap()["dead_letters"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Call a public endpoint: `call(Method::GET, "/shop/hello")`.
    pub fn call(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.url))
    }

    pub async fn get(&self, path: &str) -> Response {
        self.call(Method::GET, path).send().await.unwrap()
    }

    pub async fn invocations(&self, app: &str, query: &str) -> Value {
        let res = self
            .admin(Method::GET, &format!("/apps/{app}/invocations?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    pub fn recorded(&self) -> broadcast::Receiver<InvocationRecord> {
        self.server
            .as_ref()
            .expect("server running")
            .subscribe_recorded()
    }

    /// Stop the server the way SIGTERM does, and wait until it has finished.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(30), server.wait())
                .await
                .expect("shutdown within 30 s")
                .expect("clean shutdown");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Percent-encode one path segment.
pub fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Wait (at most 20 s) for a committed record that `matches`, and return it.
pub async fn record_where(
    rx: &mut broadcast::Receiver<InvocationRecord>,
    matches: impl Fn(&InvocationRecord) -> bool,
) -> InvocationRecord {
    wait_for_record(rx, Duration::from_secs(20), matches).await
}

/// Wait (at most 10 s) for the record of invocation `id` to be committed.
pub async fn record_of(
    rx: &mut broadcast::Receiver<InvocationRecord>,
    id: &str,
) -> InvocationRecord {
    wait_for_record(rx, Duration::from_secs(10), |r| r.id.to_string() == id).await
}

async fn wait_for_record(
    rx: &mut broadcast::Receiver<InvocationRecord>,
    within: Duration,
    matches: impl Fn(&InvocationRecord) -> bool,
) -> InvocationRecord {
    tokio::time::timeout(within, async {
        loop {
            match rx.recv().await {
                Ok(r) if matches(&r) => return r,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("recorder closed: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("a matching invocation was recorded within {within:?}"))
}

pub fn invocation_id(res: &Response) -> String {
    res.headers()
        .get("x-picloud-invocation-id")
        .expect("x-picloud-invocation-id header")
        .to_str()
        .unwrap()
        .to_owned()
}

/// One message of an SSE stream, as the WHATWG rules read it (a comment is a message with
/// only `comment` set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub retry: Option<String>,
    pub comment: Option<String>,
}

impl SseMessage {
    /// The id as a number (panics without one).
    pub fn id(&self) -> u64 {
        self.id
            .as_deref()
            .expect("an id")
            .parse()
            .expect("a numeric id")
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().expect("data")).expect("JSON data")
    }
}

/// An open `text/event-stream` answer, read message by message.
pub struct SseStream {
    response: Response,
    buffer: String,
}

/// How long a test waits for the next message of a stream.
pub const SSE_WAIT: Duration = Duration::from_secs(20);

impl SseStream {
    pub fn new(response: Response) -> Self {
        SseStream {
            response,
            buffer: String::new(),
        }
    }

    /// The next message, comments included; `None` when the stream ended.
    pub async fn next_any(&mut self) -> Option<SseMessage> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut message = SseMessage::default();
                for line in block.lines().filter(|l| !l.is_empty()) {
                    if let Some(comment) = line.strip_prefix(':') {
                        message.comment = Some(comment.trim().to_owned());
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
                    match field {
                        "id" => message.id = Some(value),
                        "event" => message.event = Some(value),
                        "data" => message.data = Some(value),
                        "retry" => message.retry = Some(value),
                        other => panic!("unknown SSE field {other:?}"),
                    }
                }
                return Some(message);
            }
            let chunk = tokio::time::timeout(SSE_WAIT, self.response.chunk())
                .await
                .expect("the stream said something within the wait")
                .ok()??;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// The next message that is not a heartbeat comment nor the `retry:` hint.
    pub async fn next(&mut self) -> Option<SseMessage> {
        loop {
            let message = self.next_any().await?;
            if message.comment.is_none() && message.retry.is_none() {
                return Some(message);
            }
        }
    }

    /// The next `n` events.
    pub async fn take(&mut self, n: usize) -> Vec<SseMessage> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(self.next().await.expect("the stream goes on"));
        }
        out
    }
}

impl TestApp {
    /// Expose `topic` of `app` to browsers.
    pub async fn expose(&self, app: &str, topic: &str) -> Response {
        self.admin(Method::PUT, &format!("/apps/{app}/realtime/topics/{topic}"))
            .send()
            .await
            .unwrap()
    }

    /// Publish `payload` to `topic` through the admin API.
    pub async fn publish(&self, app: &str, topic: &str, payload: Value) -> Response {
        self.admin(
            Method::POST,
            &format!("/apps/{app}/realtime/topics/{topic}/publish"),
        )
        .json(&json!({ "payload": payload }))
        .send()
        .await
        .unwrap()
    }

    /// Deploy `GET /token` on `app`: it answers a token minted with `options` (a Rhai map).
    pub async fn token_endpoint(&self, app: &str, options: &str) {
        let source = format!("realtime::token({options})");
        self.endpoint(app, "token", "GET /token", &source).await;
    }

    /// A token from the app's `GET /token` endpoint.
    pub async fn token(&self, app: &str) -> String {
        let res = self.get(&format!("/{app}/token")).await;
        assert_eq!(res.status(), 200);
        res.text().await.unwrap()
    }

    /// `GET /{app}/_realtime?topics=...`.
    pub fn realtime(&self, app: &str, topics: &str) -> reqwest::RequestBuilder {
        self.realtime_with(app, &[("topics", topics)])
    }

    /// `GET /{app}/_realtime?k=v&...`, each value percent-encoded.
    pub fn realtime_with(&self, app: &str, query: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let query: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        self.client
            .get(format!("{}/{app}/_realtime?{}", self.url, query.join("&")))
    }

    /// An open stream (asserting a 200 `text/event-stream` answer).
    pub async fn subscribe(&self, request: reqwest::RequestBuilder) -> SseStream {
        let res = request.send().await.unwrap();
        assert_eq!(res.status(), 200, "{:?}", res.headers());
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        SseStream::new(res)
    }

    /// Stop the server and start it again on the same database and data directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        let config = Config::for_tests(&self.dir.path().join("data"), &self.database_url);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.url = format!("http://{}", listener.local_addr().unwrap());
        self.shutdown = CancellationToken::new();
        let server = picloud::start(listener, config, self.shutdown.clone())
            .await
            .unwrap();
        self.store = server.store.clone();
        self.server = Some(server);
    }
}

/// The real `picloud` binary as a client of `app`, off the runtime: whether it succeeded,
/// and its stdout then stderr.
pub async fn cli(app: &TestApp, args: &[&str]) -> (bool, String) {
    let url = app.url.clone();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_picloud"))
            .args(&args)
            .env("PICLOUD_URL", url)
            .env("PICLOUD_TOKEN", TEST_ADMIN_TOKEN)
            .output()
            .expect("run the picloud CLI");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    })
    .await
    .unwrap()
}
