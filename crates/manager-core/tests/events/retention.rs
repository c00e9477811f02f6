//! The retention sweeper: dead letters and invocation records.
use super::*;

async fn the_sweeper_purges_dead_letters_once_they_are_older_than_the_retention(t: &TestApp) {
    let app = t.app_with_script("shop").await;
    let retention = Duration::from_secs(2);
    let payloads = async || -> Vec<Value> {
        let letters = t.store.dead_letters.list(&app, None, 10).await;
        letters
            .expect("list")
            .into_iter()
            .map(|l| l.payload)
            .collect()
    };
    t.dead_letter(&app, json!("old")).await;
    // A dead letter ages on the wall clock, which is what the sweeper reads: this waits
    // for real time to pass, not for something to happen.
    let made = t
        .store
        .dead_letters
        .list(&app, None, 10)
        .await
        .expect("list")[0]
        .created_at;
    let aged = (made + retention - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(aged + Duration::from_millis(50)).await;
    t.dead_letter(&app, json!("young")).await;
    let shutdown = CancellationToken::new();
    let task = RetentionSweeper::start(t.store.clone(), retention, shutdown.clone());
    // The sweep that purges the old letter is the sweep that must keep the young one.
    eventually("the old letter's purge", BOUND, async || {
        (payloads().await == [json!("young")]).then_some(())
    })
    .await;
    eventually("the young letter's purge once it ages", BOUND, async || {
        payloads().await.is_empty().then_some(())
    })
    .await;
    assert_eq!(t.store.dead_letters.oldest().await.expect("oldest"), None);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the sweeper stops on shutdown")
        .expect("no panic");
}

async fn the_sweeper_purges_invocation_records_once_they_are_older_than_the_retention(t: &TestApp) {
    let app = t.app_with_script("shop").await;
    let record = |made: chrono::DateTime<Utc>| {
        let ms = u64::try_from(made.timestamp_millis()).expect("after 1970");
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, 0);
        shared::InvocationRecord {
            id: shared::InvocationId(uuid::Uuid::new_v7(ts)),
            app: app.clone(),
            script: ScriptName::parse("handler").expect("script"),
            version: Some(1),
            trigger: "http".into(),
            status: shared::InvocationStatus::Ok,
            started_at: made,
            duration_ms: 1,
            http_status: Some(200),
            summary: "GET /".into(),
            logs: Vec::new(),
            error: None,
            request_id: None,
            attempt: None,
            trace_id: None,
        }
    };
    let old = record(Utc::now() - chrono::Duration::hours(1));
    let young = record(Utc::now());
    t.store
        .invocations
        .record(&[old.clone(), young.clone()])
        .await
        .expect("record");
    let listed = async || {
        let filter = shared::store::InvocationFilter {
            limit: 10,
            ..Default::default()
        };
        let records = t.store.invocations.list(&app, &filter).await.expect("list");
        records.iter().map(|r| r.id).collect::<Vec<_>>()
    };
    let shutdown = CancellationToken::new();
    let task = InvocationSweeper::start(t.store.clone(), Duration::from_secs(3), shutdown.clone());
    eventually("the old record's purge", BOUND, async || {
        (listed().await == vec![young.id]).then_some(())
    })
    .await;
    eventually("the young record's purge", BOUND, async || {
        (listed().await.is_empty()).then_some(())
    })
    .await;
    assert_eq!(t.store.invocations.oldest().await.expect("oldest"), None);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the sweeper stops on shutdown")
        .expect("no panic");
}

on_both_backends!(
    with_app =>
    the_sweeper_purges_dead_letters_once_they_are_older_than_the_retention,
    the_sweeper_purges_invocation_records_once_they_are_older_than_the_retention,
);
