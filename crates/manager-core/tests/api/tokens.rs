//! API tokens: created, listed, deleted, hashed at rest, bootstrapped, and required.
use super::*;

async fn requests_without_a_valid_token_are_unauthorized(t: &TestApp) {
    let none = t.call_as(None, Method::GET, "/api/v1/apps", None).await;
    assert_error(&none, 401, "unauthorized");
    assert_eq!(none.headers[header::WWW_AUTHENTICATE], "Bearer");
    let wrong = t
        .call_as(Some("pct_wrong"), Method::GET, "/api/v1/apps", None)
        .await;
    assert_error(&wrong, 401, "unauthorized");
    assert_eq!(wrong.headers[header::WWW_AUTHENTICATE], "Bearer");
}

async fn tokens_can_be_created_listed_and_deleted_but_not_the_last_one(t: &TestApp) {
    let created = t
        .call(Method::POST, "/api/v1/tokens", Some(json!({"name": "ci"})))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let secret = created.body["token"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("pct_"));
    assert_eq!(created.body["name"], "ci");
    let ci_id = created.body["id"].as_str().expect("id").to_owned();

    // The new token works.
    let as_ci = t
        .call_as(Some(&secret), Method::GET, "/api/v1/tokens", None)
        .await;
    assert_eq!(as_ci.status, StatusCode::OK);
    let tokens = as_ci.body["tokens"].as_array().expect("tokens");
    assert_eq!(tokens.len(), 2);
    assert!(
        tokens
            .iter()
            .all(|t| t.get("token").is_none() && t.get("secret_hash").is_none())
    );

    // Delete the admin token with the ci one; then the admin token no longer works.
    let admin_id = tokens
        .iter()
        .find(|t| t["name"] == "admin")
        .and_then(|t| t["id"].as_str())
        .expect("admin")
        .to_owned();
    let deleted = t
        .call_as(
            Some(&secret),
            Method::DELETE,
            &format!("/api/v1/tokens/{admin_id}"),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_error(
        &t.call(Method::GET, "/api/v1/apps", None).await,
        401,
        "unauthorized",
    );

    let last = t
        .call_as(
            Some(&secret),
            Method::DELETE,
            &format!("/api/v1/tokens/{ci_id}"),
            None,
        )
        .await;
    assert_error(&last, 409, "conflict");
    assert_eq!(
        t.call_as(Some(&secret), Method::GET, "/api/v1/apps", None)
            .await
            .status,
        StatusCode::OK
    );

    assert_error(
        &t.call_as(
            Some(&secret),
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": ""})),
        )
        .await,
        400,
        "invalid_input",
    );
}

#[tokio::test]
async fn token_secrets_are_never_stored_in_clear() {
    let t = spawn_app_on(Backend::Sqlite, DEFAULT_LIMIT).await;
    let created = t
        .call(Method::POST, "/api/v1/tokens", Some(json!({"name": "ci"})))
        .await;
    let secret = created.body["token"].as_str().expect("secret").to_owned();
    t.store.health.close().await;
    let db_path = t.sqlite_path().expect("a SQLite test");
    let mut bytes = std::fs::read(&db_path).expect("db file");
    let wal = db_path.with_extension("db-wal");
    if let Ok(more) = std::fs::read(&wal) {
        bytes.extend(more);
    }
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains(&hash_token(&secret)), "the hash is what is stored");
    assert!(!contains(&secret), "the secret is not");
    assert!(!contains(&t.token), "nor the admin's");
}

#[tokio::test]
async fn bootstrap_creates_one_admin_token_only_when_none_exists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = storage::connect(&format!("sqlite://{}/b.db", dir.path().display()))
        .await
        .expect("connect");
    let first = bootstrap_admin_token(&store, None)
        .await
        .expect("bootstrap")
        .expect("created");
    assert!(first.starts_with("pct_") && first.len() == 68);
    let found = store
        .tokens
        .find_by_hash(&hash_token(&first))
        .await
        .expect("find")
        .expect("stored");
    assert_eq!(found.name, "admin");
    assert_eq!(
        bootstrap_admin_token(&store, None).await.expect("again"),
        None
    );
    assert_eq!(store.tokens.count().await.expect("count"), 1);
}

async fn an_admin_token_from_the_environment_is_accepted(t: &TestApp) {
    let env_token = "my-operator-secret";
    assert_eq!(
        bootstrap_admin_token(&t.store, Some(env_token))
            .await
            .expect("bootstrap"),
        None
    );
    // Twice is fine: the hash is stored once.
    assert_eq!(
        bootstrap_admin_token(&t.store, Some(env_token))
            .await
            .expect("bootstrap"),
        None
    );
    assert_eq!(t.store.tokens.count().await.expect("count"), 2);
    let answer = t
        .call_as(Some(env_token), Method::GET, "/api/v1/apps", None)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
}

on_both_backends!(
    with_app =>
    requests_without_a_valid_token_are_unauthorized,
    tokens_can_be_created_listed_and_deleted_but_not_the_last_one,
    an_admin_token_from_the_environment_is_accepted,
);
