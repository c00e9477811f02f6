//! A node that loses its database connection (a loopback TCP proxy between it and
//! PostgreSQL is cut; the shared server is never restarted) misses every notice sent
//! meanwhile. When the proxy is restored it listens again, reloads the catalog, and serves
//! the changes made while it was cut off; no committed event is lost or applied twice.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::node::{BOUND, Cluster, LEASE_SECS, Node};

const POSTGRES: &str = "127.0.0.1:5432";
const CUT: Duration = Duration::from_secs(3);

/// A TCP proxy from a loopback port to PostgreSQL that can be cut (every connection
/// dropped, new ones closed at once) and restored.
struct Proxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = watch::channel(false);
        let task = {
            let cut = cut.clone();
            tokio::spawn(async move {
                let mut conns = JoinSet::new();
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    if *cut.borrow() {
                        drop(client);
                        continue;
                    }
                    let mut watching = cut.subscribe();
                    conns.spawn(async move {
                        let Ok(server) = TcpStream::connect(POSTGRES).await else {
                            return;
                        };
                        let (mut client, mut server) = (client, server);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = watching.wait_for(|cut| *cut) => {}
                        }
                    });
                    while conns.try_join_next().is_some() {}
                }
            })
        };
        Proxy { addr, cut, task }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn total(node: &Node) -> u64 {
    node.kv("shop", "total")
        .await
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

async fn produce(node: &Node, from: u64) {
    let (status, body) = node.post(&format!("/shop/produce?from={from}")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_postgres_reloads_the_catalog_and_loses_no_event() {
    let cluster = Cluster::new().await;
    assert!(
        cluster.db.url.contains(POSTGRES),
        "the test database is {POSTGRES}: {}",
        cluster.db.url
    );
    let proxy = Proxy::start().await;
    let through_proxy = cluster.db.url.replace(POSTGRES, &proxy.addr.to_string());
    let a = cluster.start("node-a", &[]).await;
    let b = cluster
        .start("node-b", &[("PICLOUD_DATABASE_URL", &through_proxy)])
        .await;

    a.create_app("shop").await;
    for (script, source) in [
        ("hello", r#""v1""#),
        ("consumer", r#"kv::incr("total", 1);"#),
        (
            "producer",
            r#"
            let from = parse_int(request.query.from);
            for n in from..from + 500 { pubsub::publish("work", #{ n: n }); }
            "ok"
            "#,
        ),
    ] {
        a.deploy("shop", script, source).await;
    }
    for trigger in [
        json!({"kind": "http", "method": "GET", "path": "/hello", "script": "hello"}),
        json!({"kind": "http", "method": "POST", "path": "/produce", "script": "producer"}),
        json!({"kind": "topic", "topic": "work", "script": "consumer"}),
    ] {
        a.trigger("shop", trigger).await;
    }
    testkit::eventually("node b serves v1", BOUND, async || {
        (b.get("/shop/hello").await == (StatusCode::OK, "v1".to_owned())).then_some(())
    })
    .await;

    // Both nodes work through a burst; b is cut off in the middle of it.
    produce(&a, 0).await;
    produce(&a, 500).await;
    proxy.cut.send_replace(true);
    // Changes b cannot hear: a redeploy, a new route, more events.
    a.deploy("shop", "hello", r#""v2""#).await;
    a.deploy("shop", "added", r#""added while b was away""#)
        .await;
    a.trigger(
        "shop",
        json!({"kind": "http", "method": "GET", "path": "/added", "script": "added"}),
    )
    .await;
    produce(&a, 1000).await;
    assert_eq!(
        b.get("/shop/added").await.0,
        StatusCode::NOT_FOUND,
        "node b is cut off: it does not know the new route yet"
    );
    tokio::time::sleep(CUT).await;
    proxy.cut.send_replace(false);
    let restored = Instant::now();

    testkit::eventually("node b serves the new route", BOUND, async || {
        let (status, body) = b.get("/shop/added").await;
        (status == StatusCode::OK && body == "added while b was away").then_some(())
    })
    .await;
    println!(
        "node b served the changes made while it was cut off {:?} after the connection came back",
        restored.elapsed()
    );
    assert_eq!(
        b.get("/shop/hello").await,
        (StatusCode::OK, "v2".to_owned())
    );

    let events = 1500;
    let done = testkit::eventually("every event is counted", BOUND, async || {
        let total = total(&b).await;
        (total >= events).then_some(total)
    })
    .await;
    assert_eq!(done, events);
    tokio::time::sleep(Duration::from_secs(LEASE_SECS) + Duration::from_millis(500)).await;
    assert_eq!(total(&a).await, events, "no event applied twice");
}
