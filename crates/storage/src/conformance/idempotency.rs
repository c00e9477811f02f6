//! HTTP idempotency keys: claimed once, answered in the effects transaction, replayed,
//! released after a failure, and expired without a sweeper.
use bytes::Bytes;
use chrono::{Duration, Utc};
use serde_json::json;
use shared::store::{
    Claimed, Idempotency, IdempotencyKey, KeyAnswer, KeyHold, StoredAnswer, TriggerOptions,
};
use shared::{Effects, InvocationId, KvWrite, Store, StoreError, TriggerId};

use super::{app, http, setup_app_with_script};
use shared::store::{App, HttpMethod};

fn key(raw: &str) -> IdempotencyKey {
    IdempotencyKey::parse(raw.as_bytes()).expect("a valid key")
}

pub(super) fn hold(trigger: TriggerId, raw: &str) -> KeyHold {
    KeyHold {
        app: app("shop"),
        trigger,
        key: key(raw),
        holder: InvocationId::new(),
    }
}

pub(super) fn answer(body: &str) -> StoredAnswer {
    StoredAnswer {
        status: 201,
        headers: vec![
            ("set-cookie".into(), "a=1".into()),
            ("set-cookie".into(), "b=2".into()),
            ("content-type".into(), "application/json".into()),
        ],
        body: Bytes::from(body.to_owned()),
    }
}

fn incr() -> Effects {
    Effects {
        kv: vec![KvWrite::Incr {
            key: "orders".into(),
            by: 1,
        }],
        ..Effects::default()
    }
}

/// An app with one idempotent route; the app and the route's id.
pub(super) async fn idempotent_route(store: &Store) -> (App, TriggerId) {
    setup_app_with_script(store, "shop", "order").await;
    let trigger = store
        .triggers
        .create_with(
            http("shop", "order", HttpMethod::Post, "/orders"),
            TriggerOptions {
                idempotency: Some(Idempotency::new(60).expect("ttl")),
            },
        )
        .await
        .expect("trigger");
    let app = store.apps.get(&app("shop")).await.expect("app");
    (app, trigger.id)
}

async fn orders(store: &Store) -> Option<serde_json::Value> {
    store
        .kv
        .get(&app("shop"), "orders")
        .await
        .expect("get")
        .map(|e| e.value)
}

pub async fn http_idempotency_a_key_runs_once_and_its_answer_is_stored_with_the_effects(
    store: &Store,
) {
    let (shop, route) = idempotent_route(store).await;
    let until = Utc::now() + Duration::minutes(5);
    let first = hold(route, "order-1");
    assert_eq!(
        store
            .idempotency
            .claim(&first, "fp", until)
            .await
            .expect("claim"),
        Claimed::Run
    );
    let again = KeyHold {
        holder: InvocationId::new(),
        ..first.clone()
    };
    assert_eq!(
        store
            .idempotency
            .claim(&again, "fp", until)
            .await
            .expect("claim"),
        Claimed::Running,
        "a duplicate while the first runs"
    );
    assert_eq!(
        store
            .idempotency
            .claim(&again, "other", until)
            .await
            .expect("claim"),
        Claimed::Reused,
        "the key with a different request"
    );
    let stored = answer("{\"id\":1}");
    store
        .outbox
        .apply_answered(
            &shop,
            &incr(),
            &KeyAnswer {
                hold: &first,
                answer: &stored,
                expires_at: Utc::now() + Duration::minutes(5),
            },
        )
        .await
        .expect("commit");
    assert_eq!(orders(store).await, Some(json!(1)));
    for _ in 0..2 {
        assert_eq!(
            store
                .idempotency
                .claim(&again, "fp", until)
                .await
                .expect("claim"),
            Claimed::Answered(stored.clone()),
            "replayed exactly, headers in order"
        );
    }
    assert_eq!(
        store
            .idempotency
            .claim(&again, "other", until)
            .await
            .expect("claim"),
        Claimed::Reused
    );
    // An answer without effects is stored too.
    let empty = hold(route, "order-2");
    store
        .idempotency
        .claim(&empty, "fp", until)
        .await
        .expect("claim");
    let nothing = StoredAnswer {
        status: 200,
        headers: Vec::new(),
        body: Bytes::new(),
    };
    store
        .outbox
        .apply_answered(
            &shop,
            &Effects::default(),
            &KeyAnswer {
                hold: &empty,
                answer: &nothing,
                expires_at: Utc::now() + Duration::minutes(5),
            },
        )
        .await
        .expect("commit");
    let replay = KeyHold {
        holder: InvocationId::new(),
        ..empty
    };
    assert_eq!(
        store
            .idempotency
            .claim(&replay, "fp", until)
            .await
            .expect("claim"),
        Claimed::Answered(nothing)
    );
    assert_eq!(
        orders(store).await,
        Some(json!(1)),
        "the effect happened once"
    );
}

