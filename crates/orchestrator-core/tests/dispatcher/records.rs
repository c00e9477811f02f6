//! Successful runs' records: stored up to the node's budget per second, every one with 0.
use super::*;

use shared::store::InvocationFilter;

const EVENTS: usize = 40;

/// Runs `EVENTS` successful events on a node with `per_sec` as its budget of successful
/// records; every event's effect is committed once. Returns the records stored and the
/// seconds the runs took (rounded up).
async fn run_successes(db: &TestDb, per_sec: u32) -> (Vec<InvocationRecord>, u32) {
    let store = new_app(db).await;
    deploy(&store, "count", r#"kv::incr("runs", 1);"#).await;
    trigger(&store, "count", queue("work"), 5).await;
    let node = start_node(
        &store,
        DispatchConfig {
            recorded_successes_per_sec: per_sec,
            ..dispatch("a")
        },
    )
    .await;
    let started = Instant::now();
    emit(
        &store,
        (0..EVENTS).map(|i| send("work", json!(i), None)).collect(),
    )
    .await;
    tokio::time::timeout(PATIENCE, async {
        while kv(&store, "runs").await != Some(json!(EVENTS)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every event ran in time");
    let seconds = u32::try_from(started.elapsed().as_secs()).unwrap_or(u32::MAX) + 1;
    node.finish().await;
    assert_eq!(
        kv(&store, "runs").await,
        Some(json!(EVENTS)),
        "each ran once"
    );
    assert_eq!(store.outbox.pending(&app()).await.expect("pending"), 0);
    let filter = InvocationFilter {
        limit: 500,
        ..InvocationFilter::default()
    };
    let records = store
        .invocations
        .list(&app(), &filter)
        .await
        .expect("list records");
    assert!(records.iter().all(|r| r.status == InvocationStatus::Ok));
    (records, seconds)
}

async fn successes_past_the_nodes_record_budget_commit_their_effects_but_no_record(db: TestDb) {
    const PER_SEC: u32 = 2;
    let (records, seconds) = run_successes(&db, PER_SEC).await;
    assert!(
        !records.is_empty(),
        "the first runs of a second are recorded"
    );
    // The budget, and the app's first success of each second past it.
    let bound = usize::try_from((PER_SEC + 1) * (seconds + 1)).expect("bound");
    assert!(
        records.len() <= bound,
        "{} records in {seconds} s",
        records.len()
    );
    db.close().await;
}

async fn with_a_budget_of_0_every_successful_run_is_recorded(db: TestDb) {
    let (records, _) = run_successes(&db, 0).await;
    assert_eq!(records.len(), EVENTS);
    db.close().await;
}

on_both_backends!(
    with_db =>
    successes_past_the_nodes_record_budget_commit_their_effects_but_no_record,
    with_a_budget_of_0_every_successful_run_is_recorded,
);
