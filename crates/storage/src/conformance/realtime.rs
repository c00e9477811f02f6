//! Realtime behaviour: exposure, the signing key, CORS origins and the durable replay
//! buffer. Events enter the buffer through `store.outbox.apply` (the path a run's
//! `pubsub::publish` takes), so what is tested is what subscribers get.
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use shared::bus::{Channel, Heard};
use shared::store::RealtimeBounds;
use shared::{ChannelName, Effects, Emit, Store, StoreError};

use super::app;

fn topic(name: &str) -> ChannelName {
    ChannelName::parse(name).expect("a valid topic name")
}

fn publishes(items: &[(&str, Value)]) -> Effects {
    Effects {
        emitted: items
            .iter()
            .map(|(t, payload)| Emit::Publish {
                topic: topic(t),
                payload: payload.clone(),
            })
            .collect(),
        ..Effects::default()
    }
}

async fn publish(store: &Store, app_name: &str, items: &[(&str, Value)]) {
    store
        .outbox
        .apply(&app(app_name), &publishes(items))
        .await
        .expect("apply");
}

/// (id, topic, payload) of every buffered event of `app_name` after `after`.
async fn buffered(store: &Store, app_name: &str, after: u64) -> Vec<(u64, String, String)> {
    store
        .realtime
        .events_after(&app(app_name), after, 1000)
        .await
        .expect("events_after")
        .into_iter()
        .map(|e| (e.id, e.topic.to_string(), e.payload))
        .collect()
}

async fn bounds(store: &Store, app_name: &str) -> RealtimeBounds {
    store.realtime.bounds(&app(app_name)).await.expect("bounds")
}

async fn exposed_app(store: &Store, name: &str, topics: &[&str]) {
    store.apps.create(&app(name)).await.expect("create app");
    for t in topics {
        assert!(
            store
                .realtime
                .expose(&app(name), &topic(t))
                .await
                .expect("expose")
        );
    }
}

pub async fn realtime_topics_are_exposed_once_listed_by_name_and_unexposed(store: &Store) {
    store.apps.create(&app("shop")).await.expect("create app");
    let shop = app("shop");
    let list = async || store.realtime.topics(&shop).await.expect("topics");
    assert!(list().await.is_empty());
    assert!(
        store
            .realtime
            .expose(&shop, &topic("orders"))
            .await
            .expect("expose")
    );
    assert!(
        store
            .realtime
            .expose(&shop, &topic("chat"))
            .await
            .expect("expose")
    );
    assert!(
        !store
            .realtime
            .expose(&shop, &topic("orders"))
            .await
            .expect("again"),
        "exposing twice changes nothing"
    );
    assert_eq!(list().await, [topic("chat"), topic("orders")]);
    assert!(
        store
            .realtime
            .unexpose(&shop, &topic("orders"))
            .await
            .expect("unexpose")
    );
    assert!(
        !store
            .realtime
            .unexpose(&shop, &topic("orders"))
            .await
            .expect("again")
    );
    assert!(
        !store
            .realtime
            .unexpose(&shop, &topic("never"))
            .await
            .expect("never")
    );
    assert_eq!(list().await, [topic("chat")]);
    let err = store
        .realtime
        .expose(&app("ghost"), &topic("orders"))
        .await
        .expect_err("missing app");
    assert!(matches!(err, StoreError::NotFound("app")), "{err:?}");
}

