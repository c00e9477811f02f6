//! A published event runs its topic's subscriber.
use super::*;

async fn a_published_event_runs_its_subscriber_and_commits_its_kv_write(db: TestDb) {
    let store = new_app(&db).await;
    deploy(
        &store,
        "on_order",
        r#"kv::set("last", event.payload.n); kv::incr("seen", 1); print(event.topic);"#,
    )
    .await;
    trigger(&store, "on_order", topic("orders"), 5).await;
    let node = start_node(&store, dispatch("a")).await;
    let mut records = node.subscribe_recorded();

    emit(
        &store,
        vec![Emit::Publish {
            topic: channel("orders"),
            payload: json!({"n": 7}),
        }],
    )
    .await;
    let record = next_record(&mut records, |r| r.trigger == "topic").await;

    assert_eq!(record.status, InvocationStatus::Ok, "{:?}", record.error);
    assert_eq!(record.attempt, Some(1));
    assert_eq!(record.summary, "topic orders");
    assert_eq!(record.http_status, None);
    assert!(record.version.is_some());
    assert_eq!(
        record.logs.first().map(|l| l.message.as_str()),
        Some("orders")
    );
    assert_eq!(kv(&store, "last").await, Some(json!(7)));
    assert_eq!(kv(&store, "seen").await, Some(json!(1)));
    assert_eq!(store.outbox.pending(&app()).await.expect("pending"), 0);
    let stored = store
        .invocations
        .get(&app(), record.id)
        .await
        .expect("read record");
    assert_eq!(stored.map(|r| r.trigger), Some("topic".to_owned()));
    node.finish().await;
    db.close().await;
}

on_both_backends!(
    with_db =>
    a_published_event_runs_its_subscriber_and_commits_its_kv_write,
);
