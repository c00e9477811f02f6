//! The queue history: samples taken after an app's runs (heard on the bus), never on a
//! timer, per app; `GET /api/v1/apps/{app}/queue/history` carries them forward per minute.
use super::*;
use manager_core::QueueSampler;
use shared::{Channel, InvocationId};

/// `app`'s minutes as (queue depth, dead letters), oldest first.
async fn history(t: &TestApp, app: &str, minutes: u32) -> Vec<(u64, u64)> {
    let answer = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/{app}/queue/history?minutes={minutes}"),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["minutes"]
        .as_array()
        .expect("minutes")
        .iter()
        .map(|m| {
            let n = |k: &str| m[k].as_u64().expect("a count");
            (n("queue_depth"), n("dead_letters"))
        })
        .collect()
}

async fn stored(t: &TestApp, app: &AppName) -> Vec<(u64, u64)> {
    let since = Utc::now() - chrono::Duration::hours(1);
    let samples = t.store.dead_letters.queue_history(app, since).await;
    let samples = samples.expect("history");
    samples
        .iter()
        .map(|s| (s.queue_depth, s.dead_letters))
        .collect()
}

async fn an_apps_runs_sample_its_queue_and_only_its_own(t: &TestApp) {
    let shop = t.app_with_script("shop").await;
    let blog = t.app_with_script("blog").await;
    t.dead_letter(&shop, json!(1)).await;
    t.dead_letter(&blog, json!(2)).await;
    let shutdown = CancellationToken::new();
    let task = QueueSampler::start_paced(t.store.clone(), shutdown.clone(), Duration::ZERO);

    // Nothing ran yet: nothing sampled, and the API shows the current counts.
    assert!(stored(t, &shop).await.is_empty());
    assert_eq!(history(t, "shop", 3).await, [(0, 1); 3]);

    // shop's runs are committed (the relay's notice): shop is sampled, blog is not. The
    // notice is sent again while waiting: on PostgreSQL the sampler's LISTEN may not be
    // in place yet when the first one goes out.
    let notice = format!("shop {}", InvocationId::new());
    eventually("shop's sample", BOUND, async || {
        t.store
            .bus
            .notify(Channel::Invocations, &notice)
            .await
            .expect("notify");
        (stored(t, &shop).await == [(0, 1)]).then_some(())
    })
    .await;
    assert!(stored(t, &blog).await.is_empty(), "blog did not run");
    // A malformed or "missed" notice samples nothing and stops nothing.
    for odd in ["*", "Not/An/App x"] {
        t.store.bus.notify(Channel::Invocations, odd).await.unwrap();
    }

    // A purge is sampled at once: the current minute's sample says so.
    let purged = t
        .call(Method::DELETE, "/api/v1/apps/shop/dead-letters", None)
        .await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.body);
    // (The same minute's sample replaced, or the next minute's added if one turned.)
    assert_eq!(stored(t, &shop).await.last(), Some(&(0, 0)));
    assert_eq!(history(t, "shop", 1).await, [(0, 0)]);

    // The sampler still hears notices after the odd ones.
    t.dead_letter(&blog, json!(3)).await;
    let notice = format!("blog {}", InvocationId::new());
    t.store
        .bus
        .notify(Channel::Invocations, &notice)
        .await
        .unwrap();
    eventually("blog's sample", BOUND, async || {
        (stored(t, &blog).await == [(0, 2)]).then_some(())
    })
    .await;

    for bad in ["minutes=0", "minutes=1441", "minutes=x", "hours=1"] {
        let answer = t
            .call(
                Method::GET,
                &format!("/api/v1/apps/shop/queue/history?{bad}"),
                None,
            )
            .await;
        assert_error(&answer, 400, "invalid_input");
    }
    let missing = t
        .call(Method::GET, "/api/v1/apps/nope/queue/history", None)
        .await;
    assert_error(&missing, 404, "not_found");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the sampler stops on shutdown")
        .expect("no panic");
}

on_both_backends!(
    with_app =>
    an_apps_runs_sample_its_queue_and_only_its_own,
);
