//! Sync runs' effects committed as a group (`OutboxRepository::apply_group`, the HTTP
//! group commit): one transaction, each run's part all or nothing, a failing run alone.
use chrono::{Duration, Utc};
use serde_json::{Value, json};
use shared::store::{App, Claimed, KeyAnswer, KeyHold, SyncCommit};
use shared::{Effects, InvocationId, KvWrite, Store, StoreError};

use super::app;
use super::idempotency::{answer, hold, idempotent_route};
use super::kv::{kv, set};
use super::outbox::{emits, invoke, setup};

fn incr(key: &str, by: i64) -> KvWrite {
    KvWrite::Incr {
        key: key.into(),
        by,
    }
}

async fn value(store: &Store, key: &str) -> Option<Value> {
    store
        .kv
        .get(&app("shop"), key)
        .await
        .expect("get")
        .map(|e| e.value)
}

/// Unkeyed runs, each to its app.
fn unkeyed<'a>(runs: &'a [(&'a App, Effects)]) -> Vec<SyncCommit<'a>> {
    runs.iter()
        .map(|(app, effects)| SyncCommit {
            app,
            effects,
            answer: None,
        })
        .collect()
}

/// Commit `group`; what became of each run: "ok" or its error.
async fn outcomes(store: &Store, group: &[SyncCommit<'_>]) -> Vec<String> {
    let results = store.outbox.apply_group(group).await;
    assert_eq!(results.len(), group.len(), "one result per run");
    results
        .iter()
        .map(|result| match result {
            Ok(()) => "ok".to_owned(),
            Err(StoreError::NotFound(what)) => format!("{what} not found"),
            Err(StoreError::Conflict(what)) => format!("conflict: {what}"),
            Err(other) => format!("{other:?}"),
        })
        .collect()
}

pub async fn a_group_of_sync_runs_commits_each_run_once_and_a_failing_run_fails_alone(
    store: &Store,
) {
    setup(store, "shop", &["w"]).await;
    let shop = store.apps.get(&app("shop")).await.expect("app");
    store
        .outbox
        .apply_to(&shop, &kv(vec![set("text", json!("not a number"))]))
        .await
        .expect("seed");
    let old = store.apps.create(&app("old")).await.expect("app");
    store.apps.delete(&app("old")).await.expect("delete");

    // Writes that merge: increments of one sign, sets of one key (the last one wins).
    let mut with_emit = kv(vec![set("b", json!(2))]);
    with_emit.emitted = emits(vec![invoke("w", json!(1))]).emitted;
    let runs = [
        (&shop, kv(vec![incr("n", 1), set("a", json!(1))])),
        (&shop, kv(vec![incr("text", 1)])),
        (&shop, with_emit),
        (&old, kv(vec![set("x", json!(1))])),
        (&shop, kv(vec![incr("n", 2), set("a", json!(4))])),
    ];
    assert_eq!(
        outcomes(store, &unkeyed(&runs)).await,
        ["ok", "conflict: kv integer", "ok", "app not found", "ok"]
    );
    assert_eq!(
        value(store, "n").await,
        Some(json!(3)),
        "each increment once"
    );
    assert_eq!(value(store, "a").await, Some(json!(4)));
    assert_eq!(value(store, "b").await, Some(json!(2)));
    assert_eq!(
        value(store, "text").await,
        Some(json!("not a number")),
        "the failing run wrote nothing"
    );
    assert_eq!(
        store.outbox.pending(&app("shop")).await.expect("pending"),
        1,
        "the emitted event went in once"
    );

    // Writes that do not merge (one key set by one run and incremented by another) are
    // committed run by run, in the group's order, in the same transaction.
    let runs = [
        (&shop, kv(vec![set("m", json!(5))])),
        (&shop, kv(vec![incr("m", 1)])),
        (&shop, kv(vec![incr("text", 1), set("never", json!(1))])),
        (&shop, kv(vec![incr("m", -2)])),
    ];
    assert_eq!(
        outcomes(store, &unkeyed(&runs)).await,
        ["ok", "ok", "conflict: kv integer", "ok"]
    );
    assert_eq!(value(store, "m").await, Some(json!(4)));
    assert_eq!(value(store, "never").await, None);

    // A group whose runs all go in: one hot key set by each.
    let runs: Vec<_> = (1..=3)
        .map(|i| (&shop, kv(vec![set("hot", json!(i))])))
        .collect();
    assert_eq!(outcomes(store, &unkeyed(&runs)).await, ["ok", "ok", "ok"]);
    assert_eq!(
        value(store, "hot").await,
        Some(json!(3)),
        "the last run's set"
    );

    // Runs that only set and delete keys (SQLite commits them without a savepoint), in
    // two apps and one that is gone: each goes to its own app, the gone one fails alone.
    let other = store.apps.create(&app("other")).await.expect("app");
    let runs = [
        (
            &shop,
            kv(vec![
                set("hot", json!(4)),
                KvWrite::Delete { key: "a".into() },
            ]),
        ),
        (&old, kv(vec![set("hot", json!("old"))])),
        (&other, kv(vec![set("hot", json!("other"))])),
        (&shop, kv(vec![set("hot", json!(5)), set("b", json!(6))])),
    ];
    assert_eq!(
        outcomes(store, &unkeyed(&runs)).await,
        ["ok", "app not found", "ok", "ok"]
    );
    assert_eq!(value(store, "hot").await, Some(json!(5)));
    assert_eq!(value(store, "a").await, None);
    assert_eq!(value(store, "b").await, Some(json!(6)));
    let in_other = store.kv.get(&app("other"), "hot").await.expect("get");
    assert_eq!(in_other.map(|e| e.value), Some(json!("other")));
}

pub async fn a_group_of_keyed_runs_stores_each_answer_and_a_run_without_its_key_fails_alone(
    store: &Store,
) {
    let (shop, route) = idempotent_route(store).await;
    let until = Utc::now() + Duration::minutes(5);
    let held: Vec<KeyHold> = ["k1", "k2", "k3"]
        .iter()
        .map(|raw| hold(route, raw))
        .collect();
    for h in &held {
        let claimed = store.idempotency.claim(h, "fp", until).await;
        assert_eq!(claimed.expect("claim"), Claimed::Run);
    }
    // Never claimed: its run no longer holds the key.
    let lost = hold(route, "lost");
    let stored = [answer("1"), answer("2"), answer("3"), answer("4")];
    let expires_at = Utc::now() + Duration::minutes(5);
    let holders = [&held[0], &held[1], &lost, &held[2]];
    let answers: Vec<KeyAnswer<'_>> = holders
        .into_iter()
        .zip(&stored)
        .map(|(hold, answer)| KeyAnswer {
            hold,
            answer,
            expires_at,
        })
        .collect();
    let order = kv(vec![incr("orders", 1), set("last", json!("x"))]);
    let nothing = Effects::default();
    let effects = [&order, &order, &order, &nothing];
    let group: Vec<SyncCommit<'_>> = effects
        .iter()
        .zip(&answers)
        .map(|(effects, answer)| SyncCommit {
            app: &shop,
            effects,
            answer: Some(answer),
        })
        .collect();
    assert_eq!(
        outcomes(store, &group).await,
        ["ok", "ok", "conflict: idempotency key", "ok"]
    );
    assert_eq!(
        value(store, "orders").await,
        Some(json!(2)),
        "the run without its key committed nothing"
    );
    for (h, answer) in held.iter().zip([&stored[0], &stored[1], &stored[3]]) {
        let again = KeyHold {
            holder: InvocationId::new(),
            ..h.clone()
        };
        let claimed = store.idempotency.claim(&again, "fp", until).await;
        assert_eq!(claimed.expect("claim"), Claimed::Answered(answer.clone()));
    }
    let retry = KeyHold {
        holder: InvocationId::new(),
        ..lost
    };
    let claimed = store.idempotency.claim(&retry, "fp", until).await;
    assert_eq!(
        claimed.expect("claim"),
        Claimed::Run,
        "no answer was stored"
    );
}

/// A group's sets of many distinct keys in two apps, interleaved (the merged writes go in
/// per app, in multi-row statements of several sizes): every key stored once in its own
/// app with its value, its run's time and its expiry; an entry set with a TTL and one set
/// again without lose and keep their expiry as each run said.
pub async fn a_group_of_sets_of_many_keys_in_two_apps_stores_each_with_its_expiry(store: &Store) {
    let shop = store.apps.create(&app("shop")).await.expect("app");
    let other = store.apps.create(&app("other")).await.expect("app");
    let ttl = |key: String, value: Value, secs: u64| KvWrite::Set {
        key,
        value,
        ttl: Some(std::time::Duration::from_secs(secs)),
    };
    // 46 keys in shop (32 + 8 + 4 + 2 rows), 22 in other (16 + 4 + 2), every fourth with a
    // TTL.
    let mut runs: Vec<(&App, Effects)> = Vec::new();
    for i in 0..68u64 {
        let (target, n) = if i % 3 == 2 {
            (&other, i / 3)
        } else {
            (&shop, i)
        };
        let key = format!("k{n}");
        let write = if i % 4 == 1 {
            ttl(key, json!({ "n": n }), 3600)
        } else {
            set(&key, json!(n))
        };
        runs.push((target, kv(vec![write])));
    }
    // The last run sets shop's k1 (set with a TTL above) again without one.
    runs.push((&shop, kv(vec![set("k1", json!("again"))])));
    let before = Utc::now();
    let group = unkeyed(&runs);
    let results = outcomes(store, &group).await;
    assert!(results.iter().all(|r| r == "ok"), "{results:?}");
    let mut stored = 0;
    for (target, effects) in &runs[..68] {
        let KvWrite::Set { key, value, ttl } = &effects.kv[0] else {
            unreachable!("sets only")
        };
        let entry = store
            .kv
            .get(&target.name, key)
            .await
            .expect("get")
            .expect("stored");
        if (target.name.as_str(), key.as_str()) == ("shop", "k1") {
            assert_eq!(entry.value, json!("again"));
            assert_eq!(entry.expires_at, None, "set again without a TTL");
            continue;
        }
        stored += 1;
        assert_eq!(&entry.value, value, "{}/{key}", target.name);
        assert!(entry.updated_at >= before - Duration::seconds(1));
        match ttl {
            Some(_) => {
                let left = entry.expires_at.expect("expiry") - entry.updated_at;
                assert_eq!(left, Duration::hours(1), "{}/{key}", target.name);
            }
            None => assert_eq!(entry.expires_at, None, "{}/{key}", target.name),
        }
    }
    assert_eq!(stored, 67);
    let listed = |app: &'static str| async move {
        store
            .kv
            .list(&super::app(app), "k", None, 100)
            .await
            .expect("list")
            .len()
    };
    assert_eq!(listed("shop").await, 46);
    assert_eq!(listed("other").await, 22);
}
