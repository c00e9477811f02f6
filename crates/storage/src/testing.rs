//! Fresh, isolated databases for tests: one SQLite file per test in its own temporary
//! directory, or one PostgreSQL schema per test on `PICLOUD_TEST_DATABASE_URL`. Tests
//! therefore run in parallel without seeing each other's rows.
//!
//! These helpers panic instead of returning errors: a test whose database cannot be made
//! must fail, never be skipped.
use std::path::Path;

use shared::Store;

/// The PostgreSQL server tests use when `PICLOUD_TEST_DATABASE_URL` is not set.
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A store on a fresh database, with whatever keeps that database alive.
pub struct TestStore {
    pub store: Store,
    /// Keeps a SQLite test's directory until the store is closed.
    _dir: Option<tempfile::TempDir>,
    /// A PostgreSQL test's schema, dropped on `close`.
    schema: Option<String>,
}

impl TestStore {
    /// Close the pool, then remove what the test made: the SQLite directory or the
    /// PostgreSQL schema. A test that panics before this leaves its schema behind.
    pub async fn close(self) {
        self.store.health.close().await;
        if let Some(schema) = self.schema {
            drop_schema(&schema).await;
        }
    }
}

fn base_url() -> String {
    std::env::var("PICLOUD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned())
}

/// The schema a URL from [`fresh_postgres_url`] points at.
fn schema_of(url: &str) -> Option<String> {
    url.rsplit_once("search_path%3D").map(|(_, s)| s.to_owned())
}

/// A fresh, empty database for a test that opens its own pools: a SQLite file in a new
/// temporary directory or a new PostgreSQL schema.
pub struct TestUrl {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

impl TestUrl {
    /// # Panics
    /// When the temporary directory cannot be made.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Self {
            url: fresh_sqlite_url(dir.path()),
            _dir: Some(dir),
            schema: None,
        }
    }

    /// # Panics
    /// See [`fresh_postgres_url`].
    pub async fn postgres() -> Self {
        let url = fresh_postgres_url().await;
        Self {
            schema: schema_of(&url),
            url,
            _dir: None,
        }
    }

    /// Remove the SQLite directory or drop the PostgreSQL schema; close every pool on it
    /// first.
    pub async fn close(self) {
        if let Some(schema) = self.schema {
            drop_schema(&schema).await;
        }
    }
}

/// Drop a test schema and everything in it.
async fn drop_schema(schema: &str) {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&base_url())
        .await
        .unwrap_or_else(|e| panic!("the PostgreSQL test server is unreachable: {e}"));
    // The schema name is ours (a fixed prefix and hex digits), never input.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("cannot drop the test schema: {e}"));
    sqlx::Connection::close(conn).await.ok();
}

/// A URL for a new SQLite file inside `dir`.
pub fn fresh_sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("picloud.db").display())
}

/// Create a new schema `picloud_t_<uuid>` on `PICLOUD_TEST_DATABASE_URL` (default
/// [`DEFAULT_TEST_DATABASE_URL`]) and return a URL whose connections use it as their
/// `search_path`, so tables and the migration history land in it.
///
/// # Panics
/// When the server cannot be reached or the schema cannot be created: the test fails.
pub async fn fresh_postgres_url() -> String {
    let base = base_url();
    let schema = format!("picloud_t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("the PostgreSQL test server is unreachable: {e}"));
    // The schema name is ours (a fixed prefix and hex digits), never input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create the test schema: {e}"));
    sqlx::Connection::close(conn).await.ok();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

/// A migrated PostgreSQL store in a new schema whose `now()` runs `behind_secs` seconds
/// behind the server's clock: the database as a node whose clock is ahead of it sees it.
///
/// # Panics
/// When the server is unreachable, the function cannot be created or migrating fails.
pub async fn skewed_postgres_store(behind_secs: u32) -> TestStore {
    let url = fresh_postgres_url().await;
    let schema = schema_of(&url).expect("a schema");
    // Named explicitly, pg_catalog comes after the schema, so the schema's now() wins.
    let skewed = format!("{url}%2Cpg_catalog");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&skewed)
        .await
        .unwrap_or_else(|e| panic!("the PostgreSQL test server is unreachable: {e}"));
    // The schema name is ours (a fixed prefix and hex digits), never input.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION {schema}.now() RETURNS timestamptz LANGUAGE sql STABLE \
         AS $$ SELECT pg_catalog.now() - interval '{behind_secs} seconds' $$"
    )))
    .execute(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("cannot shadow now(): {e}"));
    sqlx::Connection::close(conn).await.ok();
    let store = crate::connect(&skewed)
        .await
        .unwrap_or_else(|e| panic!("a fresh PostgreSQL store: {e:?}"));
    TestStore {
        store,
        _dir: None,
        schema: Some(schema),
    }
}

/// A migrated SQLite store in a new temporary directory.
///
/// # Panics
/// When the directory or the database cannot be created.
pub async fn sqlite_store() -> TestStore {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = crate::connect(&fresh_sqlite_url(dir.path()))
        .await
        .expect("a fresh SQLite store");
    TestStore {
        store,
        _dir: Some(dir),
        schema: None,
    }
}

/// A migrated PostgreSQL store in a new schema.
///
/// # Panics
/// When the server is unreachable or migrating fails.
pub async fn postgres_store() -> TestStore {
    let url = fresh_postgres_url().await;
    let store = crate::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("a fresh PostgreSQL store: {e:?}"));
    TestStore {
        store,
        _dir: None,
        schema: schema_of(&url),
    }
}
