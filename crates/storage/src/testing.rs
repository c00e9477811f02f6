//! Fresh, isolated databases for tests: one SQLite file per test in its own temporary
//! directory, or one PostgreSQL schema per test on `PICLOUD_TEST_DATABASE_URL`. Tests
//! therefore run in parallel without seeing each other's rows.
//!
//! Whatever a test made goes when its handle drops, also when the test panics: the
//! temporary directory is removed and the PostgreSQL schema dropped. Schema names carry
//! their creation time (`picloud_t_` and a UUIDv7), so a sweep can tell a leftover of a
//! killed run (older than a day) from a schema a running test still uses.
//!
//! These helpers panic instead of returning errors: a test whose database cannot be made
//! must fail, never be skipped.
use std::path::{Path, PathBuf};

use shared::Store;

use crate::Backend;

/// The PostgreSQL server tests use when `PICLOUD_TEST_DATABASE_URL` is not set.
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh, empty database for a test that opens its own pools (a server, a second node):
/// a SQLite file in a new temporary directory or a new PostgreSQL schema. Dropping it
/// removes the directory or drops the schema; close the pools on it first.
pub struct TestUrl {
    pub url: String,
    dir: Option<tempfile::TempDir>,
    schema: Option<Schema>,
}

impl TestUrl {
    /// # Panics
    /// See [`TestUrl::sqlite`] and [`TestUrl::postgres`].
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::sqlite(),
            Backend::Postgres => Self::postgres().await,
        }
    }

    /// # Panics
    /// When the temporary directory cannot be made.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Self {
            url: fresh_sqlite_url(dir.path()),
            dir: Some(dir),
            schema: None,
        }
    }

    /// # Panics
    /// When the server cannot be reached or the schema cannot be created.
    pub async fn postgres() -> Self {
        let schema = Schema::create().await;
        Self {
            url: schema.url(),
            dir: None,
            schema: Some(schema),
        }
    }

    pub fn backend(&self) -> Backend {
        if self.schema.is_some() {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// The PostgreSQL schema's name (`None` on SQLite).
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_ref().map(|s| s.0.as_str())
    }

    /// The SQLite file (`None` on PostgreSQL).
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("picloud.db"))
    }

    /// Run `sql` (the test's own statement, never input) on this database on a connection
    /// of its own: e.g. to take a table away under a running server and put it back.
    ///
    /// # Panics
    /// When the database cannot be reached or the statement fails.
    pub async fn execute(&self, sql: &'static str) {
        use sqlx::Connection;
        match self.backend() {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .unwrap_or_else(|e| panic!("cannot open the test database: {e}"));
                sqlx::query(sql)
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                conn.close().await.ok();
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url)
                    .await
                    .unwrap_or_else(|e| panic!("cannot reach the test database: {e}"));
                sqlx::query(sql)
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                conn.close().await.ok();
            }
        }
    }

    /// Remove the SQLite directory or drop the PostgreSQL schema now (dropping the handle
    /// does the same); close every pool on it first.
    pub async fn close(mut self) {
        if let Some(mut schema) = self.schema.take() {
            drop_schema(&std::mem::take(&mut schema.0)).await;
        }
    }
}

/// A migrated store on a fresh database ([`TestUrl`]), with whatever keeps it alive.
pub struct TestDb {
    pub store: Store,
    pub db: TestUrl,
}

impl TestDb {
    /// # Panics
    /// When the database cannot be made or migrated.
    pub async fn new(backend: Backend) -> Self {
        let db = TestUrl::new(backend).await;
        let store = crate::connect(&db.url)
            .await
            .unwrap_or_else(|e| panic!("a fresh {backend:?} store: {e:?}"));
        Self { store, db }
    }

    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// Close the pool, then remove what the test made. Dropping the handle removes it too,
    /// without waiting for the pool to close first.
    pub async fn close(self) {
        self.store.health.close().await;
        self.db.close().await;
    }
}

/// A test's PostgreSQL schema; dropping it drops the schema (empty once dropped).
struct Schema(String);

impl Schema {
    async fn create() -> Self {
        // A UUIDv7 starts with its creation time in milliseconds: scripts/test.sh sweeps
        // only schemas older than a day, never one a running test uses.
        let schema = format!("picloud_t_{}", uuid::Uuid::now_v7().simple());
        let mut conn = connect_base().await;
        // The schema name is ours (a fixed prefix and hex digits), never input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create the test schema: {e}"));
        sqlx::Connection::close(conn).await.ok();
        Self(schema)
    }

    /// A URL whose connections use the schema as their `search_path`, so tables and the
    /// migration history land in it.
    fn url(&self) -> String {
        let base = base_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options=-c%20search_path%3D{}", self.0)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let schema = std::mem::take(&mut self.0);
        if schema.is_empty() {
            return;
        }
        // Drop cannot await and may run on a runtime's thread (which must not block on
        // that runtime): a thread of its own with a runtime of its own does the work.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(drop_schema(&schema));
        })
        .join();
        if dropped.is_err() {
            eprintln!("a test schema was left behind (see the panic above)");
        }
    }
}