pub async fn realtime_only_exposed_topics_enter_the_buffer_with_ids_from_one_in_order(
    store: &Store,
) {
    exposed_app(store, "shop", &["orders"]).await;
    assert_eq!(
        bounds(store, "shop").await,
        RealtimeBounds { oldest: 1, last: 0 }
    );
    publish(
        store,
        "shop",
        &[
            ("orders", json!({"n": 1})),
            ("private", json!("not exposed")),
            ("orders", json!([2, "two"])),
        ],
    )
    .await;
    publish(store, "shop", &[("orders", json!(null))]).await;
    assert_eq!(
        buffered(store, "shop", 0).await,
        [
            (1, "orders".into(), r#"{"n":1}"#.into()),
            (2, "orders".into(), r#"[2,"two"]"#.into()),
            (3, "orders".into(), "null".into()),
        ],
        "the payload is stored as the JSON text that goes on the wire"
    );
    assert_eq!(
        bounds(store, "shop").await,
        RealtimeBounds { oldest: 1, last: 3 }
    );
    // Replay after an id, in pages.
    let after = |after: u64, limit: u32| async move {
        let shop = app("shop");
        let events = store.realtime.events_after(&shop, after, limit).await;
        let events = events.expect("events_after");
        events.into_iter().map(|e| e.id).collect::<Vec<_>>()
    };
    assert_eq!(after(1, 1000).await, [2, 3]);
    assert_eq!(after(0, 2).await, [1, 2]);
    assert_eq!(after(3, 10).await, Vec::<u64>::new());
    assert_eq!(after(u64::MAX, 10).await, Vec::<u64>::new());
    let event = &store
        .realtime
        .events_after(&app("shop"), 0, 1)
        .await
        .expect("events_after")[0];
    assert!((Utc::now() - event.created_at).num_seconds().abs() < 3600);

    // After unexpose, new publishes on it no longer enter the buffer; what is there stays.
    store
        .realtime
        .unexpose(&app("shop"), &topic("orders"))
        .await
        .expect("unexpose");
    publish(store, "shop", &[("orders", json!(4))]).await;
    assert_eq!(
        bounds(store, "shop").await,
        RealtimeBounds { oldest: 1, last: 3 }
    );
}

pub async fn realtime_ids_of_concurrent_commits_are_distinct_consecutive_and_replayed_in_order(
    store: &Store,
) {
    exposed_app(store, "shop", &["orders"]).await;
    let runs: Vec<_> = (0..10)
        .map(|run| {
            let store = store.clone();
            tokio::spawn(async move {
                let items: Vec<(&str, Value)> =
                    (0..3).map(|n| ("orders", json!([run, n]))).collect();
                publish(&store, "shop", &items).await;
            })
        })
        .collect();
    for run in runs {
        run.await.expect("task");
    }
    let events = buffered(store, "shop", 0).await;
    let ids: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(ids, (1..=30).collect::<Vec<_>>());
    // Each run's three events are consecutive and in publish order: a commit takes its
    // ids at once, so no other run's ids fall between them.
    for chunk in events.chunks(3) {
        let run: Vec<Value> = chunk
            .iter()
            .map(|e| serde_json::from_str(&e.2).expect("json"))
            .collect();
        let first = run[0][0].clone();
        assert_eq!(
            run,
            [json!([first, 0]), json!([first, 1]), json!([first, 2])],
            "{events:?}"
        );
    }
    assert_eq!(
        bounds(store, "shop").await,
        RealtimeBounds {
            oldest: 1,
            last: 30
        }
    );
}

pub async fn realtime_a_commit_tells_the_bus_its_apps_newest_id(store: &Store) {
    exposed_app(store, "shop", &["orders"]).await;
    let mut heard = store.bus.subscribe();
    // PostgreSQL's bus listens on a connection of its own, which may not be listening yet
    // when the first commit notifies (it then says `Missed`): commit until a notice comes.
    let mut commits = 0u64;
    let notice = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            publish(store, "shop", &[("orders", json!(1)), ("orders", json!(2))]).await;
            commits += 1;
            let next = tokio::time::timeout(Duration::from_millis(500), async {
                loop {
                    if let Heard::Notice {
                        channel: Channel::Realtime,
                        payload,
                        ..
                    } = heard.recv().await.expect("the bus is open")
                    {
                        return payload.to_string();
                    }
                }
            });
            if let Ok(notice) = next.await {
                return notice;
            }
        }
    })
    .await
    .expect("a realtime notice within 20 s");
    // Each commit of two events names the app's newest id then: an even one.
    let id: u64 = notice
        .strip_prefix("shop ")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not `shop <id>`: {notice:?}"));
    assert!(
        id >= 2 && id.is_multiple_of(2) && id <= 2 * commits,
        "{notice} after {commits} commits"
    );
}

