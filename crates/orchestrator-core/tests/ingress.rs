//! The public ingress end to end, with its real parts: a SQLite (or PostgreSQL) store from
//! `storage`, the real executor, the router served on a loopback listener, reqwest as the
//! caller.
use std::sync::Arc;
use std::time::Duration;

use executor_core::{Executor, ExecutorConfig, Limits};
use orchestrator_core::mailer::MailboxMailer;
use orchestrator_core::{DispatchConfig, INVOCATION_ID_HEADER, IngressConfig, Orchestrator};
use shared::store::{HttpMethod, InvocationFilter, NewTrigger, TriggerSpec};
use shared::{
    AppName, CatalogChange, InvocationRecord, InvocationStatus, RoutePath, ScriptName, Store,
};
use storage::Backend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SHOP: &str = "shop";

/// One running ingress on a fresh database.
struct TestApp {
    url: String,
    addr: std::net::SocketAddr,
    client: reqwest::Client,
    store: Store,
    orchestrator: Arc<Orchestrator>,
    _db: storage::testing::TestDb,
}

/// Scripts and their routes, deployed before the orchestrator starts.
struct Setup {
    ingress: IngressConfig,
    script_timeout: Duration,
    routes: Vec<(&'static str, &'static str, &'static str, &'static str)>,
}

impl Setup {
    /// `(method, path, script, source)`
    fn with(routes: &[(&'static str, &'static str, &'static str, &'static str)]) -> Self {
        Setup {
            ingress: IngressConfig::default(),
            script_timeout: Duration::from_secs(1),
            routes: routes.to_vec(),
        }
    }
}

async fn spawn_app(setup: Setup) -> TestApp {
    spawn_app_on(Backend::Sqlite, setup).await
}

async fn spawn_app_on(backend: Backend, setup: Setup) -> TestApp {
    let db = storage::testing::TestDb::new(backend).await;
    let store = db.store.clone();
    let app = app_name();
    store.apps.create(&app).await.expect("create app");
    for (method, path, script, source) in &setup.routes {
        add_route(&store, method, path, script, source).await;
    }
    let limits = Limits {
        timeout: setup.script_timeout,
        max_operations: u64::MAX / 2,
        ..Limits::default()
    };
    let executor = Executor::start(
        ExecutorConfig {
            threads: 2,
            queue_capacity: 16,
            limits,
            ..ExecutorConfig::default()
        },
        store.clone(),
        tokio::runtime::Handle::current(),
    );
    let mailer = Arc::new(MailboxMailer::new(store.clone()));
    let orchestrator = Orchestrator::start(
        store.clone(),
        executor,
        mailer,
        setup.ingress,
        DispatchConfig::default(),
    )
    .await
    .expect("start orchestrator");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let router = orchestrator.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    TestApp {
        url: format!("http://{addr}"),
        addr,
        client: reqwest::Client::new(),
        store,
        orchestrator,
        _db: db,
    }
}

fn app_name() -> AppName {
    AppName::parse(SHOP).expect("app name")
}

async fn add_route(store: &Store, method: &str, path: &str, script: &str, source: &str) {
    let app = app_name();
    let script = ScriptName::parse(script).expect("script name");
    if store
        .scripts
        .active(&app, &script)
        .await
        .expect("read script")
        .is_none()
    {
        store
            .scripts
            .deploy(&app, &script, source)
            .await
            .expect("deploy");
    }
    store
        .triggers
        .create(NewTrigger {
            app,
            script,
            spec: TriggerSpec::Http {
                method: HttpMethod::parse(method).expect("method"),
                path: RoutePath::parse(path).expect("path"),
            },
            max_attempts: 1,
        })
        .await
        .expect("create trigger");
}

impl TestApp {
    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.url))
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.url))
    }

    /// Sends a raw HTTP/1.1 request and returns the raw answer.
    async fn raw(&self, request: &[u8]) -> String {
        let mut stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        stream.write_all(request).await.expect("write");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read");
        String::from_utf8_lossy(&answer).into_owned()
    }
}

