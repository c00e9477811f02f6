//! Per-app and per-script limits: stored exactly, replaced as a whole, removed when reset,
//! with their script or with their app.
use shared::{AppLimits, LimitOverrides, Store, StoreError};

use super::{app, script, setup_app_with_script};

fn limits(timeout_ms: u64, max_concurrency: Option<u64>) -> LimitOverrides {
    LimitOverrides {
        timeout_ms: Some(timeout_ms),
        max_concurrency,
        ..LimitOverrides::default()
    }
}

pub async fn limits_of_an_app_and_its_scripts_are_stored_exactly_and_listed_per_app(store: &Store) {
    setup_app_with_script(store, "shop", "checkout").await;
    setup_app_with_script(store, "blog", "feed").await;
    store.apps.create(&app("quiet")).await.expect("create app");
    let every_field = {
        let mut all = LimitOverrides::default();
        for (i, field) in LimitOverrides::FIELDS.iter().enumerate() {
            all.set(field, Some(i as u64 * 1_000));
        }
        all.max_operations = Some(i64::MAX as u64);
        all
    };
    let shop = app("shop");
    store
        .limits
        .set_app(&shop, &every_field)
        .await
        .expect("set");
    store
        .limits
        .set_script(&shop, &script("checkout"), &limits(250, Some(1)))
        .await
        .expect("set");
    store
        .limits
        .set_script(&app("blog"), &script("feed"), &limits(9, None))
        .await
        .expect("set");

    let got = store.limits.get(&shop).await.expect("get");
    assert_eq!(got.app, every_field);
    assert_eq!(
        got.scripts.into_iter().collect::<Vec<_>>(),
        [(script("checkout"), limits(250, Some(1)))]
    );
    assert_eq!(
        store.limits.get(&app("quiet")).await.expect("get"),
        AppLimits::default()
    );
    assert_eq!(
        store.limits.get(&app("nope")).await.expect("get"),
        AppLimits::default()
    );

    let all = store.limits.list_all().await.expect("list");
    let names: Vec<&str> = all.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        names,
        ["blog", "shop"],
        "an app that set nothing is not listed"
    );
    assert_eq!(all[0].1.app, LimitOverrides::default());
    assert_eq!(all[0].1.scripts[&script("feed")], limits(9, None));
    assert_eq!(all[1].1.app, every_field);
}

pub async fn setting_limits_replaces_them_and_setting_none_removes_them(store: &Store) {
    setup_app_with_script(store, "shop", "checkout").await;
    let shop = app("shop");
    store
        .limits
        .set_app(&shop, &limits(100, Some(4)))
        .await
        .expect("set");
    store
        .limits
        .set_app(&shop, &limits(200, None))
        .await
        .expect("replace");
    assert_eq!(
        store.limits.get(&shop).await.expect("get").app,
        limits(200, None),
        "the concurrency set before is gone: a set replaces"
    );
    store
        .limits
        .set_script(&shop, &script("checkout"), &limits(5, None))
        .await
        .expect("set");
    store
        .limits
        .set_app(&shop, &LimitOverrides::default())
        .await
        .expect("reset");
    store
        .limits
        .set_script(&shop, &script("checkout"), &LimitOverrides::default())
        .await
        .expect("reset");
    assert!(store.limits.get(&shop).await.expect("get").is_empty());
    assert!(store.limits.list_all().await.expect("list").is_empty());
}

pub async fn limits_for_a_missing_app_or_script_are_not_found(store: &Store) {
    let err = store
        .limits
        .set_app(&app("nope"), &limits(1, None))
        .await
        .expect_err("missing app");
    assert!(matches!(err, StoreError::NotFound("app")), "{err:?}");
    store.apps.create(&app("shop")).await.expect("create app");
    let err = store
        .limits
        .set_script(&app("shop"), &script("nope"), &limits(1, None))
        .await
        .expect_err("missing script");
    assert!(matches!(err, StoreError::NotFound("script")), "{err:?}");
    let err = store
        .limits
        .set_script(&app("gone"), &script("nope"), &limits(1, None))
        .await
        .expect_err("missing app");
    assert!(matches!(err, StoreError::NotFound("script")), "{err:?}");
}

pub async fn limits_stay_across_deploys_and_go_with_their_script_or_app(store: &Store) {
    setup_app_with_script(store, "shop", "checkout").await;
    let shop = app("shop");
    store
        .scripts
        .deploy(&shop, &script("feed"), "\"hi\"")
        .await
        .expect("deploy");
    store
        .limits
        .set_app(&shop, &limits(100, None))
        .await
        .expect("set");
    for name in ["checkout", "feed"] {
        store
            .limits
            .set_script(&shop, &script(name), &limits(50, Some(1)))
            .await
            .expect("set");
    }
    store
        .scripts
        .deploy(&shop, &script("checkout"), "\"v2\"")
        .await
        .expect("redeploy");
    store
        .scripts
        .delete(&shop, &script("feed"))
        .await
        .expect("delete script");
    let left = store.limits.get(&shop).await.expect("get");
    assert_eq!(
        left.scripts.keys().map(|s| s.as_str()).collect::<Vec<_>>(),
        ["checkout"]
    );
    assert_eq!(left.app, limits(100, None));

    store.apps.delete(&shop).await.expect("delete app");
    store.apps.create(&shop).await.expect("create again");
    assert!(store.limits.get(&shop).await.expect("get").is_empty());
    assert!(store.limits.list_all().await.expect("list").is_empty());
}
