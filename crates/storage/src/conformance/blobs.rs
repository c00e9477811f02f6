//! Blob behaviour: names through `store.blobs` and `store.outbox.apply`, bytes through
//! `store.objects`.
use bytes::Bytes;
use shared::{BlobWrite, Effects, Store, StoreError};

use super::app;

fn put(name: &str, object: &str, size: u64) -> BlobWrite {
    BlobWrite::Put {
        name: name.into(),
        object: object.into(),
        size,
        content_type: Some("text/plain".into()),
    }
}

fn blobs(writes: Vec<BlobWrite>) -> Effects {
    Effects {
        blobs: writes,
        ..Effects::default()
    }
}

async fn names(store: &Store, app_name: &str, prefix: &str, after: Option<&str>) -> Vec<String> {
    store
        .blobs
        .list(&app(app_name), prefix, after, 100)
        .await
        .expect("list")
        .into_iter()
        .map(|b| b.name)
        .collect()
}

pub async fn objects_round_trip_and_a_missing_object_is_not_found(store: &Store) {
    let shop = app("shop");
    let key = store
        .objects
        .put(&shop, Bytes::from_static(b"\x00bytes\xff"))
        .await
        .expect("put");
    assert!(key.starts_with("shop/"), "{key}");
    assert_eq!(
        store.objects.get(&key).await.expect("get"),
        &b"\x00bytes\xff"[..]
    );
    let empty = store
        .objects
        .put(&shop, Bytes::new())
        .await
        .expect("put empty");
    assert_ne!(empty, key);
    assert!(
        store
            .objects
            .get(&empty)
            .await
            .expect("get empty")
            .is_empty()
    );
    store.objects.delete(&key).await.expect("delete");
    store.objects.delete(&empty).await.expect("delete");
    assert!(matches!(
        store.objects.get(&key).await,
        Err(StoreError::NotFound("blob"))
    ));
    store
        .objects
        .delete(&key)
        .await
        .expect("a missing object deletes fine");
    store.objects.sweep().await.expect("sweep");
}

pub async fn blob_put_overwrite_and_delete_free_exactly_the_old_objects(store: &Store) {
    let shop = app("shop");
    store.apps.create(&shop).await.expect("create app");
    let first = store
        .objects
        .put(&shop, Bytes::from_static(b"one"))
        .await
        .expect("put");
    store
        .outbox
        .apply(&shop, &blobs(vec![put("a.txt", &first, 3)]))
        .await
        .expect("apply");
    let meta = store
        .blobs
        .get(&shop, "a.txt")
        .await
        .expect("get")
        .expect("named");
    assert_eq!((meta.object.as_str(), meta.size), (first.as_str(), 3));
    assert_eq!(meta.content_type.as_deref(), Some("text/plain"));

    // Overwrite: the name moves to the new object and the old one is removed.
    let second = store
        .objects
        .put(&shop, Bytes::from_static(b"two!"))
        .await
        .expect("put");
    store
        .outbox
        .apply(&shop, &blobs(vec![put("a.txt", &second, 4)]))
        .await
        .expect("apply");
    let meta = store
        .blobs
        .get(&shop, "a.txt")
        .await
        .expect("get")
        .expect("named");
    assert_eq!((meta.object.as_str(), meta.size), (second.as_str(), 4));
    assert_eq!(
        store.objects.get(&second).await.expect("new object"),
        "two!"
    );
    assert!(matches!(
        store.objects.get(&first).await,
        Err(StoreError::NotFound("blob"))
    ));

    // Two puts of one name in one apply: the middle object is freed too.
    let third = store
        .objects
        .put(&shop, Bytes::from_static(b"3"))
        .await
        .expect("put");
    let fourth = store
        .objects
        .put(&shop, Bytes::from_static(b"4"))
        .await
        .expect("put");
    store
        .outbox
        .apply(
            &shop,
            &blobs(vec![put("a.txt", &third, 1), put("a.txt", &fourth, 1)]),
        )
        .await
        .expect("apply");
    for freed in [&second, &third] {
        assert!(matches!(
            store.objects.get(freed).await,
            Err(StoreError::NotFound("blob"))
        ));
    }
    assert_eq!(store.objects.get(&fourth).await.expect("kept"), "4");

    // A delete through the effects frees the object; the admin delete hands it back.
    store
        .outbox
        .apply(
            &shop,
            &blobs(vec![BlobWrite::Delete {
                name: "a.txt".into(),
            }]),
        )
        .await
        .expect("apply");
    assert!(
        store
            .blobs
            .get(&shop, "a.txt")
            .await
            .expect("get")
            .is_none()
    );
    assert!(matches!(
        store.objects.get(&fourth).await,
        Err(StoreError::NotFound("blob"))
    ));
    store
        .outbox
        .apply(&shop, &blobs(vec![put("b.txt", "shop/kept-by-caller", 0)]))
        .await
        .expect("apply");
    assert_eq!(
        store
            .blobs
            .delete(&shop, "b.txt")
            .await
            .expect("delete")
            .as_deref(),
        Some("shop/kept-by-caller")
    );
    assert_eq!(
        store
            .blobs
            .delete(&shop, "b.txt")
            .await
            .expect("delete again"),
        None
    );
}

