//! KV behaviour: reads through `store.kv`, writes through `store.outbox.apply` (the path a
//! sync run's effects take), so what is tested is what scripts get.
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use shared::store::KvEntry;
use shared::{Effects, KvWrite, Store, StoreError};

use super::app;

pub(super) fn set(key: &str, value: Value) -> KvWrite {
    KvWrite::Set {
        key: key.into(),
        value,
        ttl: None,
    }
}

pub(super) fn kv(writes: Vec<KvWrite>) -> Effects {
    Effects {
        kv: writes,
        ..Effects::default()
    }
}

async fn keys(
    store: &Store,
    app_name: &str,
    prefix: &str,
    after: Option<&str>,
    limit: u32,
) -> Vec<String> {
    store
        .kv
        .list(&app(app_name), prefix, after, limit)
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.key)
        .collect()
}

pub async fn kv_entries_can_be_set_read_listed_by_prefix_and_deleted(store: &Store) {
    store.apps.create(&app("shop")).await.expect("create app");
    let shop = app("shop");
    store
        .outbox
        .apply(
            &shop,
            &kv(vec![
                set("user/1", json!({"name": "ada", "tags": [1, 2]})),
                set("user/2", json!(null)),
                set("users", json!("not under user/")),
                set("cart/1", json!(3.5)),
            ]),
        )
        .await
        .expect("apply");
    let entry = store
        .kv
        .get(&shop, "user/1")
        .await
        .expect("get")
        .expect("set");
    assert_eq!(entry.value, json!({"name": "ada", "tags": [1, 2]}));
    assert_eq!(entry.expires_at, None);
    assert_eq!(
        store
            .kv
            .get(&shop, "user/2")
            .await
            .expect("get")
            .map(|e| e.value),
        Some(Value::Null),
        "a stored null is an entry, not a missing key"
    );
    assert_eq!(
        keys(store, "shop", "user/", None, 10).await,
        ["user/1", "user/2"]
    );
    assert_eq!(
        keys(store, "shop", "", None, 10).await,
        ["cart/1", "user/1", "user/2", "users"]
    );

    assert!(store.kv.delete(&shop, "user/1").await.expect("delete"));
    assert!(
        !store
            .kv
            .delete(&shop, "user/1")
            .await
            .expect("delete again")
    );
    assert!(store.kv.get(&shop, "user/1").await.expect("get").is_none());
    store
        .outbox
        .apply(
            &shop,
            &kv(vec![
                KvWrite::Delete {
                    key: "user/2".into(),
                },
                set("cart/1", json!(4)),
            ]),
        )
        .await
        .expect("apply");
    assert_eq!(keys(store, "shop", "", None, 10).await, ["cart/1", "users"]);
    assert_eq!(
        store
            .kv
            .get(&shop, "cart/1")
            .await
            .expect("get")
            .expect("kept")
            .value,
        json!(4)
    );
}

pub async fn kv_lists_page_with_the_after_cursor_without_gaps_or_repeats(store: &Store) {
    store.apps.create(&app("shop")).await.expect("create app");
    let writes = (0..25)
        .map(|i| set(&format!("k/{i:02}"), json!(i)))
        .collect();
    store
        .outbox
        .apply(&app("shop"), &kv(writes))
        .await
        .expect("apply");
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = keys(store, "shop", "k/", after.as_deref(), 10).await;
        assert!(page.len() <= 10);
        let Some(last) = page.last().cloned() else {
            break;
        };
        seen.extend(page);
        after = Some(last);
    }
    let expected: Vec<String> = (0..25).map(|i| format!("k/{i:02}")).collect();
    assert_eq!(seen, expected);
}