fn base_url() -> String {
    std::env::var("PICLOUD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned())
}

async fn connect_base() -> sqlx::PgConnection {
    <sqlx::PgConnection as sqlx::Connection>::connect(&base_url())
        .await
        .unwrap_or_else(|e| panic!("the PostgreSQL test server is unreachable: {e}"))
}

/// Drop a test schema and everything in it. A connection still inside a transaction on
/// it (a server the test did not stop) holds locks: wait for those a bounded time.
async fn drop_schema(schema: &str) {
    let mut conn = connect_base().await;
    sqlx::query("SET lock_timeout = '10s'")
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot set lock_timeout: {e}"));
    // The schema name is ours (a fixed prefix and hex digits), never input.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("cannot drop the test schema {schema}: {e}"));
    sqlx::Connection::close(conn).await.ok();
}

/// A URL for a new SQLite file inside `dir`.
pub fn fresh_sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("picloud.db").display())
}

/// A migrated PostgreSQL store in a new schema whose `now()` runs `behind_secs` seconds
/// behind the server's clock: the database as a node whose clock is ahead of it sees it.
///
/// # Panics
/// When the server is unreachable, the function cannot be created or migrating fails.
pub async fn skewed_postgres_store(behind_secs: u32) -> TestDb {
    let schema = Schema::create().await;
    // Named explicitly, pg_catalog comes after the schema, so the schema's now() wins.
    let skewed = format!("{}%2Cpg_catalog", schema.url());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&skewed)
        .await
        .unwrap_or_else(|e| panic!("the PostgreSQL test server is unreachable: {e}"));
    // The schema name is ours (a fixed prefix and hex digits), never input.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION {}.now() RETURNS timestamptz LANGUAGE sql STABLE \
         AS $$ SELECT pg_catalog.now() - interval '{behind_secs} seconds' $$",
        schema.0
    )))
    .execute(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("cannot shadow now(): {e}"));
    sqlx::Connection::close(conn).await.ok();
    let store = crate::connect(&skewed)
        .await
        .unwrap_or_else(|e| panic!("a fresh PostgreSQL store: {e:?}"));
    TestDb {
        store,
        db: TestUrl {
            url: skewed,
            dir: None,
            schema: Some(schema),
        },
    }
}

/// A migrated SQLite store in a new temporary directory.
///
/// # Panics
/// When the directory or the database cannot be created.
pub async fn sqlite_store() -> TestDb {
    TestDb::new(Backend::Sqlite).await
}

/// A migrated PostgreSQL store in a new schema.
///
/// # Panics
/// When the server is unreachable or migrating fails.
pub async fn postgres_store() -> TestDb {
    TestDb::new(Backend::Postgres).await
}

/// An S3-compatible server for tests, with a bucket `picloud-test`: the one at
/// `PICLOUD_TEST_S3_ENDPOINT` (the bucket must exist there), or a `moto_server` (pip
/// `moto[server]`) started on a free loopback port and ended on drop.
pub struct S3Server {
    pub endpoint: String,
    child: Option<std::process::Child>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

impl S3Server {
    /// The bucket every test uses.
    pub const BUCKET: &'static str = "picloud-test";

    /// `None` (said on stderr) when there is neither an endpoint nor `moto_server`: S3 is
    /// optional, the local store is the default.
    ///
    /// # Panics
    /// When `PICLOUD_TEST_REQUIRE_S3` is set and there is no S3 server (scripts/test.sh, and
    /// so CI, installs moto and requires the S3 tests), or moto fails to start.
    pub async fn start() -> Option<S3Server> {
        if let Ok(endpoint) = std::env::var("PICLOUD_TEST_S3_ENDPOINT") {
            return Some(S3Server {
                endpoint,
                child: None,
            });
        }
        let Some(server) = Self::start_moto() else {
            assert!(
                std::env::var_os("PICLOUD_TEST_REQUIRE_S3").is_none(),
                "PICLOUD_TEST_REQUIRE_S3 is set but moto_server is not installed"
            );
            eprintln!("no S3 server: set PICLOUD_TEST_S3_ENDPOINT or install moto[server]");
            return None;
        };
        server.create_bucket(Self::BUCKET).await;
        Some(server)
    }

    /// Start `moto_server` and wait until it says it listens; `None` when it is not
    /// installed.
    fn start_moto() -> Option<S3Server> {
        use std::io::BufRead;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = std::io::BufReader::new(stderr).lines();
        let ready = lines
            .by_ref()
            .any(|l| l.is_ok_and(|l| l.contains("Running on")));
        assert!(ready, "moto_server exited before listening");
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Some(S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            child: Some(child),
        })
    }

    /// Create `bucket` (moto accepts any credentials).
    ///
    /// # Panics
    /// When the server does not answer 200.
    pub async fn create_bucket(&self, bucket: &str) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let host = self.endpoint.trim_start_matches("http://");
        let mut conn = tokio::net::TcpStream::connect(host).await.expect("connect");
        let request = format!(
            "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        conn.read_to_string(&mut response).await.expect("read");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
}
