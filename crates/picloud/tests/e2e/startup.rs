//! What a start checks and sets up: the data directory's lock and permissions, the secrets
//! key against the database, the bootstrap admin token, readiness of the schema.
use std::path::Path;

use picloud::{Config, Server};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::common::spawn_app_with;
use storage::testing::TestUrl;
use testkit::{Backend, on_both_backends};

on_both_backends!(
    a_changed_admin_token_revokes_the_previous_one_and_a_revoked_one_stays_revoked,
    a_missing_or_wrong_secrets_key_with_stored_secrets_stops_the_start,
    readiness_fails_when_the_schema_is_not_migrated,
);

/// A server started (and stopped) by hand, for tests that start twice on one database.
struct Started {
    url: String,
    shutdown: CancellationToken,
    server: Server,
}

impl Started {
    async fn stop(self) {
        self.shutdown.cancel();
        self.server.wait().await.expect("clean shutdown");
    }
}

async fn start(config: Config) -> anyhow::Result<Started> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = picloud::start(listener, config, shutdown.clone()).await?;
    Ok(Started {
        url,
        shutdown,
        server,
    })
}

/// A config on a fresh database (SQLite in `dir`), and the PostgreSQL schema's handle,
/// which drops the schema when the test ends.
async fn fresh(db: Backend, dir: &Path) -> (Config, Option<TestUrl>) {
    match db {
        Backend::Sqlite => (
            Config::for_tests(&dir.join("data"), &storage::testing::fresh_sqlite_url(dir)),
            None,
        ),
        Backend::Postgres => {
            let schema = TestUrl::postgres().await;
            (
                Config::for_tests(&dir.join("data"), &schema.url),
                Some(schema),
            )
        }
    }
}