pub async fn kv_entries_past_their_ttl_are_invisible_and_overwritten_by_set(store: &Store) {
    store.apps.create(&app("shop")).await.expect("create app");
    let shop = app("shop");
    let ttl = |key: &str, secs: u64| KvWrite::Set {
        key: key.into(),
        value: json!("v"),
        ttl: Some(Duration::from_secs(secs)),
    };
    store
        .outbox
        .apply(
            &shop,
            &kv(vec![
                ttl("gone", 0),
                ttl("alive", 3600),
                set("plain", json!(1)),
            ]),
        )
        .await
        .expect("apply");
    assert!(store.kv.get(&shop, "gone").await.expect("get").is_none());
    let alive = store
        .kv
        .get(&shop, "alive")
        .await
        .expect("get")
        .expect("alive");
    assert!(alive.expires_at.is_some_and(|at| at > alive.updated_at));
    assert_eq!(keys(store, "shop", "", None, 10).await, ["alive", "plain"]);
    assert!(!store.kv.delete(&shop, "gone").await.expect("delete"));

    // An expired counter starts again from zero; a set replaces the expiry.
    store
        .outbox
        .apply(
            &shop,
            &kv(vec![
                KvWrite::Set {
                    key: "n".into(),
                    value: json!(41),
                    ttl: Some(Duration::ZERO),
                },
                KvWrite::Incr {
                    key: "n".into(),
                    by: 5,
                },
                set("gone", json!("back")),
            ]),
        )
        .await
        .expect("apply");
    let n = store.kv.get(&shop, "n").await.expect("get").expect("n");
    assert_eq!(n.value, json!(5));
    assert_eq!(n.expires_at, None);
    let back = store
        .kv
        .get(&shop, "gone")
        .await
        .expect("get")
        .expect("set again");
    assert_eq!(back.value, json!("back"));
    assert_eq!(back.expires_at, None);
}

pub async fn kv_increments_start_at_zero_and_twenty_concurrent_applies_all_count(store: &Store) {
    store.apps.create(&app("shop")).await.expect("create app");
    let shop = app("shop");
    store
        .outbox
        .apply(
            &shop,
            &kv(vec![KvWrite::Incr {
                key: "n".into(),
                by: -3,
            }]),
        )
        .await
        .expect("first incr");
    assert_eq!(
        store
            .kv
            .get(&shop, "n")
            .await
            .expect("get")
            .expect("n")
            .value,
        json!(-3)
    );
    let runs: Vec<_> = (0..20)
        .map(|_| {
            let (store, shop) = (store.clone(), shop.clone());
            tokio::spawn(async move {
                store
                    .outbox
                    .apply(
                        &shop,
                        &kv(vec![KvWrite::Incr {
                            key: "n".into(),
                            by: 2,
                        }]),
                    )
                    .await
            })
        })
        .collect();
    for run in runs {
        run.await.expect("join").expect("incr");
    }
    assert_eq!(
        store
            .kv
            .get(&shop, "n")
            .await
            .expect("get")
            .expect("n")
            .value,
        json!(37)
    );
}

pub async fn kv_incrementing_a_non_integer_is_a_conflict_and_commits_nothing(store: &Store) {
    store.apps.create(&app("shop")).await.expect("create app");
    let shop = app("shop");
    store
        .outbox
        .apply(
            &shop,
            &kv(vec![
                set("s", json!("7")),
                set("f", json!(1.5)),
                set("o", json!({"a": 1})),
            ]),
        )
        .await
        .expect("apply");
    for key in ["s", "f", "o"] {
        let err = store
            .outbox
            .apply(
                &shop,
                &kv(vec![
                    set("side", json!(true)),
                    KvWrite::Incr {
                        key: key.into(),
                        by: 1,
                    },
                ]),
            )
            .await
            .expect_err("incr of a non-integer");
        assert!(
            matches!(err, StoreError::Conflict("kv integer")),
            "{key}: {err:?}"
        );
    }
    assert_eq!(
        store
            .kv
            .get(&shop, "s")
            .await
            .expect("get")
            .expect("s")
            .value,
        json!("7")
    );
    assert_eq!(
        store
            .kv
            .get(&shop, "f")
            .await
            .expect("get")
            .expect("f")
            .value,
        json!(1.5)
    );
    assert!(
        store.kv.get(&shop, "side").await.expect("get").is_none(),
        "the apply rolled back"
    );
}

