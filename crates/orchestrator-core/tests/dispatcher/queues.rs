//! Queues: delayed sends, waking when idle, two dispatchers, expired leases.
use super::*;

#[tokio::test]
async fn a_delayed_send_runs_only_after_its_delay() {
    let db = sqlite_store().await;
    let store = new_app(&db).await;
    deploy(&store, "worker", r#"kv::set("ran", true);"#).await;
    trigger(&store, "worker", queue("later"), 5).await;
    let node = start_node(&store, dispatch("a")).await;
    let mut records = node.subscribe_recorded();

    let sent = Instant::now();
    let sent_at = chrono::Utc::now();
    emit(
        &store,
        vec![send("later", json!(1), Some(Duration::from_millis(300)))],
    )
    .await;
    let early = tokio::time::timeout(Duration::from_millis(150), records.recv()).await;
    assert!(early.is_err(), "nothing runs before the delay");
    assert_eq!(kv(&store, "ran").await, None);

    let record = next_record(&mut records, |r| r.trigger == "queue").await;
    assert!(
        sent.elapsed() >= Duration::from_millis(290),
        "{:?}",
        sent.elapsed()
    );
    assert!(
        record.started_at - sent_at >= chrono::Duration::milliseconds(290),
        "started {:?} after the send",
        record.started_at - sent_at
    );
    assert!(sent.elapsed() < Duration::from_secs(3), "and soon after it");
    assert_eq!(kv(&store, "ran").await, Some(json!(true)));
    node.finish().await;
    db.close().await;
}

#[tokio::test]
async fn an_event_inserted_after_the_dispatcher_went_idle_runs_within_a_second() {
    let db = postgres_store().await;
    let store = new_app(&db).await;
    deploy(&store, "on_ping", r#"kv::incr("pings", 1);"#).await;
    trigger(&store, "on_ping", topic("ping"), 5).await;
    let node = start_node(&store, dispatch("a")).await;
    let mut records = node.subscribe_recorded();
    // An empty outbox: the dispatcher has nothing due and no timer to wait for.
    assert_eq!(store.outbox.next_due_at().await.expect("next due"), None);
    // Real time is the point: the dispatcher sits idle a while before the first insert.
    tokio::time::sleep(Duration::from_millis(300)).await;

    const ROUNDS: usize = 20;
    let mut delays = Vec::with_capacity(ROUNDS);
    for round in 1..=ROUNDS {
        let published = Instant::now();
        let published_at = chrono::Utc::now();
        emit(
            &store,
            vec![Emit::Publish {
                topic: channel("ping"),
                payload: json!(round),
            }],
        )
        .await;
        let record = next_record(&mut records, |r| r.trigger == "topic").await;
        assert!(
            published.elapsed() < Duration::from_secs(1),
            "round {round} took {:?}",
            published.elapsed()
        );
        delays.push(
            (record.started_at - published_at)
                .num_microseconds()
                .unwrap_or(0),
        );
    }
    delays.sort_unstable();
    println!(
        "publish -> start: p50 {} us, max {} us",
        delays[ROUNDS / 2],
        delays[ROUNDS - 1]
    );
    assert_eq!(kv(&store, "pings").await, Some(json!(ROUNDS)));
    node.finish().await;
    db.close().await;
}

/// Counts the successful `queue` records one node broadcasts.
fn count_queue_runs(
    node: &Arc<Orchestrator>,
    ok: mpsc::UnboundedSender<&'static str>,
    name: &'static str,
) {
    let mut rx = node.subscribe_recorded();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(r) if r.trigger == "queue" && r.status == InvocationStatus::Ok => {
                    if ok.send(name).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    panic!("missed {n} records")
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

#[tokio::test]
async fn two_dispatchers_on_one_postgres_schema_apply_each_event_exactly_once() {
    const EVENTS: usize = 1000;
    let schema = storage::testing::TestUrl::postgres().await;
    let url = schema.url.clone();
    // Two nodes: two pools on one schema, as two processes would have.
    let store = storage::connect(&url).await.expect("node a's store");
    let other = storage::connect(&url).await.expect("node b's store");
    store.apps.create(&app()).await.expect("create app");
    deploy(
        &store,
        "count",
        r#"kv::incr("total", 1); kv::incr("e-" + event.payload.i, 1);"#,
    )
    .await;
    trigger(&store, "count", queue("work"), 5).await;
    let small_batches = |node: &str| DispatchConfig {
        batch_size: 25,
        max_in_flight: 16,
        ..dispatch(node)
    };
    let a = start_node(&store, small_batches("node-a")).await;
    let b = start_node(&other, small_batches("node-b")).await;
    let (ok, mut done) = mpsc::unbounded_channel();
    count_queue_runs(&a, ok.clone(), "a");
    count_queue_runs(&b, ok, "b");

    for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(100) {
        let sends = chunk
            .iter()
            .map(|i| send("work", json!({"i": i}), None))
            .collect();
        emit(&store, sends).await;
    }
    let (mut by_a, mut by_b) = (0, 0);
    tokio::time::timeout(Duration::from_secs(120), async {
        while by_a + by_b < EVENTS {
            match done.recv().await.expect("a record") {
                "a" => by_a += 1,
                _ => by_b += 1,
            }
        }
    })
    .await
    .expect("every event ran in time");
    a.finish().await;
    b.finish().await;

    assert!(by_a > 0 && by_b > 0, "both nodes worked: {by_a} and {by_b}");
    assert_eq!(kv(&store, "total").await, Some(json!(EVENTS)));
    let entries = store
        .kv
        .list(&app(), "e-", None, 5000)
        .await
        .expect("kv list");
    assert_eq!(entries.len(), EVENTS);
    assert!(entries.iter().all(|e| e.value == json!(1)));
    assert_eq!(store.outbox.pending(&app()).await.expect("pending"), 0);
    store.health.close().await;
    other.health.close().await;
    schema.close().await;
}

async fn an_expired_lease_is_claimed_again_and_run(db: TestDb) {
    let store = new_app(&db).await;
    deploy(&store, "worker", r#"kv::incr("runs", 1);"#).await;
    trigger(&store, "worker", queue("jobs"), 5).await;
    emit(&store, vec![send("jobs", json!(1), None)]).await;
    // A node claims it and dies without committing.
    let lease = Duration::from_millis(400);
    let claimed = store
        .outbox
        .claim_due("crashed-node", 10, lease)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let claimed_at = Instant::now();

    let node = start_node(&store, dispatch("survivor")).await;
    let mut records = node.subscribe_recorded();
    let record = next_record(&mut records, |r| r.trigger == "queue").await;
    assert_eq!(record.status, InvocationStatus::Ok);
    assert!(
        claimed_at.elapsed() >= Duration::from_millis(380),
        "it ran only after the lease expired ({:?})",
        claimed_at.elapsed()
    );
    assert_eq!(kv(&store, "runs").await, Some(json!(1)));
    assert_eq!(store.outbox.pending(&app()).await.expect("pending"), 0);
    node.finish().await;
    db.close().await;
}

on_both_backends!(
    with_db =>
    an_expired_lease_is_claimed_again_and_run,
);
