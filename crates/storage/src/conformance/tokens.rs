//! Admin API tokens: stored by hash, with their role and app scope, and never fewer than
//! one admin token left by deletes, even concurrent ones.
use shared::store::{NewToken, TokenDeleted, TokenRole};
use shared::{Store, StoreError};

use super::app;

fn admin(name: &str, hash: &str) -> NewToken {
    NewToken::admin(name, hash)
}

pub async fn tokens_can_be_created_found_listed_counted_and_deleted(store: &Store) {
    assert_eq!(store.tokens.count().await.expect("count"), 0);
    let first = store
        .tokens
        .create(&admin("admin", "hash-1"))
        .await
        .expect("create");
    let ci = store
        .tokens
        .create(&admin("ci", "hash-2"))
        .await
        .expect("create");
    assert_eq!(store.tokens.count().await.expect("count"), 2);
    assert_eq!(
        store.tokens.find_by_hash("hash-1").await.expect("find"),
        Some(first.clone())
    );
    assert_eq!(store.tokens.find_by_hash("nope").await.expect("find"), None);
    let listed = store.tokens.list().await.expect("list");
    assert_eq!(listed, [first.clone(), ci.clone()]);
    assert_eq!(
        store.tokens.delete(first.id).await.expect("delete"),
        TokenDeleted::Deleted
    );
    assert_eq!(
        store.tokens.find_by_hash("hash-1").await.expect("find"),
        None
    );
    assert_eq!(store.tokens.list().await.expect("list"), [ci]);
    assert_eq!(store.tokens.count().await.expect("count"), 1);
    let err = store.tokens.delete(first.id).await.expect_err("twice");
    assert!(matches!(err, StoreError::NotFound("token")), "{err:?}");
}

pub async fn a_duplicate_token_hash_is_a_conflict(store: &Store) {
    store
        .tokens
        .create(&admin("admin", "same"))
        .await
        .expect("create");
    let err = store
        .tokens
        .create(&admin("other", "same"))
        .await
        .expect_err("duplicate");
    assert!(matches!(err, StoreError::Conflict("token")), "{err:?}");
    assert_eq!(store.tokens.count().await.expect("count"), 1);
}

pub async fn tokens_keep_their_role_and_app_scope(store: &Store) {
    let scoped = NewToken {
        name: "shop-ci".into(),
        secret_hash: "hash-deploy".into(),
        role: TokenRole::Deploy,
        apps: Some(vec![app("shop"), app("blog")]),
    };
    let reader = NewToken {
        name: "viewer".into(),
        secret_hash: "hash-read".into(),
        role: TokenRole::Read,
        apps: None,
    };
    let created = store.tokens.create(&scoped).await.expect("create");
    assert_eq!(created.role, TokenRole::Deploy);
    assert_eq!(created.apps, scoped.apps);
    store.tokens.create(&reader).await.expect("create");
    let found = store
        .tokens
        .find_by_hash("hash-deploy")
        .await
        .expect("find")
        .expect("stored");
    assert_eq!(found, created);
    assert!(found.covers(&app("shop")) && found.covers(&app("blog")));
    assert!(!found.covers(&app("other")));
    let viewer = store
        .tokens
        .find_by_hash("hash-read")
        .await
        .expect("find")
        .expect("stored");
    assert_eq!((viewer.role, viewer.apps.clone()), (TokenRole::Read, None));
    assert!(viewer.covers(&app("anything")));
    let listed = store.tokens.list().await.expect("list");
    assert_eq!(listed, [created, viewer]);
}

pub async fn the_last_admin_token_cannot_be_deleted_but_other_tokens_can(store: &Store) {
    let only = store
        .tokens
        .create(&admin("admin", "hash-admin"))
        .await
        .expect("create");
    let deployer = store
        .tokens
        .create(&NewToken {
            name: "ci".into(),
            secret_hash: "hash-ci".into(),
            role: TokenRole::Deploy,
            apps: None,
        })
        .await
        .expect("create");
    // Other tokens do not count: the admin is still the last admin.
    assert_eq!(
        store.tokens.delete(only.id).await.expect("delete"),
        TokenDeleted::LastAdmin
    );
    assert_eq!(store.tokens.count().await.expect("count"), 2);
    assert_eq!(
        store.tokens.delete(deployer.id).await.expect("delete"),
        TokenDeleted::Deleted
    );
    assert_eq!(
        store.tokens.delete(only.id).await.expect("delete"),
        TokenDeleted::LastAdmin
    );
    assert_eq!(store.tokens.list().await.expect("list"), [only]);
}