pub async fn kv_an_increment_past_the_64_bit_range_is_a_conflict_and_keeps_the_value(
    store: &Store,
) {
    store.apps.create(&app("shop")).await.expect("create app");
    let shop = app("shop");
    let big = 5_000_000_000_000_000_000_i64; // 19 digits, well inside the range
    let writes = vec![
        set("max", json!(i64::MAX)),
        set("min", json!(i64::MIN)),
        set("big", json!(big)),
    ];
    store.outbox.apply(&shop, &kv(writes)).await.expect("apply");
    for (key, by) in [("max", 1), ("min", -1), ("big", i64::MAX)] {
        let err = store
            .outbox
            .apply(
                &shop,
                &kv(vec![KvWrite::Incr {
                    key: key.into(),
                    by,
                }]),
            )
            .await
            .expect_err("an overflowing increment");
        assert!(
            matches!(err, StoreError::Conflict("kv integer")),
            "{key}: {err:?}"
        );
    }
    let incr = |key: &str, by: i64| KvWrite::Incr {
        key: key.into(),
        by,
    };
    let writes = vec![
        incr("max", -1),
        incr("min", 1),
        incr("big", 1),
        incr("new", i64::MIN),
    ];
    store
        .outbox
        .apply(&shop, &kv(writes))
        .await
        .expect("in range");
    for (key, value) in [
        ("max", i64::MAX - 1),
        ("min", i64::MIN + 1),
        ("big", big + 1),
        ("new", i64::MIN),
    ] {
        let entry = store.kv.get(&shop, key).await.expect("get").expect("entry");
        assert_eq!(entry.value, json!(value), "{key}");
    }
}

pub async fn kv_one_app_never_sees_or_lists_another_apps_keys_even_with_crafted_names(
    store: &Store,
) {
    store.apps.create(&app("a")).await.expect("create app");
    store.apps.create(&app("b")).await.expect("create app");
    let long = "x".repeat(4096);
    let crafted = [
        "../b/x",
        "%",
        "_",
        "b/%",
        "\\",
        "'; DROP TABLE kv; --",
        long.as_str(),
        "é/ü",
    ];
    let writes = crafted.iter().map(|k| set(k, json!("b's"))).collect();
    store
        .outbox
        .apply(&app("b"), &kv(writes))
        .await
        .expect("apply b");
    store
        .outbox
        .apply(&app("a"), &kv(vec![set("mine", json!(1))]))
        .await
        .expect("apply a");

    for key in crafted {
        assert!(
            store.kv.get(&app("a"), key).await.expect("get").is_none(),
            "{key}"
        );
        assert!(
            !store.kv.delete(&app("a"), key).await.expect("delete"),
            "{key}"
        );
        let got = store
            .kv
            .get(&app("b"), key)
            .await
            .expect("get")
            .expect("b keeps it");
        assert_eq!(got.key, key);
    }
    assert_eq!(keys(store, "a", "", None, 100).await, ["mine"]);
    // `%` and `_` are characters, not patterns.
    assert_eq!(keys(store, "b", "%", None, 100).await, ["%"]);
    assert_eq!(keys(store, "b", "_", None, 100).await, ["_"]);
    assert_eq!(keys(store, "b", "b/", None, 100).await, ["b/%"]);
    assert_eq!(keys(store, "b", "", None, 100).await.len(), crafted.len());
}

pub async fn kv_writes_for_a_missing_app_are_not_found(store: &Store) {
    let err = store
        .outbox
        .apply(&app("ghost"), &kv(vec![set("k", json!(1))]))
        .await
        .expect_err("no such app");
    assert!(matches!(err, StoreError::NotFound("app")), "{err:?}");
    assert!(
        store
            .kv
            .get(&app("ghost"), "k")
            .await
            .expect("get")
            .is_none()
    );
}

