//! Starting the real `picloud serve` for a run: a fresh data dir, a random admin token,
//! port 0, and through the admin API, in app `bench`: the hello-world script at
//! `GET /hello`, a script that does one `kv::set` at `GET /put`, and the script the
//! redeploy measurement replaces at `GET /ver`.
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::child::Server;

/// The endpoint the bench loads: app `bench`, route `/hello`.
pub const PATH: &str = "/bench/hello";
/// The endpoint that does one `kv::set` and returns.
pub const PUT_PATH: &str = "/bench/put";
/// The endpoint whose script the redeploy measurement replaces.
pub const VER_PATH: &str = "/bench/ver";
const SCRIPT: &str = "\"Hello, world!\"\n";
const BODY: &str = "Hello, world!";
const PUT_SCRIPT: &str = "kv::set(\"last\", 1);\n\"ok\"\n";

/// Start `picloud serve` and deploy the hello script.
///
/// # Errors
/// When the server does not start or the admin API refuses a step.
pub fn start(bin: &Path, work: &Path) -> anyhow::Result<(Server, String)> {
    start_with(bin, work, "picloud", |cmd| {
        std::mem::replace(cmd, Command::new(bin))
    })
}

/// `start`, the command made by `wrap` (e.g. run under callgrind), its data dir and log
/// named after `name`.
///
/// # Errors
/// When the server does not start or the admin API refuses a step.
pub fn start_with(
    bin: &Path,
    work: &Path,
    name: &str,
    wrap: impl FnOnce(&mut Command) -> Command,
) -> anyhow::Result<(Server, String)> {
    let data_dir = work.join(format!("{name}-data"));
    std::fs::create_dir_all(&data_dir).context("cannot create the data dir")?;
    let token = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .env("PICLOUD_BIND", "127.0.0.1:0")
        .env("PICLOUD_DATA_DIR", &data_dir)
        .env("PICLOUD_ADMIN_TOKEN", &token)
        .env_remove("PICLOUD_DATABASE_URL")
        .env_remove("PICLOUD_CONFIG")
        .current_dir(work);
    let server = Server::start(wrap(&mut cmd), &work.join(format!("{name}.log")))?;
    anyhow::ensure!(
        server.addr.ip().is_loopback(),
        "picloud listens on {}, not on loopback",
        server.addr
    );
    deploy_hello(server.addr, &token).with_context(|| {
        format!(
            "setting up the bench app failed; picloud's stderr:\n{}",
            server.stderr_tail()
        )
    })?;
    wait_for_body(server.addr, PATH, BODY)?;
    wait_for_body(server.addr, PUT_PATH, "ok")?;
    Ok((server, token))
}

fn deploy_hello(addr: SocketAddr, token: &str) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let http = client()?;
        let api = format!("http://{addr}/api/v1");
        let steps = [
            (
                reqwest::Method::POST,
                format!("{api}/apps"),
                json!({"name": "bench"}),
            ),
            (
                reqwest::Method::PUT,
                format!("{api}/apps/bench/scripts/hello"),
                json!({"source": SCRIPT}),
            ),
            (
                reqwest::Method::POST,
                format!("{api}/apps/bench/triggers"),
                json!({"kind": "http", "method": "GET", "path": "/hello", "script": "hello"}),
            ),
            (
                reqwest::Method::PUT,
                format!("{api}/apps/bench/scripts/put"),
                json!({"source": PUT_SCRIPT}),
            ),
            (
                reqwest::Method::POST,
                format!("{api}/apps/bench/triggers"),
                json!({"kind": "http", "method": "GET", "path": "/put", "script": "put"}),
            ),
            (
                reqwest::Method::PUT,
                format!("{api}/apps/bench/scripts/ver"),
                json!({"source": "\"v0\""}),
            ),
            (
                reqwest::Method::POST,
                format!("{api}/apps/bench/triggers"),
                json!({"kind": "http", "method": "GET", "path": "/ver", "script": "ver"}),
            ),
        ];
        for (method, url, body) in steps {
            let response = http
                .request(method.clone(), &url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .with_context(|| format!("{method} {url} failed"))?;
            let status = response.status();
            if !status.is_success() {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                anyhow::bail!("{method} {url} answered {status}: {body}");
            }
        }
        Ok(())
    })
}

/// Wait up to 10 s until `GET http://{addr}{path}` answers 200 with `body`.
///
/// # Errors
/// When it does not within the time.
pub fn wait_for_body(addr: SocketAddr, path: &str, body: &str) -> anyhow::Result<()> {
    let url = format!("http://{addr}{path}");
    runtime()?.block_on(async {
        let http = client()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            match http.get(&url).send().await {
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    if status.is_success() && text.contains(body) {
                        return Ok(());
                    }
                    last = format!("{status}: {text}");
                }
                Err(e) => last = e.to_string(),
            }
            // A bounded startup check, not a work loop: the server is coming up.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("GET {url} never answered 200 '{body}' (last: {last})")
    })
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?)
}
