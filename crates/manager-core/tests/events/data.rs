//! KV entries and blobs: paged, read, served and deleted.
use super::*;

async fn kv_entries_are_paged_read_and_deleted(t: &TestApp) {
    let app = t.app_with_script("shop").await;
    let kv = ["users/1", "users/2", "users/3", "zeta"]
        .iter()
        .enumerate()
        .map(|(i, k)| KvWrite::Set {
            key: (*k).to_owned(),
            value: json!({"i": i}),
            ttl: None,
        })
        .collect();
    t.store
        .outbox
        .apply(
            &app,
            &Effects {
                kv,
                ..Effects::default()
            },
        )
        .await
        .expect("apply");

    let page = t
        .call(
            Method::GET,
            "/api/v1/apps/shop/kv?prefix=users%2F&limit=2",
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let keys: Vec<&str> = page.body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["key"].as_str())
        .collect();
    assert_eq!(keys, ["users/1", "users/2"]);
    assert_eq!(page.body["entries"][0]["value"], json!({"i": 0}));
    assert!(page.body["entries"][0]["updated_at"].is_string());
    assert_eq!(page.body["entries"][0]["expires_at"], Value::Null);
    assert_eq!(page.body["next_after"], "users/2");
    let rest = t
        .call(
            Method::GET,
            "/api/v1/apps/shop/kv?prefix=users%2F&limit=2&after=users%2F2",
            None,
        )
        .await;
    assert_eq!(rest.body["entries"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest.body["entries"][0]["key"], "users/3");
    assert_eq!(rest.body["next_after"], Value::Null);
    let all = t.call(Method::GET, "/api/v1/apps/shop/kv", None).await;
    assert_eq!(all.body["entries"].as_array().map(Vec::len), Some(4));

    let got = t
        .call(Method::GET, "/api/v1/apps/shop/kv/users%2F3", None)
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["key"], "users/3");
    assert_eq!(got.body["value"], json!({"i": 2}));
    let deleted = t
        .call(Method::DELETE, "/api/v1/apps/shop/kv/users%2F3", None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/shop/kv/users%2F3", None)
            .await,
        404,
        "not_found",
    );
    assert_error(
        &t.call(Method::DELETE, "/api/v1/apps/shop/kv/users%2F3", None)
            .await,
        404,
        "not_found",
    );
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/shop/kv/a%00", None).await,
        400,
        "invalid_input",
    );
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/shop/kv?limit=5000", None)
            .await,
        400,
        "invalid_input",
    );
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/shop/kv?color=red", None)
            .await,
        400,
        "invalid_input",
    );
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/nowhere/kv", None).await,
        404,
        "not_found",
    );
    // Another app sees none of it.
    t.app_with_script("other").await;
    let other = t.call(Method::GET, "/api/v1/apps/other/kv", None).await;
    assert_eq!(other.body["entries"], json!([]));
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/other/kv/zeta", None)
            .await,
        404,
        "not_found",
    );
}

async fn put_blob(t: &TestApp, app: &AppName, name: &str, data: &[u8], content_type: Option<&str>) {
    let object = t
        .store
        .objects
        .put(app, bytes::Bytes::copy_from_slice(data))
        .await
        .expect("object");
    let effects = Effects {
        blobs: vec![BlobWrite::Put {
            name: name.to_owned(),
            object,
            size: data.len() as u64,
            content_type: content_type.map(str::to_owned),
        }],
        ..Effects::default()
    };
    t.store.outbox.apply(app, &effects).await.expect("apply");
}

async fn a_blob_is_served_with_its_exact_bytes_and_content_type(t: &TestApp) {
    let app = t.app_with_script("shop").await;
    let png: Vec<u8> = (0..=255u8).chain([0, 0, 13, 10]).collect();
    put_blob(t, &app, "img/logo.png", &png, Some("image/png")).await;
    put_blob(t, &app, "notes.txt", b"", None).await;
    put_blob(
        t,
        &app,
        "page.html",
        b"<script>alert(1)</script>",
        Some("text/html"),
    )
    .await;

    let got = t
        .call(Method::GET, "/api/v1/apps/shop/blobs/img/logo.png", None)
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.bytes, png);
    assert_eq!(got.headers[header::CONTENT_TYPE], "image/png");
    let empty = t
        .call(Method::GET, "/api/v1/apps/shop/blobs/notes.txt", None)
        .await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.bytes.is_empty());
    assert_eq!(
        empty.headers[header::CONTENT_TYPE],
        "application/octet-stream"
    );
    let html = t
        .call(Method::GET, "/api/v1/apps/shop/blobs/page.html", None)
        .await;
    assert_eq!(html.headers[header::CONTENT_DISPOSITION], "attachment");
    assert_eq!(html.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");

    let list = t
        .call(Method::GET, "/api/v1/apps/shop/blobs?limit=2", None)
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert_eq!(list.body["blobs"][0]["name"], "img/logo.png");
    assert_eq!(list.body["blobs"][0]["size"], png.len());
    assert_eq!(list.body["blobs"][0]["content_type"], "image/png");
    assert!(
        list.body["blobs"][0].get("object").is_none(),
        "object keys stay inside"
    );
    assert_eq!(list.body["next_after"], "notes.txt");
    let rest = t
        .call(Method::GET, "/api/v1/apps/shop/blobs?after=notes.txt", None)
        .await;
    assert_eq!(rest.body["blobs"][0]["name"], "page.html");
    let prefixed = t
        .call(Method::GET, "/api/v1/apps/shop/blobs?prefix=img%2F", None)
        .await;
    assert_eq!(prefixed.body["blobs"].as_array().map(Vec::len), Some(1));

    let deleted = t
        .call(Method::DELETE, "/api/v1/apps/shop/blobs/img/logo.png", None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/shop/blobs/img/logo.png", None)
            .await,
        404,
        "not_found",
    );
    assert_error(
        &t.call(Method::DELETE, "/api/v1/apps/shop/blobs/img/logo.png", None)
            .await,
        404,
        "not_found",
    );
    // Another app cannot read this app's blobs, whatever the name.
    t.app_with_script("other").await;
    for name in ["notes.txt", "..%2Fshop%2Fnotes.txt", "../shop/notes.txt"] {
        let crossed = t
            .call(
                Method::GET,
                &format!("/api/v1/apps/other/blobs/{name}"),
                None,
            )
            .await;
        assert!(
            crossed.status == StatusCode::NOT_FOUND || crossed.status == StatusCode::BAD_REQUEST,
            "{name}: {}",
            crossed.status
        );
        assert!(
            crossed.bytes.len() < 200 && !String::from_utf8_lossy(&crossed.bytes).contains("alert")
        );
    }
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/shop/blobs/a%01b", None)
            .await,
        400,
        "invalid_input",
    );
}

on_both_backends!(
    with_app =>
    kv_entries_are_paged_read_and_deleted,
    a_blob_is_served_with_its_exact_bytes_and_content_type,
);