/// `get_blocking` on a thread that may block, as a script thread reads.
async fn read_blocking(
    store: &Store,
    app_name: &str,
    key: &str,
) -> Result<Option<KvEntry>, StoreError> {
    let (kv, app, key) = (Arc::clone(&store.kv), app(app_name), key.to_owned());
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || kv.get_blocking(&rt, &app, &key))
        .await
        .expect("the reading thread")
}

pub async fn kv_blocking_reads_see_the_last_commit_honour_expiry_and_stay_in_their_app(
    store: &Store,
) {
    store.apps.create(&app("shop")).await.expect("create app");
    store.apps.create(&app("other")).await.expect("create app");
    let shop = app("shop");
    let ttl = |key: &str, secs: u64| KvWrite::Set {
        key: key.into(),
        value: json!({"v": secs}),
        ttl: Some(Duration::from_secs(secs)),
    };
    store
        .outbox
        .apply(
            &shop,
            &kv(vec![set("n", json!(1)), ttl("gone", 0), ttl("alive", 3600)]),
        )
        .await
        .expect("apply");
    store
        .outbox
        .apply(&app("other"), &kv(vec![set("n", json!("theirs"))]))
        .await
        .expect("apply");

    // The same entries `get` reads, timestamps and expiry included.
    for key in ["n", "alive", "gone", "missing"] {
        let pooled = store.kv.get(&shop, key).await.expect("get");
        assert_eq!(
            read_blocking(store, "shop", key).await.expect("read"),
            pooled,
            "{key}"
        );
    }
    let alive = read_blocking(store, "shop", "alive").await.expect("read");
    assert!(alive.is_some_and(|e| e.expires_at.is_some() && e.value == json!({"v": 3600})));
    assert!(
        read_blocking(store, "shop", "gone")
            .await
            .expect("read")
            .is_none()
    );
    let theirs = read_blocking(store, "other", "n").await.expect("read");
    assert_eq!(theirs.map(|e| e.value), Some(json!("theirs")));
    assert!(
        read_blocking(store, "ghost", "n")
            .await
            .expect("read")
            .is_none()
    );

    // Every read sees the last commit: a kept connection is never left in an old snapshot.
    for next in 2..5 {
        store
            .outbox
            .apply(
                &shop,
                &kv(vec![KvWrite::Incr {
                    key: "n".into(),
                    by: 1,
                }]),
            )
            .await
            .expect("incr");
        let n = read_blocking(store, "shop", "n").await.expect("read");
        assert_eq!(n.map(|e| e.value), Some(json!(next)));
    }
    assert!(store.kv.delete(&shop, "n").await.expect("delete"));
    assert!(
        read_blocking(store, "shop", "n")
            .await
            .expect("read")
            .is_none()
    );

    // Threads reading at the same moment each get an answer (on a connection each).
    let at_once = Arc::new(std::sync::Barrier::new(8));
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (kv, at_once) = (Arc::clone(&store.kv), Arc::clone(&at_once));
            let (rt, shop) = (tokio::runtime::Handle::current(), shop.clone());
            tokio::task::spawn_blocking(move || {
                at_once.wait();
                kv.get_blocking(&rt, &shop, "alive")
            })
        })
        .collect();
    for reader in readers {
        let read = reader.await.expect("the reading thread").expect("read");
        assert!(read.is_some());
    }
}

pub async fn kv_blocking_reads_fail_once_the_store_is_closed(store: &Store) {
    store.apps.create(&app("shop")).await.expect("create app");
    store
        .outbox
        .apply(&app("shop"), &kv(vec![set("n", json!(1))]))
        .await
        .expect("apply");
    assert!(
        read_blocking(store, "shop", "n")
            .await
            .expect("read")
            .is_some()
    );
    store.health.close().await;
    let err = read_blocking(store, "shop", "n")
        .await
        .expect_err("the store is closed");
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
}
