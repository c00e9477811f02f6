//! The `nodes` table: a node registers, heartbeats with its load, is judged `down` from its
//! own interval, and leaves on a clean shutdown; long-dead rows are forgotten.
use std::time::Duration;

use shared::Store;
use shared::store::{NodeInfo, NodeLoad};

use super::at;

fn node(id: &str, started_minute: i64) -> NodeInfo {
    NodeInfo {
        id: id.to_owned(),
        role: "all".to_owned(),
        address: format!("http://127.0.0.1:80{started_minute:02}"),
        version: "0.1.0".to_owned(),
        key_fingerprint: "f".repeat(32),
        started_at: at(started_minute),
        heartbeat_at: at(started_minute),
        heartbeat_interval: Duration::from_millis(5_000),
        in_flight: 0,
        queue_depth: 0,
        realtime_streams: 0,
    }
}

pub async fn nodes_register_heartbeat_with_their_load_and_deregister(store: &Store) {
    let a = node("node-a", 0);
    let mut b = node("node-b", 1);
    b.role = "node".to_owned();
    b.realtime_streams = 12;
    b.heartbeat_interval = Duration::from_millis(250);
    store.nodes.register(&b, at(-60)).await.expect("register");
    store.nodes.register(&a, at(-60)).await.expect("register");
    assert_eq!(
        store.nodes.list().await.expect("list"),
        vec![a.clone(), b.clone()]
    );

    let load = NodeLoad {
        in_flight: 7,
        queue_depth: 3,
        realtime_streams: 41,
    };
    assert!(
        store
            .nodes
            .heartbeat("node-a", at(2), load)
            .await
            .expect("beat")
    );
    let listed = store.nodes.list().await.expect("list");
    assert_eq!(listed[0].heartbeat_at, at(2));
    assert_eq!(
        (
            listed[0].in_flight,
            listed[0].queue_depth,
            listed[0].realtime_streams
        ),
        (7, 3, 41)
    );
    assert_eq!(
        listed[1].realtime_streams, 12,
        "another node's row is its own"
    );
    assert_eq!(listed[0].started_at, at(0), "a heartbeat keeps the start");
    assert!(
        !store
            .nodes
            .heartbeat("nobody", at(2), load)
            .await
            .expect("beat"),
        "a node without a row is told to register again"
    );

    // Registering again (a restart with the same id) replaces the row.
    let restarted = NodeInfo {
        started_at: at(3),
        heartbeat_at: at(3),
        ..a.clone()
    };
    store
        .nodes
        .register(&restarted, at(-60))
        .await
        .expect("register");
    store.nodes.deregister("node-b").await.expect("deregister");
    store
        .nodes
        .deregister("node-b")
        .await
        .expect("twice is fine");
    assert_eq!(store.nodes.list().await.expect("list"), vec![restarted]);
}

pub async fn a_node_is_down_after_missing_three_of_its_heartbeats_and_forgotten_much_later(
    store: &Store,
) {
    let old = node("node-old", 0);
    store.nodes.register(&old, at(-60)).await.expect("register");
    let listed = &store.nodes.list().await.expect("list")[0];
    let beat = listed.heartbeat_at;
    assert!(!listed.is_down(beat + chrono::Duration::seconds(15)));
    assert!(listed.is_down(beat + chrono::Duration::milliseconds(15_001)));

    // A node registering later forgets rows whose heartbeat is older than its cutoff.
    store
        .nodes
        .register(&node("node-new", 90), at(30))
        .await
        .expect("register");
    let ids: Vec<String> = store
        .nodes
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(ids, ["node-new"]);
}
