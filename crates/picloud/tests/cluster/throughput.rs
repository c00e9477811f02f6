//! Events per second through one node, then through two nodes on the same PostgreSQL:
//! printed, never asserted. Both nodes share this machine's cores, so the second figure
//! shows what a second node costs or gains here (claim contention, commits on one row),
//! not how a cluster on separate machines scales.
use std::time::{Duration, Instant};

use serde_json::json;

use crate::node::{BOUND, Cluster, Node};

const EVENTS: u64 = 3_000;
const PER_REQUEST: u64 = 1_000;

async fn total(node: &Node) -> u64 {
    node.kv("rate", "total")
        .await
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

/// Publish `EVENTS` events through `through` and wait until `watch` counts them all:
/// how long that took.
async fn burst(through: &Node, watch: &Node, already: u64) -> Duration {
    let started = Instant::now();
    for batch in 0..EVENTS / PER_REQUEST {
        let (status, body) = through
            .post(&format!("/rate/produce?from={}", batch * PER_REQUEST))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let want = already + EVENTS;
    let done = testkit::eventually("the burst is counted", BOUND, async || {
        let total = total(watch).await;
        (total >= want).then_some(total)
    })
    .await;
    assert_eq!(done, want, "every event counted once");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_per_second_with_one_node_and_with_two() {
    let cluster = Cluster::new().await;
    let a = cluster.start("node-a", &[]).await;
    a.create_app("rate").await;
    a.deploy("rate", "consumer", r#"kv::incr("total", 1);"#)
        .await;
    a.deploy(
        "rate",
        "producer",
        r#"
        let from = parse_int(request.query.from);
        for n in from..from + 1000 { pubsub::publish("work", #{ n: n }); }
        "ok"
        "#,
    )
    .await;
    a.trigger(
        "rate",
        json!({"kind": "topic", "topic": "work", "script": "consumer"}),
    )
    .await;
    a.trigger(
        "rate",
        json!({"kind": "http", "method": "POST", "path": "/produce", "script": "producer"}),
    )
    .await;

    let one = burst(&a, &a, 0).await;
    let b = cluster.start("node-b", &[]).await;
    let two = burst(&a, &b, EVENTS).await;
    let rate = |took: Duration| EVENTS as f64 / took.as_secs_f64();
    println!(
        "{EVENTS} events (publish + kv::incr on one key), debug build, nodes sharing this machine: one node {:.0} events/s, two nodes {:.0} events/s",
        rate(one),
        rate(two)
    );
}
