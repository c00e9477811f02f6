//! Database fault injection: a loopback TCP proxy, written here, sits between a real
//! `picloud serve` and PostgreSQL. During a burst of queue messages whose handlers write KV,
//! the proxy is cut (every connection dropped, new ones closed at once) for a few seconds,
//! then restored. Afterwards every effect happened exactly once, the server reconnected
//! by itself, and no request got a wrong answer (5xx during the cut are fine; a 2xx whose
//! data is wrong or whose effect is missing is not).
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use storage::testing::TestUrl;
use testkit::eventually;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::binary::{Running, start};

const EVENTS: u64 = 1_000;
const PER_REQUEST: u64 = 100;
const TOKEN: &str = "pct_faults_test_admin_token";
const POSTGRES: &str = "127.0.0.1:5432";
/// How long the database stays unreachable.
const CUT: Duration = Duration::from_secs(4);
/// Bounds for a loaded two-core machine, never timings: each wait ends when it can.
const BOUND: Duration = Duration::from_secs(180);

/// A TCP proxy from a loopback port to PostgreSQL that can be cut and restored.
struct Proxy {
    addr: SocketAddr,
    /// `true` while cut; every connection task watches it.
    cut: watch::Sender<bool>,
    /// Connections accepted while up, in total.
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = watch::channel(false);
        let accepted = Arc::new(AtomicU64::new(0));
        let task = {
            let cut = cut.clone();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                let mut conns = JoinSet::new();
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    // While cut, a new connection is closed at once: the client sees the
                    // database gone, not a hang.
                    if *cut.borrow() {
                        drop(client);
                        continue;
                    }
                    accepted.fetch_add(1, Ordering::Relaxed);
                    let mut watching = cut.subscribe();
                    conns.spawn(async move {
                        let Ok(server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let (mut client, mut server) = (client, server);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            // Dropping both sockets cuts the connection on both sides.
                            _ = watching.wait_for(|cut| *cut) => {}
                        }
                    });
                    while conns.try_join_next().is_some() {}
                }
            })
        };
        Proxy {
            addr,
            cut,
            accepted,
            task,
        }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Client {
    url: String,
    http: reqwest::Client,
}

impl Client {
    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.url))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(60));
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.expect("the server answers")
    }

    /// A KV value through the admin API; `None` when the key is missing or the database
    /// cannot be reached right now.
    async fn kv(&self, key: &str) -> Option<Value> {
        let res = self
            .admin(Method::GET, &format!("/apps/faults/kv/{key}"), None)
            .await;
        if res.status() != 200 {
            return None;
        }
        Some(res.json::<Value>().await.unwrap()["value"].clone())
    }

    /// Every `seen:` key and its value, through the admin API's pages.
    async fn seen(&self) -> Vec<(String, Value)> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = "/apps/faults/kv?prefix=seen:&limit=1000".to_string();
            if let Some(a) = &after {
                path.push_str(&format!("&after={}", crate::common::encode(a)));
            }
            let res = self.admin(Method::GET, &path, None).await;
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
}

/// What the clients saw while the burst ran: every answer is right or an error.
#[derive(Default)]
struct Seen {
    ok: AtomicU64,
    errors: AtomicU64,
    /// `hit:n` keys whose write was answered 2xx: each must be stored afterwards.
    acknowledged: std::sync::Mutex<Vec<u64>>,
}

