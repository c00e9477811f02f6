//! The catalog hears every change the manager commits.
use super::*;

async fn the_catalog_hears_every_committed_change(t: &TestApp) {
    let shop = app("shop");
    t.create_app("shop").await;
    assert_eq!(t.changes(), vec![CatalogChange::App { app: shop.clone() }]);

    t.deploy("shop", "user", "\"u\"").await;
    t.deploy("shop", "user", "\"v\"").await;
    let script_change = CatalogChange::Script {
        app: shop.clone(),
        script: script("user"),
    };
    assert_eq!(
        t.changes(),
        vec![script_change.clone(), script_change.clone()]
    );

    t.deploy("shop", "user", "let = ;").await;
    assert_eq!(t.changes(), vec![], "a refused deploy changes nothing");

    t.call(
        Method::POST,
        "/api/v1/apps/shop/scripts/user/rollback",
        Some(json!({"version": 1})),
    )
    .await;
    assert_eq!(t.changes(), vec![script_change.clone()]);

    let trigger = t
        .add_trigger(
            "shop",
            json!({"kind": "http", "method": "GET", "path": "/u", "script": "user"}),
        )
        .await;
    assert_eq!(
        t.changes(),
        vec![CatalogChange::Triggers { app: shop.clone() }]
    );
    let id = trigger.body["id"].as_str().expect("id").to_owned();
    t.call(
        Method::DELETE,
        &format!("/api/v1/apps/shop/triggers/{id}"),
        None,
    )
    .await;
    assert_eq!(
        t.changes(),
        vec![CatalogChange::Triggers { app: shop.clone() }]
    );

    t.call(Method::DELETE, "/api/v1/apps/shop/scripts/user", None)
        .await;
    assert_eq!(
        t.changes(),
        vec![script_change, CatalogChange::Triggers { app: shop.clone() }]
    );

    t.call(Method::DELETE, "/api/v1/apps/shop", None).await;
    assert_eq!(t.changes(), vec![CatalogChange::App { app: shop }]);
}

on_both_backends!(
    with_app =>
    the_catalog_hears_every_committed_change,
);
