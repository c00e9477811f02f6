//! Three nodes, each running the cron scheduler, and one every-second cron trigger: each
//! slot fires exactly once across the cluster (a fire is one guarded transaction).
use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::node::{BOUND, Cluster};

const SLOTS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_fire_an_every_second_cron_trigger_once_per_slot() {
    let cluster = Cluster::new().await;
    let a = cluster.start("node-a", &[]).await;
    let b = cluster.start("node-b", &[]).await;
    let c = cluster.start("node-c", &[]).await;
    let nodes = [&a, &b, &c];
    for node in nodes {
        let listed = node.nodes().await;
        assert_eq!(listed.len(), 3, "{listed:?}");
    }

    a.create_app("clock").await;
    a.deploy(
        "clock",
        "tick",
        r#"kv::incr("slot:" + event.payload.slot, 1); kv::incr("fires", 1);"#,
    )
    .await;
    let trigger = a
        .trigger(
            "clock",
            json!({"kind": "cron", "schedule": "* * * * * *", "script": "tick"}),
        )
        .await;
    // Every node's scheduler knows the trigger before the slots are counted.
    let counted_from = testkit::eventually("a first fire", BOUND, async || {
        a.kv("clock", "fires").await.and_then(|v| v.as_u64())
    })
    .await;
    testkit::eventually(&format!("{SLOTS} more slots"), BOUND, async || {
        let fires = c.kv("clock", "fires").await.and_then(|v| v.as_u64())?;
        (fires >= counted_from + SLOTS as u64).then_some(())
    })
    .await;
    let id = trigger["id"].as_str().unwrap();
    let deleted = b
        .admin(Method::DELETE, &format!("/apps/clock/triggers/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    // Fires already in the outbox still run; then nothing moves.
    let mut fires = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = a.kv("clock", "fires").await.and_then(|v| v.as_u64());
        if now == Some(fires) {
            break;
        }
        fires = now.unwrap_or(0);
    }

    let slots = b.kv_entries("clock", "slot:").await;
    assert!(slots.len() > SLOTS, "{slots:?}");
    for (slot, times) in &slots {
        assert_eq!(times, &json!(1), "slot {slot} fired {times} times");
    }
    let distinct: BTreeSet<&str> = slots.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(distinct.len(), slots.len());
    assert_eq!(
        fires,
        slots.len() as u64,
        "one run per slot, none outside a slot"
    );
    println!(
        "three schedulers, one every-second trigger: {} slots, each fired once",
        slots.len()
    );
}
