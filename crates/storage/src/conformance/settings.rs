//! Config, secrets, the mailbox, and what deleting an app removes of its data. (That a
//! secret is sealed in its row, and bound to its app and name, is tested per backend next
//! to the SQL, where the raw rows can be read.)
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use shared::{BlobWrite, Effects, EmailMessage, KvWrite, Store, StoreError};

use super::app;

fn mail(subject: &str) -> EmailMessage {
    EmailMessage {
        to: vec!["ada@example.com".into()],
        subject: subject.into(),
        text: Some("hello".into()),
        html: None,
        from: None,
        reply_to: Some("ops@example.com".into()),
    }
}

pub async fn config_values_can_be_set_listed_overwritten_and_deleted(store: &Store) {
    let shop = app("shop");
    store.apps.create(&shop).await.expect("create app");
    store.apps.create(&app("blog")).await.expect("create app");
    store
        .settings
        .config_set(&shop, "b", &json!({"x": [1]}))
        .await
        .expect("set");
    store
        .settings
        .config_set(&shop, "a", &json!("one"))
        .await
        .expect("set");
    store
        .settings
        .config_set(&shop, "a", &json!(2))
        .await
        .expect("overwrite");
    assert_eq!(
        store.settings.config_get(&shop, "a").await.expect("get"),
        Some(json!(2))
    );
    assert_eq!(
        store.settings.config_list(&shop).await.expect("list"),
        [
            ("a".to_owned(), json!(2)),
            ("b".to_owned(), json!({"x": [1]}))
        ]
    );
    assert!(
        store
            .settings
            .config_list(&app("blog"))
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        store
            .settings
            .config_get(&app("blog"), "a")
            .await
            .expect("get"),
        None
    );
    assert!(
        store
            .settings
            .config_delete(&shop, "a")
            .await
            .expect("delete")
    );
    assert!(
        !store
            .settings
            .config_delete(&shop, "a")
            .await
            .expect("delete again")
    );
    assert_eq!(
        store.settings.config_get(&shop, "a").await.expect("get"),
        None
    );
}

pub async fn secrets_round_trip_by_name_and_only_their_names_are_listed(store: &Store) {
    let shop = app("shop");
    store.apps.create(&shop).await.expect("create app");
    store.apps.create(&app("blog")).await.expect("create app");
    store
        .settings
        .secret_set(&shop, "stripe", "sk_live_1")
        .await
        .expect("set");
    store
        .settings
        .secret_set(&shop, "api", "")
        .await
        .expect("an empty secret");
    store
        .settings
        .secret_set(&shop, "stripe", "sk_live_2")
        .await
        .expect("overwrite");
    assert_eq!(
        store
            .settings
            .secret_get(&shop, "stripe")
            .await
            .expect("get")
            .as_deref(),
        Some("sk_live_2")
    );
    assert_eq!(
        store
            .settings
            .secret_get(&shop, "api")
            .await
            .expect("get")
            .as_deref(),
        Some("")
    );
    assert_eq!(
        store.settings.secret_names(&shop).await.expect("names"),
        ["api", "stripe"]
    );
    assert_eq!(
        store
            .settings
            .secret_get(&app("blog"), "stripe")
            .await
            .expect("get"),
        None
    );
    assert!(
        store
            .settings
            .secret_names(&app("blog"))
            .await
            .expect("names")
            .is_empty()
    );
    assert!(
        store
            .settings
            .secret_delete(&shop, "stripe")
            .await
            .expect("delete")
    );
    assert!(
        !store
            .settings
            .secret_delete(&shop, "stripe")
            .await
            .expect("delete again")
    );
    assert_eq!(
        store
            .settings
            .secret_get(&shop, "stripe")
            .await
            .expect("get"),
        None
    );
}

pub async fn settings_and_mail_for_a_missing_app_are_not_found(store: &Store) {
    let ghost = app("ghost");
    let err = store
        .settings
        .config_set(&ghost, "k", &json!(1))
        .await
        .expect_err("config");
    assert!(matches!(err, StoreError::NotFound("app")), "{err:?}");
    let err = store
        .settings
        .secret_set(&ghost, "k", "v")
        .await
        .expect_err("secret");
    assert!(matches!(err, StoreError::NotFound("app")), "{err:?}");
    let err = store
        .mailbox
        .deliver(&ghost, &mail("x"))
        .await
        .expect_err("mail");
    assert!(matches!(err, StoreError::NotFound("app")), "{err:?}");
}

pub async fn the_mailbox_lists_an_apps_messages_newest_first(store: &Store) {
    let shop = app("shop");
    store.apps.create(&shop).await.expect("create app");
    store.apps.create(&app("blog")).await.expect("create app");
    for subject in ["first", "second", "third"] {
        store
            .mailbox
            .deliver(&shop, &mail(subject))
            .await
            .expect("deliver");
    }
    store
        .mailbox
        .deliver(&app("blog"), &mail("other"))
        .await
        .expect("deliver");
    let listed = store.mailbox.list(&shop, 10).await.expect("list");
    let subjects: Vec<&str> = listed.iter().map(|(_, m)| m.subject.as_str()).collect();
    assert_eq!(subjects, ["third", "second", "first"]);
    assert_eq!(listed[0].1, mail("third"));
    assert!(listed[0].0 >= listed[2].0);
    assert_eq!(store.mailbox.list(&shop, 1).await.expect("list").len(), 1);
    assert_eq!(
        store
            .mailbox
            .list(&app("blog"), 10)
            .await
            .expect("list")
            .len(),
        1
    );
}

pub async fn deleting_an_app_removes_its_kv_blobs_config_secrets_and_mail(store: &Store) {
    let shop = app("shop");
    store.apps.create(&shop).await.expect("create app");
    let object = store
        .objects
        .put(&shop, Bytes::from_static(b"x"))
        .await
        .expect("put");
    let effects = Effects {
        kv: vec![KvWrite::Set {
            key: "k".into(),
            value: json!(1),
            ttl: Some(Duration::from_secs(3600)),
        }],
        blobs: vec![BlobWrite::Put {
            name: "f".into(),
            object: object.clone(),
            size: 1,
            content_type: None,
        }],
        ..Effects::default()
    };
    store.outbox.apply(&shop, &effects).await.expect("apply");
    store
        .settings
        .config_set(&shop, "c", &json!(true))
        .await
        .expect("config");
    store
        .settings
        .secret_set(&shop, "s", "v")
        .await
        .expect("secret");
    store
        .mailbox
        .deliver(&shop, &mail("m"))
        .await
        .expect("mail");

    store.apps.delete(&shop).await.expect("delete app");
    store.apps.create(&shop).await.expect("create it again");
    assert!(store.kv.get(&shop, "k").await.expect("get").is_none());
    assert!(
        store
            .kv
            .list(&shop, "", None, 10)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(store.blobs.get(&shop, "f").await.expect("get").is_none());
    assert!(
        store
            .settings
            .config_list(&shop)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        store
            .settings
            .secret_names(&shop)
            .await
            .expect("names")
            .is_empty()
    );
    assert!(
        store
            .mailbox
            .list(&shop, 10)
            .await
            .expect("list")
            .is_empty()
    );
    store
        .objects
        .delete(&object)
        .await
        .expect("clean up the object");
}