/// Reads and writes through the server until `stop`, checking every 2xx answer.
async fn keep_calling(client: Arc<Client>, seen: Arc<Seen>, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        // A read through a script: the value set before the burst, or an error.
        let res = client
            .http
            .get(format!("{}/faults/probe", client.url))
            .timeout(Duration::from_secs(60))
            .send()
            .await;
        match res {
            Ok(res) if res.status().is_success() => {
                let body = res.text().await.unwrap();
                assert_eq!(body, "steady", "a 2xx read answered wrong data");
                seen.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(res) => {
                assert!(
                    res.status().is_server_error(),
                    "a read was refused with {}",
                    res.status()
                );
                seen.errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                seen.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        // A write through a script: a 2xx promises the write was committed.
        let res = client
            .http
            .post(format!("{}/faults/hit?n={n}", client.url))
            .timeout(Duration::from_secs(60))
            .send()
            .await;
        match res {
            Ok(res) if res.status().is_success() => {
                assert_eq!(res.text().await.unwrap(), n.to_string());
                seen.acknowledged.lock().unwrap().push(n);
                seen.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(res) => {
                assert!(
                    res.status().is_server_error(),
                    "a write was refused with {}",
                    res.status()
                );
                seen.errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                seen.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Admin reads: the right value or an error.
        let res = client
            .admin(Method::GET, "/apps/faults/kv/probe", None)
            .await;
        if res.status() == 200 {
            let v: Value = res.json().await.unwrap();
            assert_eq!(v["value"], "steady", "a 2xx admin read answered wrong data");
        } else {
            assert!(res.status().is_server_error(), "{}", res.status());
        }
        // Pacing, so the callers leave the handlers most of the two cores.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_postgres_during_a_burst_loses_and_repeats_nothing_and_the_server_recovers() {
    let schema = TestUrl::postgres().await;
    let proxy = Proxy::start(POSTGRES).await;
    assert!(
        schema.url.contains(POSTGRES),
        "the test database is {POSTGRES}: {}",
        schema.url
    );
    let through_proxy = schema.url.replace(POSTGRES, &proxy.addr.to_string());
    let dir = tempfile::tempdir().unwrap();
    let env: Vec<(String, String)> = vec![
        ("PICLOUD_ADMIN_TOKEN".into(), TOKEN.into()),
        ("PICLOUD_DATABASE_URL".into(), through_proxy),
        // A run cut mid-commit leaves its claim behind: it is claimed again after the lease.
        ("PICLOUD_EVENTS__LEASE_SECS".into(), "2".into()),
    ];
    let running: Running = {
        let dir = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let pairs: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            start(&dir, &pairs)
        })
        .await
        .unwrap()
    };
    let client = Arc::new(Client {
        url: running.url.clone(),
        http: reqwest::Client::new(),
    });

    assert_eq!(
        client
            .admin(Method::POST, "/apps", Some(json!({"name": "faults"})))
            .await
            .status(),
        201
    );
    let scripts = [
        (
            "consumer",
            r#"kv::incr("seen:" + event.payload.n, 1); kv::incr("total", 1);"#,
        ),
        (
            "producer",
            r#"
            let from = parse_int(request.query.from);
            for n in from..from + 100 { queue::send("work", #{ n: n }); }
            "sent"
            "#,
        ),
        ("probe", r#"kv::get("probe")"#),
        ("init", r#"kv::set("probe", "steady"); "ok""#),
        (
            "hit",
            r#"let n = parse_int(request.query.n); kv::set("hit:" + n, n); n"#,
        ),
    ];
    for (name, source) in scripts {
        let res = client
            .admin(
                Method::PUT,
                &format!("/apps/faults/scripts/{name}"),
                Some(json!({"source": source})),
            )
            .await;
        assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    }
    for trigger in [
        json!({"kind": "queue", "queue": "work", "script": "consumer"}),
        json!({"kind": "http", "method": "POST", "path": "/produce", "script": "producer"}),
        json!({"kind": "http", "method": "GET", "path": "/probe", "script": "probe"}),
        json!({"kind": "http", "method": "POST", "path": "/init", "script": "init"}),
        json!({"kind": "http", "method": "POST", "path": "/hit", "script": "hit"}),
    ] {
        let res = client
            .admin(Method::POST, "/apps/faults/triggers", Some(trigger))
            .await;
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }
    let res = client
        .http
        .post(format!("{}/faults/init", client.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    // The burst: every message is queued (and acknowledged) before the cut, so the cut
    // falls on their handlers, not on the requests that send them.
    for batch in 0..EVENTS / PER_REQUEST {
        let res = client
            .http
            .post(format!(
                "{}/faults/produce?from={}",
                client.url,
                batch * PER_REQUEST
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..2)
        .map(|_| tokio::spawn(keep_calling(client.clone(), seen.clone(), stop.clone())))
        .collect();

    // Cut once the handlers are under way, while most messages are still waiting.
    let before_cut = eventually("the first handlers ran", BOUND, async || {
        let total = client.kv("total").await?.as_u64()?;
        (total >= 20).then_some(total)
    })
    .await;
    proxy.cut();
    let connections_before = proxy.accepted.load(Ordering::Relaxed);
    // The cut is felt: readiness fails while the database is unreachable.
    eventually("readiness fails during the cut", BOUND, async || {
        let res = client
            .http
            .get(format!("{}/readyz", client.url))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .ok()?;
        (!res.status().is_success()).then_some(())
    })
    .await;
    // The fault itself lasts a fixed time: that is what is being injected, not a wait.
    tokio::time::sleep(CUT).await;
    proxy.restore();

    // The server reconnects by itself: ready again, every message handled.
    eventually("ready again after the cut", BOUND, async || {
        let res = client
            .http
            .get(format!("{}/readyz", client.url))
            .send()
            .await
            .ok()?;
        res.status().is_success().then_some(())
    })
    .await;
    assert!(
        proxy.accepted.load(Ordering::Relaxed) > connections_before,
        "the server opened new connections after the cut"
    );
    let total = eventually("every message handled", BOUND, async || {
        let total = client.kv("total").await?.as_u64()?;
        (total >= EVENTS).then_some(total)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller
            .await
            .expect("every answer during the burst was right");
    }
    assert!(
        before_cut < EVENTS,
        "the cut came while messages were in flight ({before_cut} handled)"
    );

    // Nothing is left to run (no message waiting, none dead-lettered), so the counters
    // are final: read them once.
    let outbox = {
        let pool = sqlx::PgPool::connect(&schema.url).await.unwrap();
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        left
    };
    assert_eq!(outbox, 0, "no message is still waiting");
    let dead = client
        .admin(Method::GET, "/apps/faults/dead-letters", None)
        .await;
    assert_eq!(dead.status(), 200);
    let dead: Value = dead.json().await.unwrap();
    assert_eq!(dead["dead_letters"], json!([]), "no message was given up");
    assert_eq!(total, EVENTS, "no message was handled twice");
    assert_eq!(client.kv("total").await, Some(json!(EVENTS)));
    let per_event = client.seen().await;
    assert_eq!(per_event.len() as u64, EVENTS, "one key per message");
    for (key, value) in &per_event {
        assert_eq!(value, &json!(1), "{key} was applied exactly once");
    }
    // Every write answered 2xx is stored.
    let acknowledged = seen.acknowledged.lock().unwrap().clone();
    for n in &acknowledged {
        assert_eq!(
            client.kv(&format!("hit:{n}")).await,
            Some(json!(n)),
            "an acknowledged write is stored"
        );
    }
    // The callers saw the server both before and after the cut.
    assert!(seen.ok.load(Ordering::Relaxed) > 0);
    eprintln!(
        "faults: {before_cut} handled before the cut, {} right answers, {} errors, {} acknowledged writes",
        seen.ok.load(Ordering::Relaxed),
        seen.errors.load(Ordering::Relaxed),
        acknowledged.len()
    );
    drop(running);
    drop(proxy);
    schema.close().await;
}
