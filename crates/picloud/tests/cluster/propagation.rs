//! Every node serves the public endpoints, and a change made through one node is served
//! by the others: the catalog follows the notification bus (`LISTEN/NOTIFY`).
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::node::{BOUND, Cluster, Node, quantile};

const DEPLOYS: usize = 100;

/// How long until `node` answers `path` with 200 and `body`, polled until `BOUND`.
async fn until_served(node: &Node, path: &str, body: &str) -> Duration {
    let started = Instant::now();
    loop {
        let (status, text) = node.get(path).await;
        if status == StatusCode::OK && text == body {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < BOUND,
            "{} still answers {status} {text} to {path}, not {body}",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_and_a_deploy_through_one_is_served_by_the_other() {
    let cluster = Cluster::new().await;
    let a = cluster.start("node-a", &[]).await;
    let b = cluster.start("node-b", &[]).await;

    a.create_app("shop").await;
    a.deploy("shop", "hello", r#""v0""#).await;
    a.trigger(
        "shop",
        json!({"kind": "http", "method": "GET", "path": "/hello", "script": "hello"}),
    )
    .await;
    until_served(&b, "/shop/hello", "v0").await;
    // Requests are served by every node, whichever took the change.
    for n in 0..20 {
        let node = if n % 2 == 0 { &a } else { &b };
        assert_eq!(
            node.get("/shop/hello").await,
            (StatusCode::OK, "v0".to_owned())
        );
    }

    // Deploy through a, time until b serves the new version.
    let mut took = Vec::with_capacity(DEPLOYS);
    for n in 1..=DEPLOYS {
        let version = format!("v{n}");
        let started = Instant::now();
        a.deploy("shop", "hello", &format!("{version:?}")).await;
        let deployed = started.elapsed();
        until_served(&b, "/shop/hello", &version).await;
        // From the deploy's answer: the change is committed and announced by then.
        took.push(started.elapsed().saturating_sub(deployed));
        assert_eq!(
            a.get("/shop/hello").await,
            (StatusCode::OK, version),
            "the node that deployed serves its change at once"
        );
    }
    took.sort();
    let (p50, p99) = (quantile(&took, 0.50), quantile(&took, 0.99));
    println!(
        "catalog propagation over {DEPLOYS} deploys (deploy answered on node a -> served by node b): p50 {p50:?}, p99 {p99:?}, max {:?}",
        took[took.len() - 1]
    );
    // A generous bound, not a timing: the target is under one second.
    assert!(p50 < Duration::from_secs(10), "p50 {p50:?}");

    // A route deleted through b is gone on a.
    let triggers: serde_json::Value = b
        .admin(reqwest::Method::GET, "/apps/shop/triggers")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = triggers["triggers"][0]["id"].as_str().unwrap().to_owned();
    let deleted = b
        .admin(
            reqwest::Method::DELETE,
            &format!("/apps/shop/triggers/{id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    testkit::eventually("node a drops the route", BOUND, async || {
        (a.get("/shop/hello").await.0 == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
}
