//! Cluster mode's split node: a real orchestrator process (`picloud orchestrator`, the
//! code of `picloud-orchestrator`) starts its own executor process and reaches it over a
//! Unix socket; a manager (in this test
//! process) holds the admin API; all on one fresh PostgreSQL schema.
//!
//! - the node answers like `picloud serve`: the same statuses, bodies, script errors and
//!   compile errors, and a script's KV effects happen exactly once;
//! - `kill -9` of the executor mid-request: the request gets 503 naming its invocation, the
//!   orchestrator starts a new executor and keeps serving, and the event that was running
//!   is retried (counted as an attempt) and completes exactly once.
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use picloud::config::TEST_ADMIN_TOKEN;
use picloud::{Config, Role, Server};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use storage::testing::TestUrl;
use testkit::{Backend, eventually};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::common::{TestApp, spawn_app};

/// Long enough for any test machine; each wait ends as soon as its condition holds.
const BOUND: Duration = Duration::from_secs(60);

/// A `picloud-orchestrator` process.
struct Orchestrator {
    child: Child,
    url: String,
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Orchestrator {
    /// The pids of this orchestrator's child processes (its executor).
    fn executors(&self) -> Vec<u32> {
        let parent = self.child.id();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid ...`: comm may hold spaces, so read after the last ')'.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
            let zombie = rest.split_whitespace().next() == Some("Z");
            if ppid == Some(parent) && !zombie {
                found.push(pid);
            }
        }
        found
    }

    /// Its one running executor, once there is one.
    async fn executor(&self) -> u32 {
        eventually(
            "the orchestrator runs one executor",
            BOUND,
            async || match self.executors()[..] {
                [pid] => Some(pid),
                _ => None,
            },
        )
        .await
    }
}

/// A manager (in this process, admin API only) and one split node, on one schema.
struct Cluster {
    manager_url: String,
    http: reqwest::Client,
    node: Option<Orchestrator>,
    shutdown: CancellationToken,
    manager: Option<Server>,
    dir: tempfile::TempDir,
    schema: TestUrl,
}

/// Reads a process's stdout until a line starts with `prefix`, returns the rest of that
/// line, and keeps draining the pipe so the process never blocks on it.
async fn line_after(stdout: std::process::ChildStdout, prefix: &'static str) -> String {
    tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let rest = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("the process printed '{prefix}...'"))
                .unwrap();
            if let Some(rest) = line.strip_prefix(prefix) {
                break rest.trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        rest
    })
    .await
    .unwrap()
}

impl Cluster {
    /// The manager and a node that starts its own executor.
    async fn start(extra_env: &[(&str, &str)]) -> Cluster {
        let mut cluster = Cluster::manager().await;
        cluster.start_node(extra_env).await;
        cluster
    }

    async fn manager() -> Cluster {
        let schema = TestUrl::postgres().await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(&dir.path().join("manager"), &schema.url);
        config.secrets_key_file = Some(dir.path().join("secret.key"));
        config.blobs.dir = Some(dir.path().join("blobs"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let manager_url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let manager = picloud::start_role(listener, config, shutdown.clone(), Role::Manager)
            .await
            .unwrap();
        Cluster {
            manager_url,
            http: reqwest::Client::new(),
            node: None,
            shutdown,
            manager: Some(manager),
            dir,
            schema,
        }
    }

    /// `picloud <role>` with the cluster's database, key and blobs in its environment.
    /// (`picloud-orchestrator` and `picloud-executor` are the same code under their own
    /// names; `picloud orchestrator` starts `picloud executor` the way they do.)
    fn command(&self, role: &str, data_dir: &str) -> Command {
        let dir = self.dir.path();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_picloud"));
        cmd.arg(role);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PICLOUD_BIND", "127.0.0.1:0")
            .env("PICLOUD_DATA_DIR", dir.join(data_dir))
            .env("PICLOUD_CONFIG", dir.join("absent.toml"))
            .env("PICLOUD_DATABASE_URL", &self.schema.url)
            .env("PICLOUD_SECRETS_KEY_FILE", dir.join("secret.key"))
            .env("PICLOUD_BLOBS__DIR", dir.join("blobs"))
            .env("PICLOUD_EXECUTOR__THREADS", "2")
            .env("PICLOUD_LIMITS__TIMEOUT_MS", "2000")
            .env("PICLOUD_LIMITS__MAX_OPERATIONS", "2000000")
            .env("PICLOUD_EVENTS__BACKOFF_BASE_MS", "50")
            .env("PICLOUD_EVENTS__BACKOFF_MAX_MS", "200")
            .env("PICLOUD_OUTBOUND__ALLOW_CIDRS", "[\"127.0.0.1/32\"]")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        cmd
    }

    async fn start_node(&mut self, extra_env: &[(&str, &str)]) {
        let mut cmd = self.command("orchestrator", "node");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the orchestrator");
        let url = line_after(child.stdout.take().unwrap(), "listening on ").await;
        self.node = Some(Orchestrator { child, url });
    }

    /// A `picloud-executor` on its own, listening on `socket`.
    async fn start_executor(&self, socket: &Path) -> Orchestrator {
        let mut cmd = self.command("executor", "executor");
        cmd.arg("--socket").arg(socket);
        let mut child = cmd.spawn().expect("start the executor");
        let at = line_after(child.stdout.take().unwrap(), "executor listening on ").await;
        assert_eq!(Path::new(&at), socket);
        Orchestrator {
            child,
            url: String::new(),
        }
    }

    fn node(&self) -> &Orchestrator {
        self.node.as_ref().expect("a node was started")
    }

    fn admin(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/api/v1{path}", self.manager_url))
            .bearer_auth(TEST_ADMIN_TOKEN)
    }

    fn call(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.node().url))
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(manager) = self.manager.take() {
            manager.wait().await.unwrap();
        }
    }
}

/// Where the admin API is, for a `picloud serve` and for a cluster's manager alike.
trait Admin {
    fn admin_request(&self, method: Method, path: &str) -> reqwest::RequestBuilder;
}

impl Admin for Cluster {
    fn admin_request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.admin(method, path)
    }
}

impl Admin for TestApp {
    fn admin_request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.admin(method, path)
    }
}

async fn send(admin: &impl Admin, method: Method, path: &str, body: Value) -> reqwest::Response {
    admin
        .admin_request(method, path)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Create `app` and deploy each `(script, source, trigger)`.
async fn deploy(admin: &impl Admin, app: &str, scripts: &[(&str, &str, Value)]) {
    let res = send(admin, Method::POST, "/apps", json!({ "name": app })).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    for (script, source, trigger) in scripts {
        let res = send(
            admin,
            Method::PUT,
            &format!("/apps/{app}/scripts/{script}"),
            json!({ "source": source }),
        )
        .await;
        assert!(res.status().is_success(), "{}", res.text().await.unwrap());
        let mut trigger = trigger.clone();
        trigger["script"] = json!(script);
        let res = send(
            admin,
            Method::POST,
            &format!("/apps/{app}/triggers"),
            trigger,
        )
        .await;
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }
}

async fn kv(admin: &impl Admin, app: &str, key: &str) -> Option<Value> {
    let res = admin
        .admin_request(Method::GET, &format!("/apps/{app}/kv/{key}"))
        .send()
        .await
        .unwrap();
    match res.status().as_u16() {
        200 => Some(res.json::<Value>().await.unwrap()["value"].clone()),
        404 => None,
        other => panic!("kv get answered {other}"),
    }
}

async fn invocations(admin: &impl Admin, app: &str, query: &str) -> Vec<Value> {
    let res = admin
        .admin_request(Method::GET, &format!("/apps/{app}/invocations?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json::<Value>().await.unwrap()["invocations"]
        .as_array()
        .unwrap()
        .clone()
}

/// An invocation record's status and error, once it has been committed.
async fn record(admin: &impl Admin, app: &str, id: &str) -> (Value, Value) {
    eventually(&format!("the record of {id}"), BOUND, async || {
        let res = admin
            .admin_request(Method::GET, &format!("/apps/{app}/invocations/{id}"))
            .send()
            .await
            .unwrap();
        if res.status() != 200 {
            return None;
        }
        let record: Value = res.json().await.unwrap();
        Some((record["status"].clone(), record["error"].clone()))
    })
    .await
}

fn http(method: &str, path: &str) -> Value {
    json!({ "kind": "http", "method": method, "path": path })
}

/// What a caller sees of an answer, with the invocation id (different per run) replaced.
async fn seen(res: reqwest::Response) -> (u16, String, Option<String>) {
    let status = res.status().as_u16();
    let id = res
        .headers()
        .get("x-picloud-invocation-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let mut body = res.text().await.unwrap();
    if let Some(id) = &id {
        body = body.replace(id.as_str(), "<id>");
    }
    (status, body, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_node_answers_like_picloud_serve_and_commits_effects_once() {
    let serve = spawn_app(Backend::Postgres).await;
    let mut cluster = Cluster::start(&[]).await;
    let scripts = [
        ("hello", r#""hello""#, http("GET", "/hello")),
        (
            "echo",
            r#"#{ id: request.params.id, q: request.query.q, body: request.body, m: request.method }"#,
            http("POST", "/echo/:id"),
        ),
        (
            "count",
            r#"kv::incr("hits", 1); "counted""#,
            http("POST", "/count"),
        ),
        ("boom", r#"throw "broken on purpose""#, http("GET", "/boom")),
        (
            "typo",
            "let x = 1;\nx.no_such_method()",
            http("GET", "/typo"),
        ),
        ("spin", "loop { }", http("GET", "/spin")),
        (
            "respond",
            r#"response(418, "short and stout", #{ "x-kind": "teapot" })"#,
            http("GET", "/respond"),
        ),
        (
            "bput",
            r#"blob::put("greeting", "hi there"); "stored""#,
            http("POST", "/bput"),
        ),
        ("bget", r#"blob::get("greeting")"#, http("GET", "/bget")),
        (
            "produce",
            r#"pubsub::publish("work", #{ n: 1 }); "published""#,
            http("POST", "/produce"),
        ),
        (
            "consume",
            r#"kv::incr("consumed", event.payload.n)"#,
            json!({ "kind": "topic", "topic": "work" }),
        ),
    ];
    deploy(&serve, "same", &scripts).await;
    deploy(&cluster, "same", &scripts).await;
    // The node hears the deploys through the bus.
    eventually("the node serves the app", BOUND, async || {
        let res = cluster
            .call(Method::GET, "/same/hello")
            .send()
            .await
            .unwrap();
        (res.status() == 200).then_some(())
    })
    .await;

    let requests: [(Method, &str, &str); 10] = [
        (Method::GET, "/same/hello", ""),
        (Method::POST, "/same/echo/42?q=x", "payload"),
        (Method::GET, "/same/boom", ""),
        (Method::GET, "/same/typo", ""),
        (Method::GET, "/same/spin", ""),
        (Method::GET, "/same/respond", ""),
        (Method::POST, "/same/bput", ""),
        (Method::GET, "/same/bget", ""),
        (Method::GET, "/same/nope", ""),
        (Method::DELETE, "/same/hello", ""),
    ];
    let mut failed_ids = Vec::new();
    for (method, path, body) in requests {
        let on_serve = seen(
            serve
                .call(method.clone(), path)
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        let on_node = seen(
            cluster
                .call(method.clone(), path)
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (on_node.0, &on_node.1),
            (on_serve.0, &on_serve.1),
            "{method} {path}: the split node answers like picloud serve"
        );
        if on_node.0 >= 500 {
            failed_ids.push((path, on_serve.2.unwrap(), on_node.2.unwrap()));
        }
    }
    assert_eq!(
        failed_ids.len(),
        3,
        "boom, typo and spin failed: {failed_ids:?}"
    );
    // Script errors are recorded with the same text (line and column included).
    for (path, serve_id, node_id) in failed_ids {
        let on_serve = record(&serve, "same", &serve_id).await;
        let on_node = record(&cluster, "same", &node_id).await;
        assert_eq!(on_node, on_serve, "{path}: the same record");
        assert!(on_node.1.is_string(), "{path}: {on_node:?}");
    }

    // A compile error is refused at deploy the same way, and the old version stays.
    let broken = json!({ "source": "let x = ;\n\"never\"" });
    let on_serve = send(
        &serve,
        Method::PUT,
        "/apps/same/scripts/hello",
        broken.clone(),
    )
    .await;
    let on_manager = send(&cluster, Method::PUT, "/apps/same/scripts/hello", broken).await;
    assert_eq!(on_manager.status(), on_serve.status());
    assert_eq!(on_manager.status(), 422);
    let on_serve: Value = on_serve.json().await.unwrap();
    let on_manager: Value = on_manager.json().await.unwrap();
    assert_eq!(on_manager, on_serve);
    assert_eq!(on_manager["error"]["line"], 1, "{on_manager}");
    let res = cluster
        .call(Method::GET, "/same/hello")
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "hello");

    // KV effects of concurrent requests through the socket: each exactly once.
    const HITS: usize = 40;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..HITS {
        calls.spawn(cluster.call(Method::POST, "/same/count").send());
    }
    while let Some(res) = calls.join_next().await {
        assert_eq!(res.unwrap().unwrap().status(), 200);
    }
    assert_eq!(kv(&cluster, "same", "hits").await, Some(json!(HITS)));

    // An event's effects: committed once, by the orchestrator.
    for _ in 0..5 {
        let res = cluster
            .call(Method::POST, "/same/produce")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    eventually("five events consumed", BOUND, async || {
        (kv(&cluster, "same", "consumed").await == Some(json!(5))).then_some(())
    })
    .await;
    let consumed = invocations(&cluster, "same", "script=consume").await;
    assert_eq!(consumed.len(), 5, "{consumed:?}");
    assert_eq!(kv(&cluster, "same", "consumed").await, Some(json!(5)));

    // The node is listed by the manager with its executor's queue depth.
    let nodes: Value = cluster
        .admin(Method::GET, "/nodes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = nodes["nodes"].as_array().unwrap();
    assert!(
        listed
            .iter()
            .any(|n| n["role"] == "node" && n["address"] == cluster.node().url.as_str()),
        "{nodes}"
    );

    // SIGTERM to both processes (as `systemctl stop` sends it): the orchestrator drains,
    // the run in flight finishes on the executor, which stops only after it.
    let gate = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gate_url = format!("http://{}/open", gate.local_addr().unwrap());
    let source = format!(r#"http::get("{gate_url}").body"#);
    deploy(
        &cluster,
        "drain",
        &[("slow", &source, http("GET", "/slow"))],
    )
    .await;
    let executor = cluster.node().executor().await;
    let slow = {
        let req = cluster.call(Method::GET, "/drain/slow");
        tokio::spawn(async move {
            // Until the node has heard of the app, the route is a 404.
            loop {
                let res = req.try_clone().unwrap().send().await.unwrap();
                if res.status() != 404 {
                    return res;
                }
            }
        })
    };
    // The run is in flight once it reaches the gate.
    let (mut conn, _) = tokio::time::timeout(BOUND, gate.accept())
        .await
        .expect("the run started")
        .unwrap();
    let mut node = cluster.node.take().unwrap();
    signal("-TERM", executor);
    signal("-TERM", node.child.id());
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut head = [0u8; 1024];
        let _ = conn.read(&mut head).await.unwrap();
        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\ndrained")
            .await
            .unwrap();
    }
    let res = slow.await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "drained");
    let status = tokio::task::spawn_blocking(move || node.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    eventually(
        "the executor stopped with its orchestrator",
        BOUND,
        async || gone(executor).then_some(()),
    )
    .await;
    cluster.stop().await;
}

fn signal(which: &str, pid: u32) {
    let sent = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Whether process `pid` has exited (a zombie waiting for its reaper counts).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.split_whitespace().next() == Some("Z")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_executor_answers_503_restarts_it_and_retries_its_event_once() {
    let trap = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_url = format!("http://{}/hang", trap.local_addr().unwrap());
    let mut cluster = Cluster::start(&[
        ("PICLOUD_LIMITS__TIMEOUT_MS", "30000"),
        ("PICLOUD_OUTBOUND__TIMEOUT_MS", "60000"),
        ("PICLOUD_HTTP__REQUEST_TIMEOUT_MS", "60000"),
    ])
    .await;
    let hang = format!(r#"http::get("{trap_url}"); "late""#);
    let consumer = format!(
        r#"if event.attempt == 1 {{ http::get("{trap_url}"); }}
           kv::incr("done", 1);
           kv::set("attempt", event.attempt);"#
    );
    deploy(
        &cluster,
        "crash",
        &[
            ("hello", r#""hello""#, http("GET", "/hello")),
            ("hang", &hang, http("GET", "/hang")),
            (
                "send",
                r#"queue::send("jobs", #{}); "sent""#,
                http("POST", "/send"),
            ),
            (
                "consumer",
                &consumer,
                json!({ "kind": "queue", "queue": "jobs" }),
            ),
        ],
    )
    .await;
    eventually("the node serves the app", BOUND, async || {
        let res = cluster
            .call(Method::GET, "/crash/hello")
            .send()
            .await
            .unwrap();
        (res.status() == 200).then_some(())
    })
    .await;
    let first = cluster.node().executor().await;

    // One event and one request in flight, each stuck in its run.
    let sent = cluster
        .call(Method::POST, "/crash/send")
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    let request = tokio::spawn(cluster.call(Method::GET, "/crash/hang").send());
    let mut stuck = Vec::new();
    for _ in 0..2 {
        let (conn, _) = tokio::time::timeout(BOUND, trap.accept())
            .await
            .expect("both runs started")
            .unwrap();
        stuck.push(conn);
    }

    signal("-KILL", first);
    let killed_at = std::time::Instant::now();

    // The request in flight: 503, naming its invocation in the header and the body.
    let res = request.await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "1");
    let id = res.headers()["x-picloud-invocation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(&id),
        "{body}"
    );
    drop(stuck);

    // A new executor, and the node keeps serving.
    let second = eventually("a new executor", BOUND, async || {
        match cluster.node().executors()[..] {
            [pid] if pid != first => Some(pid),
            _ => None,
        }
    })
    .await;
    assert_ne!(second, first);
    eventually("the node serves again", BOUND, async || {
        let res = cluster
            .call(Method::GET, "/crash/hello")
            .send()
            .await
            .unwrap();
        (res.status() == 200).then_some(())
    })
    .await;
    println!(
        "kill -9 of the executor to a request served by its replacement: {:?}",
        killed_at.elapsed()
    );
    for _ in 0..5 {
        let res = cluster
            .call(Method::GET, "/crash/hello")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await.unwrap(), "hello");
    }

    // The event: its interrupted run counted as attempt 1, the retry completed once.
    eventually("the event completed", BOUND, async || {
        (kv(&cluster, "crash", "done").await == Some(json!(1))).then_some(())
    })
    .await;
    assert_eq!(kv(&cluster, "crash", "attempt").await, Some(json!(2)));
    let runs = eventually("both attempts recorded", BOUND, async || {
        let runs = invocations(&cluster, "crash", "script=consumer").await;
        (runs.len() >= 2).then_some(runs)
    })
    .await;
    let mut attempts: Vec<(i64, String)> = runs
        .iter()
        .map(|r| {
            (
                r["attempt"].as_i64().unwrap(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    attempts.sort();
    assert_eq!(
        attempts,
        [(1, "error".to_owned()), (2, "ok".to_owned())],
        "{runs:?}"
    );
    let lost = runs.iter().find(|r| r["attempt"] == 1).unwrap();
    assert!(
        lost["error"].as_str().unwrap().contains("executor"),
        "{lost}"
    );
    // The request's record says what happened too.
    let (status, error) = record(&cluster, "crash", &id).await;
    assert_eq!(status, "error");
    assert!(error.as_str().unwrap().contains("executor"), "{error}");
    assert_eq!(kv(&cluster, "crash", "done").await, Some(json!(1)));

    // kill -9 of the orchestrator: its executor notices (stdin closed) and exits too.
    let mut node = cluster.node.take().unwrap();
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    eventually("the orphaned executor exited", BOUND, async || {
        gone(second).then_some(())
    })
    .await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_connects_to_an_executor_socket_and_reconnects_when_it_returns() {
    let mut cluster = Cluster::manager().await;
    let socket = cluster.dir.path().join("exec.sock");
    let mut executor = cluster.start_executor(&socket).await;
    let socket_env = socket.to_str().unwrap().to_owned();
    cluster
        .start_node(&[("PICLOUD_EXECUTOR__SOCKET", &socket_env)])
        .await;
    deploy(
        &cluster,
        "apart",
        &[(
            "hello",
            r#"kv::incr("n", 1); "hello""#,
            http("GET", "/hello"),
        )],
    )
    .await;
    eventually("the node serves the app", BOUND, async || {
        let res = cluster
            .call(Method::GET, "/apart/hello")
            .send()
            .await
            .unwrap();
        (res.status() == 200).then_some(())
    })
    .await;
    // It started no executor of its own.
    assert!(cluster.node().executors().is_empty());

    // The executor dies; until one listens again the node answers 503, then serves.
    executor.child.kill().unwrap();
    executor.child.wait().unwrap();
    let res = cluster
        .call(Method::GET, "/apart/hello")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    let _executor = cluster.start_executor(&socket).await;
    eventually("the node reconnected", BOUND, async || {
        let res = cluster
            .call(Method::GET, "/apart/hello")
            .send()
            .await
            .unwrap();
        (res.status() == 200).then_some(())
    })
    .await;
    let n = kv(&cluster, "apart", "n").await.unwrap().as_u64().unwrap();
    let res = cluster
        .call(Method::GET, "/apart/hello")
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "hello");
    assert_eq!(kv(&cluster, "apart", "n").await, Some(json!(n + 1)));
    cluster.stop().await;
}
