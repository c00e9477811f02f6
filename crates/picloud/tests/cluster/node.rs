//! The cluster under test: one fresh PostgreSQL schema, one secrets key file, and any
//! number of `picloud serve` processes (the real binary) on them.
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use storage::testing::TestUrl;

const BIN: &str = env!("CARGO_BIN_EXE_picloud");
pub(crate) const TOKEN: &str = "pct_cluster_suite_admin_token";
/// The lease of claimed events: short, so a killed node's events are taken over soon.
pub(crate) const LEASE_SECS: u64 = 2;
/// How often nodes heartbeat: a silent node is `down` after three of these.
pub(crate) const HEARTBEAT_MS: u64 = 250;
/// A bound for waits on a loaded two-core machine, never a timing: each wait ends as soon
/// as it can.
pub(crate) const BOUND: Duration = Duration::from_secs(180);

pub(crate) struct Cluster {
    pub(crate) db: TestUrl,
    pub(crate) key_file: PathBuf,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) http: reqwest::Client,
}

impl Cluster {
    /// A fresh schema and a fresh secrets key; no node yet.
    pub(crate) async fn new() -> Cluster {
        let db = TestUrl::postgres().await;
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("secret.key");
        write_key(&key_file);
        Cluster {
            db,
            key_file,
            dir,
            http: reqwest::Client::new(),
        }
    }

    /// The environment of node `name`: the cluster's database and key, its own data
    /// directory, a short lease and heartbeat, and `extra` on top.
    fn command(&self, name: &str, extra: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PICLOUD_BIND", "127.0.0.1:0")
            .env("PICLOUD_DATA_DIR", self.dir.path().join(name))
            .env("PICLOUD_CONFIG", self.dir.path().join("absent.toml"))
            .env("PICLOUD_DATABASE_URL", &self.db.url)
            .env("PICLOUD_SECRETS_KEY_FILE", &self.key_file)
            .env("PICLOUD_ADMIN_TOKEN", TOKEN)
            .env("PICLOUD_NODE_ID", name)
            .env("PICLOUD_EVENTS__LEASE_SECS", LEASE_SECS.to_string())
            .env("PICLOUD_LIMITS__TIMEOUT_MS", "1000")
            .env("PICLOUD_CLUSTER__HEARTBEAT_MS", HEARTBEAT_MS.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd
    }

    /// Start node `name` and wait until it listens.
    pub(crate) async fn start(&self, name: &str, extra: &[(&str, &str)]) -> Node {
        let cmd = self.command(name, extra);
        let name = name.to_owned();
        let http = self.http.clone();
        tokio::task::spawn_blocking(move || spawn(cmd, name, http))
            .await
            .unwrap()
    }

    /// Start node `name` expecting it to refuse: its exit status and what it printed.
    pub(crate) async fn refused(&self, name: &str, extra: &[(&str, &str)]) -> (i32, String) {
        let mut cmd = self.command(name, extra);
        let name = name.to_owned();
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        tokio::task::spawn_blocking(move || {
            let mut child = cmd.spawn().expect("start picloud serve");
            let mut pipe = child.stderr.take().unwrap();
            let reader = std::thread::spawn(move || {
                let mut stderr = String::new();
                let _ = pipe.read_to_string(&mut stderr);
                stderr
            });
            let started = std::time::Instant::now();
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if started.elapsed() > Duration::from_secs(60) {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{name} started instead of refusing");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            (status.code().unwrap_or(-1), reader.join().unwrap())
        })
        .await
        .unwrap()
    }

    /// A connection pool on the cluster's schema, to look at what the nodes share.
    pub(crate) async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.db.url)
            .await
            .unwrap()
    }
}

/// A new random 32-byte secrets key in `file`.
pub(crate) fn write_key(file: &std::path::Path) {
    let key: [u8; 32] = rand::random();
    std::fs::write(file, key).unwrap();
}

pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) url: String,
    child: Child,
    http: reqwest::Client,
}

#[allow(clippy::zombie_processes)] // `Node::drop` kills and waits
fn spawn(mut cmd: Command, name: String, http: reqwest::Client) -> Node {
    let mut child = cmd.spawn().expect("start picloud serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end, so the pipe never fills.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("picloud printed its address within 60 s");
        if let Some(url) = line.strip_prefix("listening on ") {
            return Node {
                name,
                url: url.trim().to_owned(),
                child,
                http,
            };
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// `kill -9`: no shutdown, no deregistration, leases left as they are.
    pub(crate) fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().unwrap();
    }

    pub(crate) fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}/api/v1{path}", self.url))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(60))
    }

    /// `GET path` on the public endpoints: status and body.
    pub(crate) async fn get(&self, path: &str) -> (StatusCode, String) {
        let res = self
            .http
            .get(format!("{}{path}", self.url))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        (res.status(), res.text().await.unwrap())
    }

    pub(crate) async fn post(&self, path: &str) -> (StatusCode, String) {
        let res = self
            .http
            .post(format!("{}{path}", self.url))
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .unwrap();
        (res.status(), res.text().await.unwrap())
    }

    pub(crate) async fn create_app(&self, app: &str) {
        let res = self
            .admin(Method::POST, "/apps")
            .json(&json!({ "name": app }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }

    pub(crate) async fn deploy(&self, app: &str, script: &str, source: &str) {
        let res = self
            .admin(Method::PUT, &format!("/apps/{app}/scripts/{script}"))
            .json(&json!({ "source": source }))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    }

    pub(crate) async fn trigger(&self, app: &str, trigger: Value) -> Value {
        let res = self
            .admin(Method::POST, &format!("/apps/{app}/triggers"))
            .json(&trigger)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
        res.json().await.unwrap()
    }

    /// A KV value through the admin API; `None` when missing or unreachable.
    pub(crate) async fn kv(&self, app: &str, key: &str) -> Option<Value> {
        let res = self
            .admin(Method::GET, &format!("/apps/{app}/kv/{key}"))
            .send()
            .await
            .ok()?;
        if res.status() != 200 {
            return None;
        }
        Some(res.json::<Value>().await.ok()?["value"].clone())
    }

    /// Every KV entry under `prefix`, through the admin API's pages.
    pub(crate) async fn kv_entries(&self, app: &str, prefix: &str) -> Vec<(String, Value)> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("/apps/{app}/kv?prefix={prefix}&limit=1000");
            if let Some(a) = &after {
                path.push_str(&format!("&after={}", encode(a)));
            }
            let res = self.admin(Method::GET, &path).send().await.unwrap();
            assert_eq!(res.status(), 200);
            let page: Value = res.json().await.unwrap();
            let entries = page["entries"].as_array().unwrap();
            for e in entries {
                all.push((e["key"].as_str().unwrap().to_owned(), e["value"].clone()));
            }
            match page["next_after"].as_str() {
                Some(next) if !entries.is_empty() => after = Some(next.to_owned()),
                _ => return all,
            }
        }
    }

    /// `GET /api/v1/nodes` as this node answers it.
    pub(crate) async fn nodes(&self) -> Vec<Value> {
        let res = self.admin(Method::GET, "/nodes").send().await.unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        body["nodes"].as_array().unwrap().clone()
    }
}

/// Percent-encode a query value.
fn encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `q`-quantile of `sorted` (nearest rank).
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    assert!(!sorted.is_empty());
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