async fn error_code(response: reqwest::Response) -> (String, String) {
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    (
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

fn invocation_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(INVOCATION_ID_HEADER)
        .expect("an invocation id header")
        .to_str()
        .expect("ascii")
        .to_owned()
}

/// The next recorded invocation, or a failed test after 10 s.
async fn next_record(
    rx: &mut tokio::sync::broadcast::Receiver<InvocationRecord>,
) -> InvocationRecord {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a record within 10 s")
        .expect("the recorder is alive")
}

const ECHO_REQUEST: &str = r#"#{
    method: request.method,
    path: request.path,
    id: request.params.id,
    q: request.query.q,
    thing: request.headers["x-thing"],
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_query_and_headers_reach_the_script() {
    let app = spawn_app(Setup::with(&[("GET", "/users/:id", "user", ECHO_REQUEST)])).await;
    let response = app
        .get("/shop/users/j%C3%BCrgen?q=first&q=last")
        .header("X-Thing", "a")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key(INVOCATION_ID_HEADER));
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["method"], "GET");
    assert_eq!(body["path"], "/users/j%C3%BCrgen");
    assert_eq!(body["id"], "jürgen");
    assert_eq!(body["q"], "last");
    assert_eq!(body["thing"], "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_body_reaches_the_script_as_text_and_json() {
    let source =
        r#"response(201, #{ raw: request.body, name: request.json.name }, #{ "x-made": "yes" })"#;
    let app = spawn_app(Setup::with(&[("POST", "/echo", "echo", source)])).await;
    let response = app
        .request(reqwest::Method::POST, "/shop/echo/")
        .json(&serde_json::json!({ "name": "ann" }))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-made"], "yes");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["name"], "ann");
    assert_eq!(body["raw"], r#"{"name":"ann"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_app_or_route_is_404_with_a_json_error() {
    let app = spawn_app(Setup::with(&[("GET", "/hello", "hello", r#""hi""#)])).await;
    for path in ["/nope/hello", "/shop/missing", "/shop", "/Bad_Name/x"] {
        let response = app.get(path).send().await.expect("send");
        assert_eq!(response.status(), 404, "{path}");
        assert!(!response.headers().contains_key(INVOCATION_ID_HEADER));
        assert_eq!(error_code(response).await.0, "not_found", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_is_405_with_allow_and_head_falls_back_to_get() {
    let app = spawn_app(Setup::with(&[("GET", "/users/:id", "user", ECHO_REQUEST)])).await;
    let response = app
        .request(reqwest::Method::DELETE, "/shop/users/1")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    assert_eq!(error_code(response).await.0, "method_not_allowed");

    let head = app
        .request(reqwest::Method::HEAD, "/shop/users/1")
        .send()
        .await
        .expect("send");
    assert_eq!(head.status(), 200);
    assert!(head.headers().contains_key(INVOCATION_ID_HEADER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413_whether_declared_or_streamed() {
    let mut setup = Setup::with(&[("POST", "/echo", "echo", "request.body")]);
    setup.ingress.max_body_bytes = 1024;
    let app = spawn_app(setup).await;

    let response = app
        .request(reqwest::Method::POST, "/shop/echo")
        .body(vec![b'x'; 4096])
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 413);
    assert_eq!(error_code(response).await.0, "payload_too_large");

    // Chunked: no Content-Length to refuse early, so the cap applies while reading.
    let chunk = "y".repeat(2000);
    let raw = format!(
        "POST /shop/echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let answer = app.raw(raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"));

    let small = app
        .request(reqwest::Method::POST, "/shop/echo")
        .body("small")
        .send()
        .await
        .expect("send");
    assert_eq!(small.status(), 200);
    assert_eq!(small.text().await.expect("text"), "small");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throwing_script_is_500_with_its_id_and_its_text_only_in_the_record() {
    let source = r#"print("about to fail"); throw "db password is hunter2";"#;
    let app = spawn_app(Setup::with(&[("GET", "/boom", "boom", source)])).await;
    let mut recorded = app.orchestrator.subscribe_recorded();

    let response = app.get("/shop/boom").send().await.expect("send");
    assert_eq!(response.status(), 500);
    let id = invocation_id(&response);
    let text = response.text().await.expect("body");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains("about to fail"), "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["error"]["code"], "script_failed");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&id)
    );

    let record = next_record(&mut recorded).await;
    assert_eq!(record.id.to_string(), id);
    assert_eq!(record.status, InvocationStatus::Error);
    assert_eq!(record.http_status, Some(500));
    assert_eq!(record.version, Some(1));
    assert!(
        record
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("hunter2")
    );
    assert!(record.logs.iter().any(|l| l.message == "about to fail"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_that_loops_forever_is_stopped_and_answered_as_a_failure() {
    let app = spawn_app(Setup::with(&[("GET", "/spin", "spin", "loop {}")])).await;
    let mut recorded = app.orchestrator.subscribe_recorded();
    let response = app.get("/shop/spin").send().await.expect("send");
    assert!(
        [500, 504].contains(&response.status().as_u16()),
        "{}",
        response.status()
    );
    let id = invocation_id(&response);
    let (code, message) = error_code(response).await;
    assert!(code == "timeout" || code == "script_failed", "{code}");
    assert!(message.contains(&id));
    let record = next_record(&mut recorded).await;
    assert_ne!(record.status, InvocationStatus::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_timeout_answers_504_even_while_the_script_still_runs() {
    let mut setup = Setup::with(&[("GET", "/spin", "spin", "loop {}")]);
    setup.ingress.request_timeout = Duration::from_millis(200);
    setup.script_timeout = Duration::from_secs(2);
    let app = spawn_app(setup).await;
    let mut recorded = app.orchestrator.subscribe_recorded();
    let started = std::time::Instant::now();
    let response = app.get("/shop/spin").send().await.expect("send");
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(2));
    let id = invocation_id(&response);
    assert_eq!(error_code(response).await.0, "timeout");
    let record = next_record(&mut recorded).await;
    assert_eq!(record.id.to_string(), id);
    assert_eq!(record.status, InvocationStatus::Timeout);
    assert_eq!(record.version, None);
    assert_eq!(record.http_status, Some(504));
}

async fn a_successful_run_is_recorded_with_its_logs(app: TestApp) {
    let mut recorded = app.orchestrator.subscribe_recorded();
    let response = app
        .get("/shop/hello?x=1")
        .header("x-request-id", "req-123")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let id = invocation_id(&response);
    assert_eq!(response.text().await.expect("text"), "hi");

    let record = next_record(&mut recorded).await;
    assert_eq!(record.id.to_string(), id);
    assert_eq!(record.trigger, "http");
    assert_eq!(record.summary, "GET /hello");
    assert_eq!(record.status, InvocationStatus::Ok);
    assert_eq!(record.http_status, Some(200));
    assert_eq!(record.version, Some(1));
    assert_eq!(record.request_id.as_deref(), Some("req-123"));
    assert_eq!(record.script.as_str(), "hello");
    assert!(record.error.is_none());

    // Broadcast only after commit: the store has it already.
    let listed = app
        .store
        .invocations
        .list(
            &app_name(),
            &InvocationFilter {
                limit: 10,
                ..InvocationFilter::default()
            },
        )
        .await
        .expect("list");
    let stored = listed
        .iter()
        .find(|r| r.id == record.id)
        .expect("the record is stored");
    assert!(stored.logs.iter().any(|l| l.message == "hello log"));
    assert_eq!(stored.http_status, Some(200));
}

const HELLO: &str = r#"print("hello log"); "hi""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_run_is_recorded_with_its_logs_on_sqlite() {
    let app = spawn_app(Setup::with(&[("GET", "/hello", "hello", HELLO)])).await;
    a_successful_run_is_recorded_with_its_logs(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_run_is_recorded_with_its_logs_on_postgres() {
    let app = spawn_app_on(
        Backend::Postgres,
        Setup::with(&[("GET", "/hello", "hello", HELLO)]),
    )
    .await;
    a_successful_run_is_recorded_with_its_logs(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_writes_every_queued_record_before_it_returns() {
    let app = spawn_app(Setup::with(&[("GET", "/hello", "hello", HELLO)])).await;
    for _ in 0..5 {
        let response = app.get("/shop/hello").send().await.expect("send");
        assert_eq!(response.status(), 200);
    }
    app.orchestrator.finish().await;
    let listed = app
        .store
        .invocations
        .list(
            &app_name(),
            &InvocationFilter {
                limit: 50,
                ..InvocationFilter::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(listed.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_trigger_goes_live_when_the_catalog_says_so() {
    let app = spawn_app(Setup::with(&[("GET", "/hello", "hello", HELLO)])).await;
    assert_eq!(
        app.get("/shop/later").send().await.expect("send").status(),
        404
    );

    add_route(&app.store, "GET", "/later", "later", r#""now live""#).await;
    // The table is in memory: without the catalog change the route is still unknown.
    assert_eq!(
        app.get("/shop/later").send().await.expect("send").status(),
        404
    );

    app.orchestrator
        .catalog_listener()
        .catalog_changed(&CatalogChange::Triggers { app: app_name() })
        .await;
    let response = app.get("/shop/later").send().await.expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("text"), "now live");
    // The app's other routes survived the rebuild.
    assert_eq!(
        app.get("/shop/hello").send().await.expect("send").status(),
        200
    );

    app.store
        .apps
        .delete(&app_name())
        .await
        .expect("delete app");
    app.orchestrator
        .catalog_listener()
        .catalog_changed(&CatalogChange::App { app: app_name() })
        .await;
    assert_eq!(
        app.get("/shop/hello").send().await.expect("send").status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_requests_are_served_while_one_script_spins() {
    let mut setup = Setup::with(&[
        ("GET", "/spin", "spin", "loop {}"),
        ("GET", "/hello", "hello", HELLO),
    ]);
    setup.script_timeout = Duration::from_secs(3);
    let app = spawn_app(setup).await;
    let spin = tokio::spawn(app.get("/shop/spin").send());
    // Give the spinning request a head start on a script thread; not needed for the
    // assertion to hold, only for it to mean something.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let response = app.get("/shop/hello").send().await.expect("send");
        assert_eq!(response.status(), 200);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    assert!(
        !spin.is_finished(),
        "the spinning script should still be running"
    );
    let spun = spin.await.expect("join").expect("send");
    assert!(spun.status().is_server_error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_root_is_served_with_or_without_a_trailing_slash() {
    let app = spawn_app(Setup::with(&[("GET", "/", "root", "request.path")])).await;
    for path in ["/shop", "/shop/"] {
        let response = app.get(path).send().await.expect("send");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.text().await.expect("text"), "/", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_executor_queue_is_503_with_retry_after() {
    let source = "loop {}";
    let mut setup = Setup::with(&[("GET", "/spin", "spin", source)]);
    setup.script_timeout = Duration::from_millis(500);
    let app = spawn_app(setup).await;
    // 2 script threads + 16 queued: the 19th concurrent request cannot be taken.
    let mut pending = Vec::new();
    for _ in 0..24 {
        pending.push(tokio::spawn(app.get("/shop/spin").send()));
    }
    let mut unavailable = 0;
    for task in pending {
        let response = task.await.expect("join").expect("send");
        if response.status() == 503 {
            assert_eq!(response.headers()["retry-after"], "1");
            assert!(response.headers().contains_key(INVOCATION_ID_HEADER));
            assert_eq!(error_code(response).await.0, "unavailable");
            unavailable += 1;
        }
    }
    assert!(unavailable >= 1, "no request was refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_is_echoed_and_the_invocation_id_names_every_run() {
    let app = spawn_app(Setup::with(&[("GET", "/hello", "hello", r#""hi""#)])).await;
    let given = app
        .get("/shop/hello")
        .header("x-request-id", "trace-7")
        .send()
        .await
        .expect("send");
    assert_eq!(given.headers()["x-request-id"], "trace-7");

    assert!(given.headers().contains_key(INVOCATION_ID_HEADER));

    let without = app.get("/shop/hello").send().await.expect("send");
    assert!(without.headers().contains_key(INVOCATION_ID_HEADER));
    assert!(!without.headers().contains_key("x-request-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_hangs_up_mid_run_still_gets_the_run_committed_and_recorded() {
    let source = r#"
        let until_ms = time::now_ms() + 300;
        while time::now_ms() < until_ms {}
        kv::set("finished", true);
        "done"
    "#;
    let app = spawn_app(Setup::with(&[("GET", "/slow", "slow", source)])).await;
    let mut recorded = app.orchestrator.subscribe_recorded();
    let gave_up = app
        .get("/shop/slow")
        .timeout(Duration::from_millis(50))
        .send()
        .await;
    assert!(gave_up.is_err(), "the caller should have timed out");

    let record = next_record(&mut recorded).await;
    assert_eq!(record.status, InvocationStatus::Ok);
    assert_eq!(record.summary, "GET /slow");
    assert_eq!(record.http_status, Some(200));
    let entry = app
        .store
        .kv
        .get(&app_name(), "finished")
        .await
        .expect("read kv");
    assert!(entry.is_some(), "the run's write was committed");
}

/// Sets its own key and counts; the executor of these tests queues 16 runs, so that many
/// requests can be in flight at once.
const PUT: &str =
    r#"kv::set("k" + request.params.i, request.params.i); kv::incr("count", 1); "ok""#;
const AT_ONCE: usize = 16;

/// `POST /shop/put/{i}` for each `i` at once; each answer must be 200 and its write must be
/// visible to another connection as soon as it is answered.
async fn put_at_once(app: &TestApp, keys: std::ops::Range<usize>) {
    futures::future::join_all(keys.map(|i| async move {
        let response = app
            .request(reqwest::Method::POST, &format!("/{SHOP}/put/{i}"))
            .send()
            .await
            .expect("send");
        let status = response.status();
        assert_eq!(status, 200, "{}", response.text().await.unwrap_or_default());
        let entry = app
            .store
            .kv
            .get(&app_name(), &format!("k{i}"))
            .await
            .expect("read kv");
        assert_eq!(
            entry.map(|e| e.value),
            Some(serde_json::json!(i.to_string())),
            "request {i} was answered before its write was committed"
        );
    }))
    .await;
}

async fn count(app: &TestApp) -> Option<serde_json::Value> {
    let entry = app.store.kv.get(&app_name(), "count").await;
    entry.expect("read kv").map(|e| e.value)
}

async fn concurrent_writes_are_each_committed_once_and_visible_when_answered(app: TestApp) {
    for round in 0..3 {
        put_at_once(&app, round * AT_ONCE..(round + 1) * AT_ONCE).await;
    }
    assert_eq!(count(&app).await, Some(serde_json::json!(3 * AT_ONCE)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_each_committed_once_and_visible_when_answered_on_sqlite() {
    let app = spawn_app(Setup::with(&[("POST", "/put/:i", "put", PUT)])).await;
    concurrent_writes_are_each_committed_once_and_visible_when_answered(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_each_committed_once_and_visible_when_answered_on_postgres() {
    let setup = Setup::with(&[("POST", "/put/:i", "put", PUT)]);
    let app = spawn_app_on(Backend::Postgres, setup).await;
    concurrent_writes_are_each_committed_once_and_visible_when_answered(app).await;
}

/// Two of these cannot both commit: together they leave the 64-bit range.
const HALF: &str = r#"kv::incr("half", 4611686018427387904); "ok""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_cannot_commit_fails_alone_among_concurrent_writes() {
    let app = spawn_app(Setup::with(&[
        ("POST", "/put/:i", "put", PUT),
        ("POST", "/half", "half", HALF),
    ]))
    .await;
    let half = || async {
        let sent = app
            .request(reqwest::Method::POST, "/shop/half")
            .send()
            .await;
        sent.expect("send").status().as_u16()
    };
    let (mut halves, ()) = tokio::join!(
        futures::future::join_all([half(), half()]),
        put_at_once(&app, 0..AT_ONCE - 2),
    );
    halves.sort_unstable();
    assert_eq!(
        halves,
        [200, 500],
        "one of the two fails, the other commits"
    );
    let entry = app.store.kv.get(&app_name(), "half").await.expect("read");
    assert_eq!(
        entry.map(|e| e.value),
        Some(serde_json::json!(4_611_686_018_427_387_904_i64))
    );
    assert_eq!(count(&app).await, Some(serde_json::json!(AT_ONCE - 2)));
}