pub async fn realtime_prune_keeps_each_apps_newest_events_and_drops_old_ones(store: &Store) {
    exposed_app(store, "shop", &["orders"]).await;
    exposed_app(store, "blog", &["posts"]).await;
    assert_eq!(store.realtime.oldest().await.expect("oldest"), None);
    let before = Utc::now() - chrono::Duration::seconds(1);
    for n in 0..5 {
        publish(store, "shop", &[("orders", json!(n))]).await;
    }
    publish(store, "blog", &[("posts", json!(0)), ("posts", json!(1))]).await;
    let long_ago = Utc::now() - chrono::Duration::hours(1);
    // The oldest event of any app: when the next age prune is due.
    let oldest = store.realtime.oldest().await.expect("oldest");
    assert!(
        oldest.is_some_and(|at| at >= before && at <= Utc::now() + chrono::Duration::seconds(1)),
        "{oldest:?}"
    );

    // By count: shop keeps its newest 3 (ids 3..=5), blog both of its 2.
    assert_eq!(store.realtime.prune(3, long_ago).await.expect("prune"), 2);
    let ids =
        |events: Vec<(u64, String, String)>| events.into_iter().map(|e| e.0).collect::<Vec<_>>();
    assert_eq!(ids(buffered(store, "shop", 0).await), [3, 4, 5]);
    assert_eq!(ids(buffered(store, "blog", 0).await), [1, 2]);
    assert_eq!(
        bounds(store, "shop").await,
        RealtimeBounds { oldest: 3, last: 5 }
    );
    assert_eq!(store.realtime.prune(3, long_ago).await.expect("again"), 0);

    // By age: everything made before a cutoff in the future goes; ids go on from the last.
    let later = Utc::now() + chrono::Duration::hours(1);
    assert_eq!(store.realtime.prune(1000, later).await.expect("prune"), 5);
    assert!(buffered(store, "shop", 0).await.is_empty());
    assert_eq!(store.realtime.oldest().await.expect("oldest"), None);
    assert_eq!(
        bounds(store, "shop").await,
        RealtimeBounds { oldest: 6, last: 5 },
        "an empty buffer starts after the last id handed out"
    );
    publish(store, "shop", &[("orders", json!("next"))]).await;
    assert_eq!(ids(buffered(store, "shop", 0).await), [6]);
    assert_eq!(
        bounds(store, "shop").await,
        RealtimeBounds { oldest: 6, last: 6 }
    );
}

pub async fn realtime_one_apps_buffer_topics_key_and_origins_are_its_own(store: &Store) {
    exposed_app(store, "shop", &["orders"]).await;
    exposed_app(store, "blog", &["posts"]).await;
    publish(
        store,
        "shop",
        &[("orders", json!(1)), ("posts", json!("shop's"))],
    )
    .await;
    publish(
        store,
        "blog",
        &[("posts", json!(1)), ("orders", json!("blog's"))],
    )
    .await;
    // Each app's ids start at 1; a topic another app exposed is not exposed here.
    assert_eq!(
        buffered(store, "shop", 0).await,
        [(1, "orders".into(), "1".into())]
    );
    assert_eq!(
        buffered(store, "blog", 0).await,
        [(1, "posts".into(), "1".into())]
    );
    assert_eq!(
        store.realtime.topics(&app("shop")).await.expect("topics"),
        [topic("orders")]
    );

    let shop_key = store.realtime.key(&app("shop")).await.expect("key");
    let blog_key = store.realtime.key(&app("blog")).await.expect("key");
    assert_ne!(shop_key, blog_key);
    store
        .realtime
        .set_cors_origins(&app("shop"), &["https://shop.example".into()])
        .await
        .expect("cors");
    let blog = store
        .realtime
        .access(&app("blog"))
        .await
        .expect("access")
        .expect("app");
    assert!(blog.cors_origins.is_empty());
    assert_eq!(blog.exposed, [topic("posts")]);

    // Pruning one app's buffer by count leaves the other's alone.
    for n in 2..=4 {
        publish(store, "shop", &[("orders", json!(n))]).await;
    }
    store
        .realtime
        .prune(1, Utc::now() - chrono::Duration::hours(1))
        .await
        .expect("prune");
    assert_eq!(
        bounds(store, "shop").await,
        RealtimeBounds { oldest: 4, last: 4 }
    );
    assert_eq!(
        bounds(store, "blog").await,
        RealtimeBounds { oldest: 1, last: 1 }
    );

    // Deleting an app takes its realtime state with it; a new app of the name starts over.
    store.apps.delete(&app("shop")).await.expect("delete");
    assert!(
        store
            .realtime
            .access(&app("shop"))
            .await
            .expect("access")
            .is_none()
    );
    store.apps.create(&app("shop")).await.expect("create again");
    assert!(
        store
            .realtime
            .topics(&app("shop"))
            .await
            .expect("topics")
            .is_empty()
    );
    assert_eq!(
        bounds(store, "shop").await,
        RealtimeBounds { oldest: 1, last: 0 }
    );
    assert!(buffered(store, "shop", 0).await.is_empty());
    let access = store
        .realtime
        .access(&app("shop"))
        .await
        .expect("access")
        .expect("app");
    assert_eq!(access.key, None, "the old key went with the old app");
    assert_ne!(
        store.realtime.key(&app("shop")).await.expect("key"),
        shop_key
    );
}

