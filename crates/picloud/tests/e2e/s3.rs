//! Two nodes on one PostgreSQL share one S3-compatible bucket (a local `moto_server`): a
//! blob written through one node is read, and deleted, through the other.
use std::time::Duration;

use reqwest::{Method, StatusCode};
use storage::testing::Moto;

use crate::common::{TestApp, spawn_app_with};
use picloud::Config;
use testkit::Backend;

const BUCKET: &str = "picloud-cluster";
const WAIT: Duration = Duration::from_secs(20);

fn on_bucket(config: &mut Config, endpoint: &str) {
    config.blobs.s3_endpoint = Some(endpoint.to_owned());
    config.blobs.s3_bucket = Some(BUCKET.into());
    config.blobs.s3_region = Some("us-east-1".into());
    config.blobs.s3_access_key_id = Some("test".into());
    config.blobs.s3_secret_access_key = Some("test".into());
    config.blobs.s3_allow_http = true;
}

/// The object keys in the bucket, as moto lists them.
async fn keys(moto: &Moto) -> Vec<String> {
    let listing = reqwest::get(format!("{}/{BUCKET}?list-type=2", moto.endpoint))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    listing
        .split("<Key>")
        .skip(1)
        .map(|k| k.split('<').next().unwrap_or_default().to_owned())
        .collect()
}

async fn body(node: &TestApp, path: &str) -> (StatusCode, String) {
    let res = node.get(path).await;
    (res.status(), res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_written_through_one_node_is_read_and_deleted_through_the_other() {
    let Some(moto) = Moto::start() else {
        // scripts/test.sh (and so CI) installs moto and requires this test.
        assert!(
            std::env::var_os("PICLOUD_TEST_REQUIRE_S3").is_none(),
            "PICLOUD_TEST_REQUIRE_S3 is set but moto_server is not installed"
        );
        eprintln!("no moto_server: pip install 'moto[server]' to run the shared-bucket test");
        return;
    };
    moto.create_bucket(BUCKET).await;
    let endpoint = moto.endpoint.clone();
    let a = spawn_app_with(Backend::Postgres, |c| on_bucket(c, &endpoint)).await;
    let (url, key) = (
        a.database_url.clone(),
        a.dir.path().join("data").join("secret.key"),
    );
    let b = spawn_app_with(Backend::Postgres, |c| {
        on_bucket(c, &endpoint);
        c.database_url = Some(url);
        c.secrets_key_file = Some(key);
    })
    .await;

    a.endpoint(
        "files",
        "upload",
        "PUT /files/:name",
        r#"blob::put(request.params.name, request.body, "text/plain"); "stored""#,
    )
    .await;
    a.endpoint(
        "files",
        "download",
        "GET /files/:name",
        r#"let b = blob::get(request.params.name); if b == () { response(404, "none") } else { b.data }"#,
    )
    .await;
    a.endpoint(
        "files",
        "remove",
        "DELETE /files/:name",
        r#"blob::delete(request.params.name); "gone""#,
    )
    .await;
    testkit::eventually("node b serves the app", WAIT, async || {
        (b.get("/files/files/none").await.status() == 404).then_some(())
    })
    .await;

    let res = a
        .call(Method::PUT, "/files/files/report.txt")
        .body("written on a")
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "stored");
    // Read through b: its bytes come from the shared bucket (b's data directory has none).
    assert_eq!(
        body(&b, "/files/files/report.txt").await,
        (StatusCode::OK, "written on a".to_owned())
    );
    let b_blobs = b.dir.path().join("data").join("blobs");
    assert!(
        !b_blobs.join("files").exists(),
        "node b keeps no local copy"
    );
    let stored = keys(&moto).await;
    assert!(
        stored.len() == 1 && stored[0].starts_with("files/"),
        "{stored:?}"
    );
    // The admin API of b reads it too.
    let res = b
        .admin(Method::GET, "/apps/files/blobs/report.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "written on a");

    // Deleted through b: gone for a.
    let res = b
        .call(Method::DELETE, "/files/files/report.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "gone");
    assert_eq!(
        body(&a, "/files/files/report.txt").await,
        (StatusCode::NOT_FOUND, "none".to_owned())
    );
    // And the object itself left the bucket.
    testkit::eventually("the object is deleted from the bucket", WAIT, async || {
        keys(&moto).await.is_empty().then_some(())
    })
    .await;
}
