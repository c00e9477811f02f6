//! Caddy in front of two nodes on one PostgreSQL (`caddy/Caddyfile`, docs/cluster.md):
//! Debian's `caddy` runs the repository's Caddyfile on loopback ports, with its global
//! options swapped for Caddy's internal CA, and the test talks to it over TLS with
//! `shop.apps.localhost` and `picloud.localhost` resolved to 127.0.0.1.
use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::sync::broadcast;

use crate::common::{SseStream, TestApp, invocation_id, spawn_app, spawn_app_with};
use shared::InvocationRecord;
use testkit::{Backend, eventually};

const CADDYFILE: &str = include_str!("../../../../caddy/Caddyfile");
const BEGIN: &str = "# template: global options begin";
const END: &str = "# template: global options end";
const ADMIN_HOST: &str = "picloud.localhost";
const APP_HOST: &str = "shop.apps.localhost";
const BOUND: Duration = Duration::from_secs(30);

/// A running `caddy`, killed on drop.
struct Caddy {
    child: Child,
    https_port: u16,
    root_cert: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Caddy {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The repository's Caddyfile with the global options for a test: loopback only, free
/// ports, the internal CA (never ACME), no admin endpoint, nothing installed in the
/// system's trust store.
fn test_caddyfile(http_port: u16, https_port: u16, storage: &Path) -> String {
    let begin = CADDYFILE.find(BEGIN).expect("the template's begin marker");
    let end = CADDYFILE.find(END).expect("the template's end marker");
    let global = format!(
        "{{\n\tadmin off\n\tdefault_bind 127.0.0.1\n\thttp_port {http_port}\n\thttps_port {https_port}\n\
         \tlocal_certs\n\tskip_install_trust\n\tstorage file_system {}\n}}\n",
        storage.display()
    );
    format!(
        "{}{global}{}",
        &CADDYFILE[..begin],
        &CADDYFILE[end + END.len()..]
    )
}

/// Start `caddy run` in front of `nodes` (the first one also as the manager); `None` when
/// Debian's caddy is not installed (scripts/test.sh installs it and requires this test).
fn start_caddy(nodes: &[&str]) -> Option<Caddy> {
    if Command::new("caddy").arg("version").output().is_err() {
        assert!(
            std::env::var_os("PICLOUD_TEST_REQUIRE_CADDY").is_none(),
            "PICLOUD_TEST_REQUIRE_CADDY is set but caddy is not installed"
        );
        eprintln!("no caddy: apt-get install caddy to run the Caddy test");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    let (http_port, https_port) = (free_port(), free_port());
    let file = dir.path().join("Caddyfile");
    std::fs::write(&file, test_caddyfile(http_port, https_port, &storage)).unwrap();
    let hosts = |n: &str| n.trim_start_matches("http://").to_owned();
    let upstreams: Vec<String> = nodes.iter().map(|n| hosts(n)).collect();
    let mut child = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&file)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env("PICLOUD_DOMAIN", ADMIN_HOST)
        .env("PICLOUD_APPS_DOMAIN", "apps.localhost")
        .env("PICLOUD_NODES", upstreams.join(" "))
        .env("PICLOUD_MANAGER", &upstreams[0])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start caddy");
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut log = Vec::new();
    let ready = lines.by_ref().map_while(Result::ok).any(|line| {
        let serving = line.contains("serving initial configuration");
        log.push(line);
        serving
    });
    assert!(ready, "caddy exited before serving:\n{}", log.join("\n"));
    // Keep draining its log so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Some(Caddy {
        child,
        https_port,
        root_cert: storage.join("pki/authorities/local/root.crt"),
        _dir: dir,
    })
}

impl Caddy {
    /// A client that trusts Caddy's internal CA and finds both hosts on 127.0.0.1.
    async fn client(&self) -> reqwest::Client {
        let pem = eventually("caddy's root certificate", BOUND, async || {
            tokio::fs::read(&self.root_cert).await.ok()
        })
        .await;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.https_port));
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .resolve(ADMIN_HOST, addr)
            .resolve(APP_HOST, addr)
            .no_proxy()
            .build()
            .unwrap()
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.https_port)
    }
}

/// Ids of the invocations `rx` has recorded so far (waiting a moment for stragglers is the
/// caller's job).
fn drain(rx: &mut broadcast::Receiver<InvocationRecord>, into: &mut HashSet<String>) {
    loop {
        match rx.try_recv() {
            Ok(record) => {
                into.insert(record.id.to_string());
            }
            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => return,
        }
    }
}

