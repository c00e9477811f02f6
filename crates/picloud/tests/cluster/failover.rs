//! `kill -9` of a node while both nodes work through a burst of 10,000 events whose
//! handler increments one KV key: the survivor takes over the dead node's claims once
//! their lease runs out, the counter ends at exactly 10,000 (no event lost, none applied
//! twice), the dead node is listed `down`, and the failover time (kill -> the last of the
//! dead node's claimed events committed by the survivor) is printed against the lease.
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::node::{BOUND, Cluster, LEASE_SECS, Node};

const EVENTS: u64 = 10_000;
const PER_REQUEST: u64 = 1_000;
/// Rows `node` holds a claim on.
const HELD_BY: &str = "SELECT id FROM outbox WHERE lease_owner = $1";
/// Rows `node` holds a claim on that no commit in flight is deleting (a commit's delete
/// locks its rows; a commit is one statement on PostgreSQL, which completes on the server
/// when its node dies during it, so rows in it are not left for the survivor).
const HELD_OUTSIDE_COMMITS: &str =
    "SELECT id FROM outbox WHERE lease_owner = $1 FOR KEY SHARE SKIP LOCKED";
const STILL_THERE: &str = "SELECT COUNT(*) FROM outbox WHERE id = ANY($1)";

async fn total(node: &Node) -> u64 {
    node.kv("burst", "total")
        .await
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

fn status_of(nodes: &[Value], name: &str) -> Option<String> {
    nodes
        .iter()
        .find(|n| n["id"] == name)
        .and_then(|n| n["status"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_of_a_node_in_a_burst_loses_nothing_repeats_nothing_and_fails_over() {
    let cluster = Cluster::new().await;
    let pool = cluster.pool().await;
    let mut a = cluster.start("node-a", &[]).await;
    let b = cluster.start("node-b", &[]).await;

    a.create_app("burst").await;
    a.deploy("burst", "consumer", r#"kv::incr("total", 1);"#)
        .await;
    a.deploy(
        "burst",
        "producer",
        r#"
        let from = parse_int(request.query.from);
        for n in from..from + 1000 { pubsub::publish("work", #{ n: n }); }
        "ok"
        "#,
    )
    .await;
    a.trigger(
        "burst",
        json!({"kind": "topic", "topic": "work", "script": "consumer"}),
    )
    .await;
    a.trigger(
        "burst",
        json!({"kind": "http", "method": "POST", "path": "/produce", "script": "producer"}),
    )
    .await;
    let started = Instant::now();
    for batch in 0..EVENTS / PER_REQUEST {
        let (status, body) = a
            .post(&format!("/burst/produce?from={}", batch * PER_REQUEST))
            .await;
        assert_eq!(status, 200, "{body}");
    }

    // Kill a while it holds claims, with both nodes well into the burst.
    let held: Vec<Uuid> = testkit::eventually("node a holds claims", BOUND, async || {
        if total(&b).await < EVENTS / 10 {
            return None;
        }
        let held: Vec<Uuid> = sqlx::query_scalar(HELD_OUTSIDE_COMMITS)
            .bind("node-a")
            .fetch_all(&pool)
            .await
            .unwrap();
        (!held.is_empty()).then_some(held)
    })
    .await;
    assert!(!held.is_empty());
    a.kill9();
    let killed = Instant::now();
    // What it still held when it died: claims only the other node can finish now.
    let held: Vec<Uuid> = sqlx::query_scalar(HELD_BY)
        .bind("node-a")
        .fetch_all(&pool)
        .await
        .unwrap();
    let at_kill = total(&b).await;
    assert!(
        at_kill < EVENTS,
        "the kill came while events were in flight ({at_kill} done)"
    );
    assert!(
        !held.is_empty(),
        "node a died holding claims (it held some just before)"
    );

    // The survivor lists it down (three missed heartbeats), itself up.
    let listed = testkit::eventually("node a is listed down", BOUND, async || {
        let nodes = b.nodes().await;
        (status_of(&nodes, "node-a").as_deref() == Some("down")).then_some(nodes)
    })
    .await;
    assert_eq!(
        status_of(&listed, "node-b").as_deref(),
        Some("up"),
        "{listed:?}"
    );
    let down_after = killed.elapsed();

    // Its claims are taken over when their lease runs out and committed by node b.
    testkit::eventually(
        "node a's claims are finished by node b",
        BOUND,
        async || {
            let left: i64 = sqlx::query_scalar(STILL_THERE)
                .bind(&held)
                .fetch_one(&pool)
                .await
                .unwrap();
            (left == 0).then_some(())
        },
    )
    .await;
    let failover = killed.elapsed();
    println!(
        "failover after kill -9 with a {LEASE_SECS} s lease: the {} events node a held were committed by node b {failover:?} after the kill (node listed down after {down_after:?})",
        held.len()
    );

    let done = testkit::eventually("every event is counted", BOUND, async || {
        let total = total(&b).await;
        (total >= EVENTS).then_some(total)
    })
    .await;
    println!(
        "{EVENTS} events on two nodes, one killed after {at_kill}: all committed after {:?}",
        started.elapsed()
    );
    assert_eq!(done, EVENTS, "every event counted once");
    // A lease later, nothing more ran: no event was applied twice.
    tokio::time::sleep(Duration::from_secs(LEASE_SECS) + Duration::from_millis(500)).await;
    assert_eq!(total(&b).await, EVENTS);
    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(pending, 0);
    pool.close().await;
}