pub async fn http_idempotency_only_the_holder_answers_or_releases_and_a_released_key_runs_again(
    store: &Store,
) {
    let (shop, route) = idempotent_route(store).await;
    let until = Utc::now() + Duration::minutes(5);
    let first = hold(route, "k");
    store
        .idempotency
        .claim(&first, "fp", until)
        .await
        .expect("claim");
    let stranger = KeyHold {
        holder: InvocationId::new(),
        ..first.clone()
    };
    store.idempotency.release(&stranger).await.expect("release");
    assert_eq!(
        store
            .idempotency
            .claim(&stranger, "fp", until)
            .await
            .expect("claim"),
        Claimed::Running,
        "another run's release does not free the key"
    );
    let err = store
        .outbox
        .apply_answered(
            &shop,
            &incr(),
            &KeyAnswer {
                hold: &stranger,
                answer: &answer("x"),
                expires_at: until,
            },
        )
        .await
        .expect_err("not the holder");
    assert!(
        matches!(err, StoreError::Conflict("idempotency key")),
        "{err:?}"
    );
    assert_eq!(orders(store).await, None, "no effects without the answer");

    // The first run failed: its key is released, so a retry runs.
    store.idempotency.release(&first).await.expect("release");
    assert_eq!(
        store
            .idempotency
            .claim(&stranger, "fp", until)
            .await
            .expect("claim"),
        Claimed::Run
    );
    assert_eq!(
        store
            .idempotency
            .count(&app("shop"), route)
            .await
            .expect("count"),
        1
    );
}

pub async fn http_idempotency_expired_keys_are_taken_over_and_purged_by_later_claims(
    store: &Store,
) {
    let (shop, route) = idempotent_route(store).await;
    let live = Utc::now() + Duration::minutes(5);
    let past = Utc::now() - Duration::seconds(1);
    // A run that crashed: its running key expired.
    let crashed = hold(route, "crashed");
    store
        .idempotency
        .claim(&crashed, "fp", past)
        .await
        .expect("claim");
    let retry = KeyHold {
        holder: InvocationId::new(),
        ..crashed.clone()
    };
    assert_eq!(
        store
            .idempotency
            .claim(&retry, "fp2", live)
            .await
            .expect("claim"),
        Claimed::Run,
        "an expired running key is taken over, even for another request"
    );
    let err = store
        .outbox
        .apply_answered(
            &shop,
            &incr(),
            &KeyAnswer {
                hold: &crashed,
                answer: &answer("late"),
                expires_at: live,
            },
        )
        .await
        .expect_err("the crashed run lost its key");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    // An answer past its TTL is not replayed.
    let old = hold(route, "old");
    store
        .idempotency
        .claim(&old, "fp", live)
        .await
        .expect("claim");
    store
        .outbox
        .apply_answered(
            &shop,
            &incr(),
            &KeyAnswer {
                hold: &old,
                answer: &answer("old"),
                expires_at: past,
            },
        )
        .await
        .expect("commit");
    assert_eq!(
        store
            .idempotency
            .count(&app("shop"), route)
            .await
            .expect("count"),
        2
    );
    // A claim of another key purges it, with no sweeper.
    store
        .idempotency
        .claim(&hold(route, "other"), "fp", live)
        .await
        .expect("claim");
    assert_eq!(
        store
            .idempotency
            .count(&app("shop"), route)
            .await
            .expect("count"),
        2,
        "'old' purged; 'crashed' (taken over) and 'other' left"
    );
    let again = hold(route, "old");
    assert_eq!(
        store
            .idempotency
            .claim(&again, "fp", live)
            .await
            .expect("claim"),
        Claimed::Run,
        "the expired answer is gone: the key runs again"
    );
}

pub async fn http_idempotency_keys_are_per_route_and_go_with_their_trigger(store: &Store) {
    let (_, route) = idempotent_route(store).await;
    let other = store
        .triggers
        .create_with(
            http("shop", "order", HttpMethod::Put, "/orders"),
            TriggerOptions {
                idempotency: Some(Idempotency::default()),
            },
        )
        .await
        .expect("trigger");
    let until = Utc::now() + Duration::minutes(5);
    for trigger in [route, other.id] {
        assert_eq!(
            store
                .idempotency
                .claim(&hold(trigger, "same"), "fp", until)
                .await
                .expect("claim"),
            Claimed::Run,
            "one key, two routes: two claims"
        );
    }
    store
        .triggers
        .delete(&app("shop"), route)
        .await
        .expect("delete");
    assert_eq!(
        store
            .idempotency
            .count(&app("shop"), route)
            .await
            .expect("count"),
        0
    );
    assert_eq!(
        store
            .idempotency
            .count(&app("shop"), other.id)
            .await
            .expect("count"),
        1
    );
}

pub async fn http_idempotency_twenty_concurrent_claims_of_one_key_run_once(store: &Store) {
    let (_, route) = idempotent_route(store).await;
    let until = Utc::now() + Duration::minutes(5);
    let claims = (0..20).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .idempotency
                .claim(&hold(route, "burst"), "fp", until)
                .await
                .expect("claim")
        })
    });
    let mut runs = 0;
    for claim in claims.collect::<Vec<_>>() {
        match claim.await.expect("task") {
            Claimed::Run => runs += 1,
            Claimed::Running => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(runs, 1);
}

pub async fn an_idempotent_trigger_keeps_its_ttl_and_other_triggers_have_none(store: &Store) {
    let (_, route) = idempotent_route(store).await;
    let plain = store
        .triggers
        .create(http("shop", "order", HttpMethod::Get, "/orders"))
        .await
        .expect("trigger");
    assert_eq!(plain.idempotency, None);
    for listed in [
        store.triggers.list(&app("shop")).await.expect("list"),
        store.triggers.list_all().await.expect("list all"),
    ] {
        let ttl = |id| {
            listed
                .iter()
                .find(|t| t.id == id)
                .expect("listed")
                .idempotency
        };
        assert_eq!(ttl(route), Some(Idempotency::new(60).expect("ttl")));
        assert_eq!(ttl(plain.id), None);
    }
}
