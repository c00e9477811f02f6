//! Several nodes on one PostgreSQL database: a change made through one node reaches every
//! other node through the notification bus (`shared::bus`, `LISTEN/NOTIFY`).
use std::time::{Duration, Instant};

use picloud::{Config, Server};
use reqwest::{Method, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::common::{TestApp, spawn_app};
use testkit::{Backend, eventually};

/// Long enough for any test machine; each wait ends as soon as the change is served.
const BOUND: Duration = Duration::from_secs(20);

/// Another full node (`picloud serve`) on `first`'s database, with its own data directory
/// and the cluster's secrets key.
struct Node {
    url: String,
    client: reqwest::Client,
    shutdown: CancellationToken,
    server: Option<Server>,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn join(first: &TestApp) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(&dir.path().join("data"), &first.database_url);
        config.secrets_key_file = Some(first.dir.path().join("data").join("secret.key"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let server = picloud::start(listener, config, shutdown.clone())
            .await
            .unwrap();
        Node {
            url,
            client: reqwest::Client::new(),
            shutdown,
            server: Some(server),
            _dir: dir,
        }
    }

    fn admin(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}/api/v1{path}", self.url))
            .bearer_auth(picloud::config::TEST_ADMIN_TOKEN)
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let res = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        (res.status(), res.text().await.unwrap())
    }

    /// How long until `path` answers `status` with `body`, polled until the bound.
    async fn serves(&self, path: &str, status: StatusCode, body: &str) -> Duration {
        let started = Instant::now();
        let what = format!("{path} answers {status} {body}");
        eventually(&what, BOUND, async || {
            let (got, text) = self.get(path).await;
            (got == status && text == body).then_some(())
        })
        .await;
        started.elapsed()
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.wait().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_through_one_node_are_served_by_another() {
    let a = spawn_app(Backend::Postgres).await;
    let b = Node::join(&a).await;

    // A new app, script and route.
    a.endpoint("shop", "hello", "GET /hello", r#""v1""#).await;
    let took = b.serves("/shop/hello", StatusCode::OK, "v1").await;
    println!("route added on node a, served by node b after {took:?}");

    // A redeploy, then a rollback.
    assert!(
        a.deploy("shop", "hello", r#""v2""#)
            .await
            .status()
            .is_success()
    );
    let took = b.serves("/shop/hello", StatusCode::OK, "v2").await;
    println!("redeploy on node a, served by node b after {took:?}");
    let rollback = a
        .admin(Method::POST, "/apps/shop/scripts/hello/rollback")
        .json(&serde_json::json!({ "version": 1 }))
        .send()
        .await
        .unwrap();
    assert!(
        rollback.status().is_success(),
        "{}",
        rollback.text().await.unwrap()
    );
    b.serves("/shop/hello", StatusCode::OK, "v1").await;

    // Deleting the route, then the app.
    let triggers: serde_json::Value = a
        .admin(Method::GET, "/apps/shop/triggers")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = triggers["triggers"][0]["id"].as_str().unwrap().to_owned();
    let deleted = a
        .admin(Method::DELETE, &format!("/apps/shop/triggers/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let (status, _) = wait_for_status(&b, "/shop/hello", StatusCode::NOT_FOUND).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    a.endpoint("blog", "hi", "GET /hi", r#""blog""#).await;
    b.serves("/blog/hi", StatusCode::OK, "blog").await;
    let deleted = a.admin(Method::DELETE, "/apps/blog").send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    wait_for_status(&b, "/blog/hi", StatusCode::NOT_FOUND).await;

    // And the other way round: a change made through b reaches a.
    assert!(
        b.admin(Method::PUT, "/apps/shop/scripts/hello")
            .json(&serde_json::json!({ "source": r#""from b""# }))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let bound = b
        .admin(Method::POST, "/apps/shop/triggers")
        .json(&serde_json::json!({ "kind": "http", "method": "GET", "path": "/hello", "script": "hello" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bound.status(), 201);
    eventually("node a serves node b's change", BOUND, async || {
        let res = a.get("/shop/hello").await;
        (res.status() == 200 && res.text().await.unwrap() == "from b").then_some(())
    })
    .await;
    b.stop().await;
}

async fn wait_for_status(node: &Node, path: &str, status: StatusCode) -> (StatusCode, String) {
    eventually(&format!("{path} answers {status}"), BOUND, async || {
        let (got, text) = node.get(path).await;
        (got == status).then_some((got, text))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realtime_subscriber_on_one_node_hears_a_publish_through_another_with_the_same_ids() {
    let a = spawn_app(Backend::Postgres).await;
    let b = Node::join(&a).await;
    a.token_endpoint("shop", r#"#{topics: ["orders"]}"#).await;
    a.expose("shop", "orders").await;
    // Minted on node a, checked on node b: the key is shared through the database.
    let token = a.token("shop").await;
    let on_a = a
        .subscribe(a.realtime("shop", "orders").bearer_auth(&token))
        .await;
    let res = b
        .client
        .get(format!("{}/shop/_realtime?topics=orders", b.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut on_b = crate::common::SseStream::new(res);
    let mut on_a = on_a;
    for n in 1..=3 {
        let res = a
            .publish("shop", "orders", serde_json::json!({ "n": n }))
            .await;
        assert_eq!(res.status(), 202);
    }
    let ids = |events: Vec<crate::common::SseMessage>| {
        events
            .iter()
            .map(|e| (e.id(), e.json()))
            .collect::<Vec<_>>()
    };
    let heard_b = ids(on_b.take(3).await);
    let heard_a = ids(on_a.take(3).await);
    assert_eq!(heard_b, heard_a);
    assert_eq!(
        heard_b.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    b.stop().await;
}

/// `GET /api/v1/nodes` as JSON.
async fn nodes(client: &reqwest::Client, url: &str) -> Vec<serde_json::Value> {
    let res = client
        .get(format!("{url}/api/v1/nodes"))
        .bearer_auth(picloud::config::TEST_ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    body["nodes"].as_array().unwrap().clone()
}

async fn a_server_lists_itself_up_and_its_heartbeat_moves(db: Backend) {
    let app = crate::common::spawn_app_with(db, |c| c.cluster.heartbeat_ms = 50).await;
    let listed = nodes(&app.client, &app.url).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let me = &listed[0];
    assert_eq!(me["role"], "all");
    assert_eq!(me["address"], app.url.as_str());
    assert_eq!(me["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(me["status"], "up");
    assert_eq!(me["heartbeat_ms"], 50);
    assert!(me.get("key_fingerprint").is_none(), "{me}");
    assert_eq!(me["realtime_streams"], 0);
    let first = me["last_heartbeat"].as_str().unwrap().to_owned();
    let now = eventually("the heartbeat moves", BOUND, async || {
        let now = nodes(&app.client, &app.url).await;
        (now[0]["last_heartbeat"].as_str().unwrap() != first).then_some(now)
    })
    .await;
    assert_eq!(now[0]["started_at"], me["started_at"]);
    // The row: PostgreSQL's heartbeats write it on their timer (the other nodes judge
    // liveness by it); SQLite's only at start (one process: nothing reads it but this
    // one, which answers for itself), however many intervals go by.
    let row = async || {
        let rows = app.store.nodes.list().await.unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        rows[0].clone()
    };
    let registered = row().await;
    match db {
        Backend::Postgres => {
            eventually("the row's heartbeat is written", BOUND, async || {
                (row().await.heartbeat_at > registered.heartbeat_at).then_some(())
            })
            .await;
        }
        Backend::Sqlite => {
            // Four times the three intervals after which a silent row reads `down`.
            tokio::time::sleep(Duration::from_millis(600)).await;
            let unwritten = row().await;
            assert_eq!(unwritten, registered, "no write since the start");
            assert!(unwritten.is_down(chrono::Utc::now()));
            let listed = nodes(&app.client, &app.url).await;
            assert_eq!(listed[0]["status"], "up", "{listed:?}");
            assert_eq!(listed[0]["id"], registered.id.as_str());
        }
    }

    // The realtime streams open on the node are counted at its heartbeats.
    app.token_endpoint("shop", r#"#{topics: ["orders"], ttl: 300}"#)
        .await;
    assert_eq!(app.expose("shop", "orders").await.status(), 201);
    let token = app.token("shop").await;
    let mut streams = Vec::new();
    for _ in 0..2 {
        let res = app
            .realtime("shop", "orders")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let mut stream = crate::common::SseStream::new(res);
        assert!(stream.next_any().await.is_some(), "the stream starts");
        streams.push(stream);
    }
    let streams_listed = async |want: u64| {
        let what = format!("{want} realtime streams listed");
        eventually(&what, BOUND, async || {
            let now = nodes(&app.client, &app.url).await;
            (now[0]["realtime_streams"] == want).then_some(())
        })
        .await;
    };
    streams_listed(2).await;
    streams.pop();
    streams_listed(1).await;
    drop(streams);
    streams_listed(0).await;
    // A read token may see the nodes; no token may not.
    let anonymous = app
        .client
        .get(format!("{}/api/v1/nodes", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

testkit::on_both_backends!(a_server_lists_itself_up_and_its_heartbeat_moves);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_lists_the_others_a_silent_one_is_down_and_a_stopped_one_leaves() {
    let a = spawn_app(Backend::Postgres).await;
    let b = Node::join(&a).await;
    for url in [&a.url, &b.url] {
        let listed = nodes(&a.client, url).await;
        let addresses: Vec<&str> = listed
            .iter()
            .map(|n| n["address"].as_str().unwrap())
            .collect();
        assert_eq!(addresses, [a.url.as_str(), b.url.as_str()], "{listed:?}");
        assert!(listed.iter().all(|n| n["status"] == "up"), "{listed:?}");
    }

    // A node that stopped heartbeating a minute ago (killed: its row stays).
    let long_ago = chrono::Utc::now() - chrono::Duration::seconds(60);
    a.store
        .nodes
        .register(
            &shared::store::NodeInfo {
                id: "node-killed".into(),
                role: "node".into(),
                address: "http://127.0.0.1:9".into(),
                version: "0.0.9".into(),
                key_fingerprint: "x".into(),
                started_at: long_ago,
                heartbeat_at: long_ago,
                heartbeat_interval: Duration::from_secs(5),
                in_flight: 4,
                queue_depth: 1,
                realtime_streams: 3,
            },
            long_ago - chrono::Duration::days(1),
        )
        .await
        .unwrap();
    let listed = nodes(&b.client, &b.url).await;
    let killed = listed.iter().find(|n| n["id"] == "node-killed").unwrap();
    assert_eq!(killed["status"], "down");
    assert_eq!(killed["in_flight"], 4);
    assert_eq!(killed["realtime_streams"], 3);

    // A clean shutdown removes the node's row.
    let b_url = b.url.clone();
    b.stop().await;
    let listed = nodes(&a.client, &a.url).await;
    assert!(
        listed.iter().all(|n| n["address"] != b_url.as_str()),
        "{listed:?}"
    );
    assert_eq!(listed.len(), 2, "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_on_one_node_hears_invocations_recorded_on_another() {
    let a = spawn_app(Backend::Postgres).await;
    let b = Node::join(&a).await;
    a.endpoint("shop", "hello", "GET /hello", r#""v1""#).await;
    b.serves("/shop/hello", StatusCode::OK, "v1").await;

    let res = b
        .admin(Method::GET, "/apps/shop/invocations/stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut stream = crate::common::SseStream::new(res);
    // Run on node a: its record reaches b's stream through the bus, not b's recorder.
    let called = a.get("/shop/hello").await;
    assert_eq!(called.status(), 200);
    let id = crate::common::invocation_id(&called);
    // (b's own calls while it waited for the route may come first.)
    let seen = loop {
        let message = stream.next().await.expect("the stream goes on");
        if message.event.as_deref() == Some("invocation") && message.json()["id"] == id.as_str() {
            break message.json();
        }
    };
    assert_eq!(seen["script"], "hello");
    assert_eq!(seen["status"], "ok");
    drop(stream);
    b.stop().await;
}
