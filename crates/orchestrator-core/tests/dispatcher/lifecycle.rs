//! Capacity and shutdown: a full executor delays events; finish ends cleanly.
use super::*;

#[tokio::test]
async fn an_executor_at_capacity_delays_events_but_never_counts_an_attempt_or_dead_letters_them() {
    const EVENTS: usize = 8;
    let db = sqlite_store().await;
    let store = new_app(&db).await;
    deploy(
        &store,
        "busy",
        r#"let i = 0; while i < 20000 { i += 1; } kv::incr("done", 1);"#,
    )
    .await;
    // One attempt only: an overloaded executor must not use it up.
    trigger(&store, "busy", queue("busy"), 1).await;
    let node = Orchestrator::start(
        store.clone(),
        executor_with(&store, 1, 1),
        Arc::new(MailboxMailer::new(store.clone())),
        IngressConfig::default(),
        DispatchConfig {
            max_in_flight: EVENTS,
            ..dispatch("a")
        },
    )
    .await
    .expect("start orchestrator");
    let mut records = node.subscribe_recorded();

    emit(
        &store,
        (0..EVENTS).map(|i| send("busy", json!(i), None)).collect(),
    )
    .await;
    // One thread and a queue of one cannot take EVENTS at once, so most were released and
    // run later: none of that counts as an attempt.
    for _ in 0..EVENTS {
        let record = next_record(&mut records, |r| r.trigger == "queue").await;
        assert_eq!(record.status, InvocationStatus::Ok, "{:?}", record.error);
        assert_eq!(record.attempt, Some(1), "an overload is not an attempt");
    }
    assert_eq!(kv(&store, "done").await, Some(json!(EVENTS)));
    let dead = store
        .dead_letters
        .list(&app(), None, 10)
        .await
        .expect("dead letters");
    assert!(dead.is_empty(), "{dead:?}");
    node.finish().await;
    db.close().await;
}

#[tokio::test]
async fn finish_lets_a_running_event_end_and_commits_it() {
    let db = sqlite_store().await;
    let store = new_app(&db).await;
    deploy(
        &store,
        "slow",
        r#"let i = 0; while i < 300000 { i += 1; } kv::set("slow_done", i);"#,
    )
    .await;
    trigger(&store, "slow", queue("slow"), 5).await;
    let node = start_node(&store, dispatch("a")).await;
    let mut records = node.subscribe_recorded();

    emit(&store, vec![send("slow", json!(1), None)]).await;
    // Wait until the dispatcher has claimed it (or already ran it on a fast machine).
    testkit::eventually("the claim", Duration::from_secs(10), async || {
        let done = kv(&store, "slow_done").await.is_some();
        (node.events_in_flight() > 0 || done).then_some(())
    })
    .await;
    node.finish().await;

    assert_eq!(kv(&store, "slow_done").await, Some(json!(300000)));
    assert_eq!(store.outbox.pending(&app()).await.expect("pending"), 0);
    let record = records.try_recv().expect("the record was broadcast");
    assert_eq!(record.status, InvocationStatus::Ok);
    db.close().await;
}

#[tokio::test]
async fn finish_returns_promptly_when_the_dispatcher_is_idle() {
    let db = sqlite_store().await;
    let store = new_app(&db).await;
    let node = start_node(&store, dispatch("a")).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), node.finish())
        .await
        .expect("finish returned");
    assert!(started.elapsed() < Duration::from_secs(1));
    db.close().await;
}
