//! Retries and dead letters: a throwing handler, a failing dead-letter handler.
use super::*;

async fn a_throwing_handler_is_retried_then_dead_lettered_and_the_dead_letter_handler_runs(
    db: TestDb,
) {
    let store = new_app(&db).await;
    deploy(
        &store,
        "worker",
        r#"kv::incr("never", 1); throw "boom " + event.attempt;"#,
    )
    .await;
    deploy(
        &store,
        "on_dead",
        r#"print(event.payload.error); kv::incr("dead_seen", 1);"#,
    )
    .await;
    trigger(&store, "worker", queue("jobs"), 3).await;
    trigger(&store, "on_dead", TriggerSpec::DeadLetter {}, 5).await;
    let node = start_node(&store, dispatch("a")).await;
    let mut records = node.subscribe_recorded();

    emit(&store, vec![send("jobs", json!({"job": 1}), None)]).await;

    let mut attempts = Vec::new();
    for _ in 0..3 {
        let record = next_record(&mut records, |r| r.trigger == "queue").await;
        assert_eq!(record.status, InvocationStatus::Error);
        attempts.push((record.attempt, record.error));
    }
    assert_eq!(
        attempts.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
        vec![Some(1), Some(2), Some(3)]
    );
    for (attempt, error) in &attempts {
        let text = error.clone().unwrap_or_default();
        assert!(
            text.contains(&format!("boom {}", attempt.unwrap_or_default())),
            "{text}"
        );
    }

    let handled = next_record(&mut records, |r| r.trigger == "dead_letter").await;
    assert_eq!(handled.status, InvocationStatus::Ok, "{:?}", handled.error);
    assert_eq!(handled.script.as_str(), "on_dead");
    assert!(
        handled.logs.iter().any(|l| l.message.contains("boom 3")),
        "the dead letter handler saw the last error: {:?}",
        handled.logs
    );
    assert_eq!(kv(&store, "dead_seen").await, Some(json!(1)));
    assert_eq!(
        kv(&store, "never").await,
        None,
        "a throwing run commits nothing"
    );

    let dead = store
        .dead_letters
        .list(&app(), None, 10)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
    assert!(dead[0].error.contains("boom 3"), "{}", dead[0].error);
    assert_eq!(dead[0].payload, json!({"job": 1}));
    assert_eq!(store.outbox.pending(&app()).await.expect("pending"), 0);
    node.finish().await;
    db.close().await;
}

#[tokio::test]
async fn a_failing_dead_letter_handler_creates_no_further_dead_letter_event() {
    let db = sqlite_store().await;
    let store = new_app(&db).await;
    deploy(&store, "worker", r#"throw "first";"#).await;
    deploy(&store, "on_dead", r#"throw "the handler fails too";"#).await;
    trigger(&store, "worker", queue("jobs"), 1).await;
    trigger(&store, "on_dead", TriggerSpec::DeadLetter {}, 1).await;
    let node = start_node(&store, dispatch("a")).await;
    let mut records = node.subscribe_recorded();

    emit(&store, vec![send("jobs", json!(1), None)]).await;
    let worker = next_record(&mut records, |r| r.trigger == "queue").await;
    assert_eq!(worker.status, InvocationStatus::Error);
    let handler = next_record(&mut records, |r| r.trigger == "dead_letter").await;
    assert_eq!(handler.status, InvocationStatus::Error);

    // The handler's commit is broadcast after it committed: had it inserted another
    // dead_letter event, that row would be in the outbox now.
    assert_eq!(store.outbox.pending(&app()).await.expect("pending"), 0);
    let dead = store
        .dead_letters
        .list(&app(), None, 10)
        .await
        .expect("dead letters");
    assert_eq!(
        dead.len(),
        2,
        "the worker's and the handler's, nothing more"
    );
    assert_eq!(
        dead.iter()
            .filter(|d| d.kind == shared::EventKind::DeadLetter)
            .count(),
        1
    );
    node.finish().await;
    db.close().await;
}

on_both_backends!(
    with_db =>
    a_throwing_handler_is_retried_then_dead_lettered_and_the_dead_letter_handler_runs,
);
