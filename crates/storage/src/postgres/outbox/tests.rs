//! The outbox on PostgreSQL across nodes and clocks.
use std::time::Duration;

use serde_json::json;
use shared::{AppName, Effects, Emit, ScriptName};
use sqlx::Connection;

const WAIT: Duration = Duration::from_secs(5);

/// A node whose clock runs 3 s ahead of the database (the database's `now()` is shadowed
/// by one 3 s behind): a row it inserts "now" is due in 3 s on the claim's clock, and
/// `next_due_at` says so on the node's clock, so the dispatcher sleeps instead of waking
/// every few milliseconds to a claim that finds nothing.
#[tokio::test]
async fn next_due_at_is_measured_on_the_database_clock() {
    let db = crate::testing::skewed_postgres_store(3).await;
    let store = &db.store;
    let app = AppName::parse("shop").expect("name");
    let script = ScriptName::parse("w").expect("name");
    store.apps.create(&app).await.expect("app");
    store
        .scripts
        .deploy(&app, &script, "1")
        .await
        .expect("deploy");
    store
        .outbox
        .apply(
            &app,
            &Effects {
                emitted: vec![Emit::InvokeAsync {
                    script,
                    payload: json!(1),
                }],
                ..Effects::default()
            },
        )
        .await
        .expect("apply");
    let claimed = store
        .outbox
        .claim_due("node", 10, Duration::from_secs(60))
        .await
        .expect("claim");
    assert!(claimed.is_empty(), "not due yet on the database's clock");
    let due = store
        .outbox
        .next_due_at()
        .await
        .expect("next due")
        .expect("a row");
    let wait = due - chrono::Utc::now();
    assert!(
        wait > chrono::Duration::seconds(2) && wait <= chrono::Duration::seconds(3),
        "due in {wait} on this node's clock"
    );
    db.close().await;
}

#[tokio::test]
async fn an_insert_on_one_node_wakes_another_node_through_notify() {
    let schema = crate::testing::TestUrl::postgres().await;
    let url = schema.url.clone();
    let a = crate::connect(&url).await.expect("node a");
    let b = crate::connect(&url).await.expect("node b");
    // The first call starts b's listener, which wakes once when it is listening.
    tokio::time::timeout(WAIT, b.outbox.inserted())
        .await
        .expect("b's listener is up");
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.outbox.inserted().await })
    };
    let app = AppName::parse("shop").expect("name");
    let script = ScriptName::parse("w").expect("name");
    a.apps.create(&app).await.expect("app");
    a.scripts.deploy(&app, &script, "1").await.expect("deploy");
    a.outbox
        .apply(
            &app,
            &Effects {
                emitted: vec![Emit::InvokeAsync {
                    script,
                    payload: json!(1),
                }],
                ..Effects::default()
            },
        )
        .await
        .expect("apply");
    tokio::time::timeout(WAIT, waiter)
        .await
        .expect("b woke on a's insert")
        .expect("waiter");
    assert_eq!(b.outbox.pending(&app).await.expect("pending"), 1);

    a.health.close().await;
    tokio::time::timeout(WAIT, b.health.close())
        .await
        .expect("closing the pool ends the listener");
    let schema = url.rsplit_once("search_path%3D").map(|(_, s)| s.to_owned());
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    if let Some(schema) = schema {
        // The schema name is ours (a fixed prefix and hex digits), never input.
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&mut conn)
            .await
            .expect("drop the test schema");
    }
    conn.close().await.ok();
}