pub async fn realtime_the_key_is_made_once_kept_sealed_and_rotated(store: &Store) {
    store.apps.create(&app("shop")).await.expect("create app");
    let shop = app("shop");
    let access = store
        .realtime
        .access(&shop)
        .await
        .expect("access")
        .expect("app");
    assert_eq!(access.key, None, "no key before the first token");
    assert!(access.exposed.is_empty() && access.cors_origins.is_empty());

    // Two nodes asking for the first key at once get the same one.
    let (a, b) = tokio::join!(store.realtime.key(&shop), store.realtime.key(&shop));
    let key = a.expect("key");
    assert_eq!(b.expect("key"), key);
    assert_eq!(key.len(), shared::realtime::KEY_BYTES);
    assert_eq!(store.realtime.key(&shop).await.expect("again"), key);
    let access = store
        .realtime
        .access(&shop)
        .await
        .expect("access")
        .expect("app");
    assert_eq!(access.key.as_deref(), Some(key.as_slice()));

    // The key is an app secret no user can name, list or read.
    store
        .settings
        .secret_set(&shop, "api", "v")
        .await
        .expect("secret");
    assert_eq!(
        store.settings.secret_names(&shop).await.expect("names"),
        ["api"]
    );

    store.realtime.rotate_key(&shop).await.expect("rotate");
    let rotated = store.realtime.key(&shop).await.expect("key");
    assert_ne!(rotated, key);
    assert_eq!(rotated.len(), shared::realtime::KEY_BYTES);
    assert_eq!(store.realtime.key(&shop).await.expect("again"), rotated);

    for err in [
        store.realtime.key(&app("ghost")).await.expect_err("key"),
        store
            .realtime
            .rotate_key(&app("ghost"))
            .await
            .expect_err("rotate"),
        store
            .realtime
            .set_cors_origins(&app("ghost"), &["*".into()])
            .await
            .expect_err("cors"),
    ] {
        assert!(matches!(err, StoreError::NotFound("app")), "{err:?}");
    }
    assert!(
        store
            .realtime
            .access(&app("ghost"))
            .await
            .expect("access")
            .is_none()
    );
}

pub async fn realtime_cors_origins_are_replaced_whole(store: &Store) {
    store.apps.create(&app("shop")).await.expect("create app");
    let shop = app("shop");
    let origins = async || {
        let access = store.realtime.access(&shop).await.expect("access");
        access.expect("app").cors_origins
    };
    assert!(origins().await.is_empty());
    let two = vec![
        "https://a.example".to_owned(),
        "https://b.example".to_owned(),
    ];
    store
        .realtime
        .set_cors_origins(&shop, &two)
        .await
        .expect("set");
    assert_eq!(origins().await, two);
    store
        .realtime
        .set_cors_origins(&shop, &["*".into()])
        .await
        .expect("set");
    assert_eq!(origins().await, ["*"]);
    store
        .realtime
        .set_cors_origins(&shop, &[])
        .await
        .expect("clear");
    assert!(origins().await.is_empty());
}