/// A second full node on `first`'s database, with the cluster's secrets key.
async fn second_node(first: &TestApp) -> TestApp {
    let url = first.database_url.clone();
    let key = first.dir.path().join("data").join("secret.key");
    spawn_app_with(Backend::Postgres, move |c| {
        c.database_url = Some(url);
        c.secrets_key_file = Some(key);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_balances_two_nodes_routes_app_hosts_streams_sse_and_survives_a_node_going_down() {
    let a = spawn_app(Backend::Postgres).await;
    let mut b = second_node(&a).await;
    a.endpoint(
        "shop",
        "hello",
        "GET /hello",
        r#"`hi from ${request.path}`"#,
    )
    .await;
    a.token_endpoint("shop", r#"#{topics: ["orders"]}"#).await;
    assert!(a.expose("shop", "orders").await.status().is_success());
    eventually("node b serves the app", BOUND, async || {
        (b.get("/shop/hello").await.status() == 200).then_some(())
    })
    .await;

    let Some(caddy) = start_caddy(&[&a.url, &b.url]) else {
        return;
    };
    let client = caddy.client().await;
    // Both hosts' certificates are issued as caddy starts.
    for host in [ADMIN_HOST, APP_HOST] {
        eventually(&format!("{host} answers over TLS"), BOUND, async || {
            client.get(caddy.url(host, "/readyz")).send().await.ok()
        })
        .await;
    }

    // `shop.localhost/hello` is `/shop/hello`, served by both nodes in turn.
    let (mut on_a, mut on_b) = (a.recorded(), b.recorded());
    let mut sent = HashSet::new();
    for _ in 0..20 {
        let res = eventually("a request through caddy", BOUND, async || {
            let res = client
                .get(caddy.url(APP_HOST, "/hello?x=1"))
                .send()
                .await
                .ok()?;
            (res.status() == StatusCode::OK).then_some(res)
        })
        .await;
        sent.insert(invocation_id(&res));
        assert_eq!(res.text().await.unwrap(), "hi from /hello");
    }
    let (mut seen_a, mut seen_b) = (HashSet::new(), HashSet::new());
    eventually("every request's record", BOUND, async || {
        drain(&mut on_a, &mut seen_a);
        drain(&mut on_b, &mut seen_b);
        let seen: HashSet<_> = seen_a.union(&seen_b).cloned().collect();
        sent.is_subset(&seen).then_some(())
    })
    .await;
    let by_a = sent.intersection(&seen_a).count();
    let by_b = sent.intersection(&seen_b).count();
    assert!(by_a > 0 && by_b > 0, "node a ran {by_a}, node b {by_b}");

    // The platform is not on app hosts: this is the app's own (missing) path.
    let res = client
        .get(caddy.url(APP_HOST, "/api/v1/apps"))
        .bearer_auth(picloud::config::TEST_ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // The admin API through the admin host.
    let res = client
        .get(caddy.url(ADMIN_HOST, "/api/v1/apps"))
        .bearer_auth(picloud::config::TEST_ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let apps: serde_json::Value = res.json().await.unwrap();
    assert!(apps.to_string().contains("\"shop\""), "{apps}");
    // Metrics stay on the private network.
    let res = client
        .get(caddy.url(ADMIN_HOST, "/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    // A realtime stream through caddy hears a publish made through caddy: nothing is held
    // back by buffering or compression.
    let token = client
        .get(caddy.url(APP_HOST, "/token"))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200);
    let token = token.text().await.unwrap();
    let res = client
        .get(caddy.url(APP_HOST, "/_realtime?topics=orders"))
        .header("accept-encoding", "gzip, zstd")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert!(res.headers().get("content-encoding").is_none());
    let mut stream = SseStream::new(res);
    let published = client
        .request(
            Method::POST,
            caddy.url(
                ADMIN_HOST,
                "/api/v1/apps/shop/realtime/topics/orders/publish",
            ),
        )
        .bearer_auth(picloud::config::TEST_ADMIN_TOKEN)
        .json(&json!({ "payload": { "n": 1 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 202);
    let heard = stream.take(1).await;
    assert_eq!(heard[0].json(), json!({ "n": 1 }));
    drop(stream);

    // Node b goes down: every request still succeeds, on node a.
    b.stop().await;
    let mut on_a = a.recorded();
    let mut after = HashSet::new();
    for _ in 0..20 {
        let res = client
            .get(caddy.url(APP_HOST, "/hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        after.insert(invocation_id(&res));
    }
    let mut seen_a = HashSet::new();
    eventually("node a ran every request", BOUND, async || {
        drain(&mut on_a, &mut seen_a);
        after.is_subset(&seen_a).then_some(())
    })
    .await;
}

#[test]
fn the_test_caddyfile_is_the_repository_one_with_test_global_options() {
    let file = test_caddyfile(8080, 8443, Path::new("/tmp/x"));
    assert!(file.contains("https_port 8443") && file.contains("local_certs"));
    assert!(!file.contains("# email ops@example.com"));
    let site = CADDYFILE.find("(picloud_nodes)").unwrap();
    assert!(file.ends_with(&CADDYFILE[site..]));
    for needle in [
        "health_uri /readyz",
        "flush_interval -1",
        "{$PICLOUD_NODES}",
    ] {
        assert!(CADDYFILE.contains(needle), "{needle}");
    }
}