pub async fn blobs_list_by_prefix_with_paging_and_empty_blobs_are_valid(store: &Store) {
    let shop = app("shop");
    store.apps.create(&shop).await.expect("create app");
    let empty = store.objects.put(&shop, Bytes::new()).await.expect("put");
    let writes = vec![
        put("img/a.png", "shop/o1", 10),
        put("img/b.png", "shop/o2", 20),
        put("img/c.png", "shop/o3", 30),
        put("imgs", "shop/o4", 1),
        BlobWrite::Put {
            name: "empty".into(),
            object: empty.clone(),
            size: 0,
            content_type: None,
        },
    ];
    store
        .outbox
        .apply(&shop, &blobs(writes))
        .await
        .expect("apply");
    assert_eq!(
        names(store, "shop", "img/", None).await,
        ["img/a.png", "img/b.png", "img/c.png"]
    );
    assert_eq!(
        names(store, "shop", "img/", Some("img/a.png")).await,
        ["img/b.png", "img/c.png"]
    );
    let page = store.blobs.list(&shop, "", None, 2).await.expect("list");
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].name, "empty");
    let meta = store
        .blobs
        .get(&shop, "empty")
        .await
        .expect("get")
        .expect("empty blob");
    assert_eq!((meta.size, meta.content_type), (0, None));
    assert!(
        store
            .objects
            .get(&meta.object)
            .await
            .expect("bytes")
            .is_empty()
    );
}

pub async fn blob_names_of_one_app_are_invisible_to_another(store: &Store) {
    store.apps.create(&app("a")).await.expect("create app");
    store.apps.create(&app("b")).await.expect("create app");
    let long = "n".repeat(4096);
    let crafted = ["../b/x", "/etc/passwd", "%", "_", long.as_str()];
    let writes = crafted.iter().map(|n| put(n, "b/obj", 1)).collect();
    store
        .outbox
        .apply(&app("b"), &blobs(writes))
        .await
        .expect("apply b");
    for name in crafted {
        assert!(
            store
                .blobs
                .get(&app("a"), name)
                .await
                .expect("get")
                .is_none(),
            "{name}"
        );
        assert_eq!(
            store.blobs.delete(&app("a"), name).await.expect("delete"),
            None
        );
        assert!(
            store
                .blobs
                .get(&app("b"), name)
                .await
                .expect("get")
                .is_some(),
            "{name}"
        );
    }
    assert!(names(store, "a", "", None).await.is_empty());
    assert_eq!(names(store, "b", "%", None).await, ["%"]);
    assert_eq!(names(store, "b", "", None).await.len(), crafted.len());
}