pub async fn two_admins_deleting_each_other_at_once_always_leave_one(store: &Store) {
    let mut survivor = store
        .tokens
        .create(&admin("admin-0", "hash-0"))
        .await
        .expect("create");
    for round in 1..=20 {
        let other = store
            .tokens
            .create(&admin(&format!("admin-{round}"), &format!("hash-{round}")))
            .await
            .expect("create");
        let (a, b) = tokio::join!(
            store.tokens.delete(survivor.id),
            store.tokens.delete(other.id)
        );
        let mut outcomes = [a.expect("delete"), b.expect("delete")];
        outcomes.sort_by_key(|o| *o == TokenDeleted::LastAdmin);
        assert_eq!(
            outcomes,
            [TokenDeleted::Deleted, TokenDeleted::LastAdmin],
            "round {round}"
        );
        let left = store.tokens.list().await.expect("list");
        assert_eq!(left.len(), 1, "round {round}: {left:?}");
        assert_eq!(left[0].role, TokenRole::Admin);
        survivor = left.into_iter().next().expect("one left");
    }
}

pub async fn a_deleted_app_leaves_every_token_scope_that_named_it(store: &Store) {
    for name in ["shop", "blog"] {
        store.apps.create(&app(name)).await.expect("create app");
    }
    let scoped = |name: &str, hash: &str, apps: &[&str]| NewToken {
        name: name.to_owned(),
        secret_hash: hash.to_owned(),
        role: TokenRole::Deploy,
        apps: Some(apps.iter().map(|a| app(a)).collect()),
    };
    store
        .tokens
        .create(&admin("admin", "h0"))
        .await
        .expect("create");
    let both = store
        .tokens
        .create(&scoped("both", "h1", &["blog", "shop"]))
        .await
        .expect("create");
    let only = store
        .tokens
        .create(&scoped("only", "h2", &["shop"]))
        .await
        .expect("create");
    store.apps.delete(&app("shop")).await.expect("delete app");
    store
        .apps
        .create(&app("shop"))
        .await
        .expect("a new app of the same name");
    let find = |hash: &'static str| async move {
        store
            .tokens
            .find_by_hash(hash)
            .await
            .expect("find")
            .expect("still there")
    };
    assert_eq!(find("h1").await.apps, Some(vec![app("blog")]), "{both:?}");
    assert_eq!(
        find("h2").await.apps,
        Some(vec![]),
        "{only:?}: covers no app now"
    );
    assert_eq!(
        find("h0").await.apps,
        None,
        "an every-app token is untouched"
    );
}

pub async fn sessions_act_as_their_token_until_they_expire_end_or_the_token_goes(store: &Store) {
    use chrono::{Duration, Utc};
    let keep = store
        .tokens
        .create(&admin("keep", "hash-keep"))
        .await
        .expect("create");
    let ops = store
        .tokens
        .create(&admin("ops", "hash-ops"))
        .await
        .expect("create");
    let now = Utc::now();
    let hour = Duration::hours(1);
    store
        .tokens
        .create_session("s-1", ops.id, now, now + hour)
        .await
        .expect("session");
    let found = store
        .tokens
        .find_session("s-1", now)
        .await
        .expect("find")
        .expect("a live session");
    assert_eq!(found.token, ops);
    assert_eq!(
        found.expires_at.timestamp_micros(),
        (now + hour).timestamp_micros()
    );
    // Expired: not found, and removed when the next session opens.
    assert_eq!(
        store
            .tokens
            .find_session("s-1", now + hour)
            .await
            .expect("find"),
        None
    );
    assert!(matches!(
        store
            .tokens
            .create_session("s-1", keep.id, now, now + hour)
            .await,
        Err(StoreError::Conflict("session"))
    ));
    store
        .tokens
        .create_session("s-2", keep.id, now + hour * 2, now + hour * 3)
        .await
        .expect("session");
    assert!(!store.tokens.delete_session("s-1").await.expect("delete"));
    // Ended: gone.
    assert!(store.tokens.delete_session("s-2").await.expect("delete"));
    assert_eq!(
        store.tokens.find_session("s-2", now).await.expect("find"),
        None
    );
    // A revoked token takes its sessions with it; a missing one cannot open any.
    store
        .tokens
        .create_session("s-3", ops.id, now, now + hour)
        .await
        .expect("session");
    store.tokens.delete(ops.id).await.expect("revoke");
    assert_eq!(
        store.tokens.find_session("s-3", now).await.expect("find"),
        None
    );
    assert!(matches!(
        store
            .tokens
            .create_session("s-4", ops.id, now, now + hour)
            .await,
        Err(StoreError::NotFound("token"))
    ));
}
