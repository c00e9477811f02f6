//! Throughput: many events are dispatched at a useful rate.
use super::*;

async fn many_events_are_dispatched_at_a_useful_rate(db: TestDb) {
    const EVENTS: usize = 3000;
    let backend = db.backend();
    let store = new_app(&db).await;
    deploy(&store, "noop", r#"event.payload"#).await;
    trigger(&store, "noop", queue("bulk"), 5).await;
    let node = start_node(&store, dispatch("a")).await;
    let mut records = node.subscribe_recorded();
    let started = Instant::now();
    for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(500) {
        let sends = chunk.iter().map(|i| send("bulk", json!(i), None)).collect();
        emit(&store, sends).await;
    }
    let mut ok = 0;
    tokio::time::timeout(Duration::from_secs(120), async {
        while ok < EVENTS {
            match records.recv().await {
                Ok(r) if r.status == InvocationStatus::Ok => ok += 1,
                Ok(r) => panic!("a run failed: {:?}", r.error),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    ok += usize::try_from(n).unwrap_or(0);
                }
                Err(broadcast::error::RecvError::Closed) => panic!("closed"),
            }
        }
    })
    .await
    .expect("every event ran in time");
    let elapsed = started.elapsed();
    node.finish().await;
    println!(
        "{backend:?}: {EVENTS} events in {elapsed:?} = {:.0} events/s",
        EVENTS as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(store.outbox.pending(&app()).await.expect("pending"), 0);
    db.close().await;
}

on_both_backends!(
    with_db =>
    many_events_are_dispatched_at_a_useful_rate,
);
