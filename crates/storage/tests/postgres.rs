//! The conformance suite on PostgreSQL (`PICLOUD_TEST_DATABASE_URL`, default
//! postgres://postgres@127.0.0.1:5432/test), one schema per test. An unreachable server
//! fails these tests; it never skips them.
picloud_storage::conformance_tests!(picloud_storage::testing::postgres_store);

#[tokio::test]
async fn a_fresh_postgres_url_puts_the_tables_in_its_own_schema() {
    use sqlx::Connection;
    let db = picloud_storage::testing::TestUrl::postgres().await;
    let url = db.url.clone();
    let store = picloud_storage::connect(&url).await.expect("connect");
    assert_eq!(store.health.backend(), "postgres");
    store.health.close().await;
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    let (schema,): (String,) = sqlx::query_as("SELECT current_schema()")
        .fetch_one(&mut conn)
        .await
        .expect("current_schema");
    assert!(schema.starts_with("picloud_t_"), "{schema}");
    assert!(url.contains(&schema));
    let (tables,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_one(&mut conn)
    .await
    .expect("count tables");
    // apps, scripts, script_versions, triggers, invocations, api_tokens, _sqlx_migrations;
    // outbox, dead_letters, idempotency_keys; kv, blobs, app_config, app_secrets, mailbox;
    // server_meta, invocation_drops; app_limits, script_limits; http_idempotency;
    // dashboard_sessions; nodes; realtime_apps, realtime_topics, realtime_events;
    // queue_history
    assert_eq!(tables, 26);
    conn.close().await.ok();
    drop(db);
    let mut conn = sqlx::PgConnection::connect(&base_url())
        .await
        .expect("connect");
    let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pg_namespace WHERE nspname = $1")
        .bind(&schema)
        .fetch_one(&mut conn)
        .await
        .expect("count schemas");
    assert_eq!(left, 0, "dropping the handle dropped the schema");
    conn.close().await.ok();
}

#[tokio::test]
async fn a_test_that_panics_still_drops_its_schema() {
    use sqlx::Connection;
    let db = picloud_storage::testing::TestDb::new(picloud_storage::Backend::Postgres).await;
    let schema = db.db.schema().expect("a schema").to_owned();
    let failed = tokio::spawn(async move {
        let _db = db;
        panic!("the test failed");
    })
    .await;
    assert!(failed.is_err());
    let mut conn = sqlx::PgConnection::connect(&base_url())
        .await
        .expect("connect");
    let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pg_namespace WHERE nspname = $1")
        .bind(&schema)
        .fetch_one(&mut conn)
        .await
        .expect("count schemas");
    assert_eq!(left, 0, "the panicking test's schema was dropped");
    conn.close().await.ok();
}

fn base_url() -> String {
    std::env::var("PICLOUD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| picloud_storage::testing::DEFAULT_TEST_DATABASE_URL.to_owned())
}