async fn list_apps(url: &str, token: &str) -> StatusCode {
    reqwest::Client::new()
        .get(format!("{url}/api/v1/apps"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

async fn a_changed_admin_token_revokes_the_previous_one_and_a_revoked_one_stays_revoked(
    db: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, _schema) = fresh(db, dir.path()).await;
    let first = "first-admin-token-0123456789";
    let second = "second-admin-token-0123456789";

    config.admin_token = Some(first.into());
    let server = start(config.clone()).await.unwrap();
    assert_eq!(list_apps(&server.url, first).await, StatusCode::OK);
    server.stop().await;

    config.admin_token = Some(second.into());
    let server = start(config.clone()).await.unwrap();
    assert_eq!(list_apps(&server.url, second).await, StatusCode::OK);
    assert_eq!(
        list_apps(&server.url, first).await,
        StatusCode::UNAUTHORIZED
    );
    // Revoke the bootstrap token through the API (with another token).
    let client = reqwest::Client::new();
    let created: serde_json::Value = client
        .post(format!("{}/api/v1/tokens", server.url))
        .bearer_auth(second)
        .json(&json!({"name": "ops"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ops = created["token"].as_str().expect("a new token").to_owned();
    let tokens: serde_json::Value = client
        .get(format!("{}/api/v1/tokens", server.url))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let admin = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "admin")
        .expect("the bootstrap token is listed");
    let res = client
        .delete(format!(
            "{}/api/v1/tokens/{}",
            server.url,
            admin["id"].as_str().unwrap()
        ))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    server.stop().await;

    // The same value on the next start does not bring it back.
    let server = start(config).await.unwrap();
    assert_eq!(
        list_apps(&server.url, second).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(list_apps(&server.url, &ops).await, StatusCode::OK);
    server.stop().await;
}

async fn a_missing_or_wrong_secrets_key_with_stored_secrets_stops_the_start(db: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (config, _schema) = fresh(db, dir.path()).await;
    let key_file = config.data_dir.join("secret.key");

    // A start with no secrets stored: a lost key file is simply made anew.
    let server = start(config.clone()).await.unwrap();
    server.stop().await;
    std::fs::remove_file(&key_file).unwrap();
    let server = start(config.clone()).await.unwrap();
    let client = reqwest::Client::new();
    let token = picloud::config::TEST_ADMIN_TOKEN;
    let res = client
        .post(format!("{}/api/v1/apps", server.url))
        .bearer_auth(token)
        .json(&json!({"name": "shop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = client
        .put(format!("{}/api/v1/apps/shop/secrets/stripe", server.url))
        .bearer_auth(token)
        .json(&json!({"value": "sk_live_42"}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    server.stop().await;
    let key = std::fs::read(&key_file).unwrap();

    // Lost: the start fails and no new key file takes its place.
    std::fs::remove_file(&key_file).unwrap();
    let err = format!("{:#}", start(config.clone()).await.err().expect("refused"));
    assert!(
        err.contains("secrets key file") && err.contains("missing"),
        "{err}"
    );
    assert!(!key_file.exists());

    // Replaced by another key: the start fails and the file is left as it is.
    let other = [7u8; 32];
    std::fs::write(&key_file, other).unwrap();
    let err = format!("{:#}", start(config.clone()).await.err().expect("refused"));
    assert!(err.contains("not the key that sealed"), "{err}");
    assert_eq!(std::fs::read(&key_file).unwrap(), other);

    // Restored: the secret is readable again.
    std::fs::write(&key_file, &key).unwrap();
    let server = start(config).await.unwrap();
    let shop = shared::AppName::parse("shop").unwrap();
    assert_eq!(
        server
            .server
            .store
            .settings
            .secret_get(&shop, "stripe")
            .await
            .unwrap()
            .as_deref(),
        Some("sk_live_42")
    );
    server.stop().await;
}

async fn readiness_fails_when_the_schema_is_not_migrated(db: Backend) {
    let app = spawn_app_with(db, |_| {}).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    // The newest migration's record disappears (a database restored from an older backup).
    let forget =
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)";
    match db {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.database_url).await.unwrap();
            sqlx::query(forget).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&app.database_url).await.unwrap();
            sqlx::query(forget).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert_eq!(
        body["error"]["message"],
        "the database schema is not migrated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_directory_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _schema) = fresh(Backend::Sqlite, dir.path()).await;
    let first = start(config.clone()).await.unwrap();
    let err = format!("{:#}", start(config.clone()).await.err().expect("refused"));
    assert!(err.contains("is in use by another PiCloud server"), "{err}");
    // The first one is unharmed, and once it has stopped the directory is free again.
    let res = reqwest::get(format!("{}/readyz", first.url)).await.unwrap();
    assert_eq!(res.status(), 200);
    first.stop().await;
    start(config).await.unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_token_shorter_than_16_characters_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, _schema) = fresh(Backend::Sqlite, dir.path()).await;
    config.admin_token = Some("x".into());
    let err = format!("{:#}", start(config.clone()).await.err().expect("refused"));
    assert!(
        err.contains("PICLOUD_ADMIN_TOKEN must be at least 16"),
        "{err}"
    );
    config.admin_token = Some("exactly-16-chars".into());
    start(config).await.unwrap().stop().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_and_everything_in_it_are_private_to_the_server_user() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app_with(Backend::Sqlite, |c| c.database_url = None).await;
    app.endpoint(
        "shop",
        "put",
        "POST /put",
        r#"blob::put("a.txt", "hello"); "ok""#,
    )
    .await;
    assert_eq!(
        app.call(Method::POST, "/shop/put")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let res = app
        .admin(Method::PUT, "/apps/shop/secrets/k")
        .json(&json!({"value": "v"}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());

    let data = app.dir.path().join("data");
    let mut seen = Vec::new();
    let mut stack = vec![data.clone()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        let expected = if meta.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, expected, "{} has mode {mode:o}", path.display());
        seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    for name in ["picloud.db", "secret.key", "blobs", "picloud.lock"] {
        assert!(seen.iter().any(|s| s == name), "{name} in {seen:?}");
    }
}
