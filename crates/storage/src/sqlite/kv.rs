//! KV's statements on SQLite. Values are JSON text; `Incr` checks `json_type` and the
//! 64-bit range itself, because SQLite would silently make an overflowing sum a float.
//!
//! A script's reads (`get_blocking`) do not go through sqlx: `SqliteKvReader` keeps
//! connections of the reading threads' own and runs `GET` on them synchronously.
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use shared::store::KvEntry;
use shared::{AppName, StoreError};
use sqlx::sqlite::SqliteConnection;
use sqlx::{Sqlite, SqlitePool};

use super::MultiRow;
use crate::repo::kv::{BlockingGet, KvSql, SetRow, Writing};
use crate::{app_missing, now};

impl KvSql for Sqlite {
    const GET: &'static str = "SELECT key, value, updated_at, expires_at FROM kv
     WHERE app = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)";
    const LIST: &'static str = "SELECT key, value, updated_at, expires_at FROM kv
     WHERE app = ?1 AND key >= ?2 AND (?3 IS NULL OR key < ?3) AND (?4 IS NULL OR key > ?4)
       AND (expires_at IS NULL OR expires_at > ?5)
     ORDER BY key LIMIT ?6";
    const DELETE_LIVE: &'static str =
        "DELETE FROM kv WHERE app = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)";
    const DELETE: &'static str = "DELETE FROM kv WHERE app = ?1 AND key = ?2";
    const SET: &'static str = "INSERT INTO kv (app, key, value, updated_at, expires_at)
     VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (app, key) DO UPDATE SET
         value = excluded.value, updated_at = excluded.updated_at,
         expires_at = excluded.expires_at";
    /// An expired entry counts as missing (starts from 0, loses its expiry); a live one keeps
    /// its expiry. The `WHERE` refuses a live non-integer, which changes no row.
    const INCR: &'static str = "INSERT INTO kv (app, key, value, updated_at, expires_at)
     VALUES (?1, ?2, ?3, ?4, NULL)
     ON CONFLICT (app, key) DO UPDATE SET
         value = CASE WHEN kv.expires_at IS NOT NULL AND kv.expires_at <= ?4
                      THEN ?3 ELSE CAST(kv.value AS INTEGER) + ?3 END,
         updated_at = ?4,
         expires_at = CASE WHEN kv.expires_at IS NOT NULL AND kv.expires_at <= ?4
                           THEN NULL ELSE kv.expires_at END
     WHERE (kv.expires_at IS NOT NULL AND kv.expires_at <= ?4)
        OR (json_type(kv.value) = 'integer'
            AND CASE WHEN ?3 >= 0 THEN CAST(kv.value AS INTEGER) <= 9223372036854775807 - ?3
                     ELSE CAST(kv.value AS INTEGER) >= -9223372036854775807 - 1 - ?3 END)";
    const PURGE_EXPIRED: &'static str =
        "DELETE FROM kv WHERE app = ?1 AND expires_at IS NOT NULL AND expires_at <= ?2";

    fn set_many() -> &'static str {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            let rows = vec!["(?, ?, ?, ?, ?)"; crate::repo::kv::SET_MANY_ROWS].join(", ");
            format!(
                "INSERT INTO kv (app, key, value, updated_at, expires_at) VALUES {rows}
     ON CONFLICT (app, key) DO UPDATE SET
         value = excluded.value, updated_at = excluded.updated_at,
         expires_at = excluded.expires_at"
            )
        });
        SQL.as_str()
    }

    /// In chunks of `super::CHUNKS` rows (at most six statements whatever the count, each
    /// prepared once per connection), the app and the time bound once per statement
    /// (`?1`, `?2`) and formatted once, each value's JSON text moved into its binding.
    fn write_sets<'c>(
        conn: &'c mut SqliteConnection,
        app: &'c AppName,
        at: DateTime<Utc>,
        sets: Vec<SetRow<'c>>,
    ) -> Writing<'c> {
        Box::pin(async move {
            let updated_at = super::ts(at);
            let shapes: Vec<(usize, usize)> = super::chunked(&sets)
                .map(|(shape, chunk)| (shape, chunk.len()))
                .collect();
            let mut rows = sets.into_iter();
            for (shape, n) in shapes {
                let mut query = sqlx::query(SET_ROWS.sql(shape))
                    .bind(app.as_str())
                    .bind(updated_at.as_str());
                for row in rows.by_ref().take(n) {
                    query = query
                        .bind(row.key)
                        .bind(row.json)
                        .bind(row.expires.map(super::ts));
                }
                query.execute(&mut *conn).await.map_err(app_missing)?;
            }
            Ok(())
        })
    }

    type Reader = SqliteKvReader;

    fn reader(pool: &SqlitePool) -> SqliteKvReader {
        SqliteKvReader::new(pool)
    }
}

/// `SET` of n entries of one app: (app, updated_at), then (key, value, expires_at) per
/// entry.
static SET_ROWS: MultiRow = MultiRow::new(|rows| {
    let values: Vec<String> = (0..rows)
        .map(|i| {
            let n = 3 + 3 * i;
            format!("(?1, ?{n}, ?{}, ?2, ?{})", n + 1, n + 2)
        })
        .collect();
    format!(
        "INSERT INTO kv (app, key, value, updated_at, expires_at) VALUES {}
     ON CONFLICT (app, key) DO UPDATE SET
         value = excluded.value, updated_at = excluded.updated_at,
         expires_at = excluded.expires_at",
        values.join(", ")
    )
});

/// The reads of `kv::get` and `kv::incr` on the script threads, a few thousand
/// instructions each: sqlx runs every statement of a connection on a worker thread of its
/// own, so a pooled read was an acquire (and its liveness ping), a hop to that thread and
/// back and a row built value by value, about 15,000 instructions. Here each reading thread
/// takes a connection of its own (as many as threads read at once: the script threads),
/// with `GET` prepared once on it, and reads synchronously.
///
/// What must stay true: the pool's file, through the one SQLite library of the process
/// (rusqlite links the libsqlite3-sys sqlx links; two copies of SQLite in one process
/// would not see each other's locks); no transaction is left open, so each read sees the
/// last commit (WAL: a reader never waits for a writer); `query_only`, the pool's busy
/// timeout; a connection that failed is dropped and the next read opens another; closing
/// the pool closes these too.
pub(crate) struct SqliteKvReader {
    /// The pool's file; `None` for an in-memory database, which another connection would
    /// not see: reads then go through the pool.
    path: Option<PathBuf>,
    pool: SqlitePool,
    /// Connections no thread is reading on.
    idle: Mutex<Vec<rusqlite::Connection>>,
}

impl SqliteKvReader {
    fn new(pool: &SqlitePool) -> Self {
        let options = pool.connect_options();
        let file = options.get_filename();
        let text = file.to_string_lossy();
        let in_memory = text.is_empty() || text.starts_with(':') || text.starts_with("file:");
        Self {
            path: (!in_memory).then(|| file.to_path_buf()),
            pool: pool.clone(),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<rusqlite::Connection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self, path: &Path, app: &AppName, key: &str) -> Result<Option<KvEntry>, StoreError> {
        if self.pool.is_closed() {
            self.idle().clear();
            return Err(crate::error::db(sqlx::Error::PoolClosed));
        }
        let taken = self.idle().pop();
        let conn = match taken {
            Some(conn) => conn,
            None => open_reader(path)?,
        };
        let entry = get_on(&conn, app, key)?;
        self.idle().push(conn);
        Ok(entry)
    }
}

impl BlockingGet for SqliteKvReader {
    fn get(
        &self,
        _rt: &tokio::runtime::Handle,
        app: &AppName,
        key: &str,
    ) -> Option<Result<Option<KvEntry>, StoreError>> {
        let path = self.path.as_deref()?;
        Some(self.read(path, app, key))
    }
}

/// A connection to the existing file that reads only.
fn open_reader(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(read_error)?;
    conn.busy_timeout(super::BUSY_TIMEOUT).map_err(read_error)?;
    conn.pragma_update(None, "query_only", true)
        .map_err(read_error)?;
    Ok(conn)
}

/// `GET` on `conn`, the row mapped as `repo::kv`'s `row_to_entry` maps it.
fn get_on(
    conn: &rusqlite::Connection,
    app: &AppName,
    key: &str,
) -> Result<Option<KvEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(Sqlite::GET).map_err(read_error)?;
    let mut rows = stmt
        .query((app.as_str(), key, super::ts(now())))
        .map_err(read_error)?;
    let Some(row) = rows.next().map_err(read_error)? else {
        return Ok(None);
    };
    let text = |i: usize| -> Result<Option<&str>, StoreError> {
        match row.get_ref(i).map_err(read_error)? {
            rusqlite::types::ValueRef::Null => Ok(None),
            v => v.as_str().map(Some).map_err(StoreError::backend),
        }
    };
    let required = |i: usize| text(i)?.ok_or_else(|| StoreError::backend(NullColumn));
    Ok(Some(KvEntry {
        key: required(0)?.to_owned(),
        value: serde_json::from_str(required(1)?).map_err(StoreError::backend)?,
        updated_at: super::parse_ts(required(2)?)?,
        expires_at: text(3)?.map(super::parse_ts).transpose()?,
    }))
}

/// A column `GET` never leaves empty was empty: a corrupt row.
#[derive(Debug, thiserror::Error)]
#[error("a KV row has an empty column")]
struct NullColumn;

/// As `error::db`: locked is `Busy`; anything else keeps its detail in the source only.
fn read_error(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Busy
        }
        _ => StoreError::backend(e),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use shared::event::KvWrite;
    use shared::{AppName, StoreError};
    use sqlx::SqlitePool;

    use crate::error::db;

    async fn store_with_app() -> (tempfile::TempDir, shared::Store, SqlitePool, AppName) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let store = crate::connect(&url).await.expect("connect");
        let pool = SqlitePool::connect(&url).await.expect("pool");
        let app = AppName::parse("shop").expect("app");
        store.apps.create(&app).await.expect("create app");
        (dir, store, pool, app)
    }

    async fn apply(pool: &SqlitePool, app: &AppName, writes: &[KvWrite]) -> Result<(), StoreError> {
        let mut tx = super::super::begin_write(pool).await?;
        crate::repo::kv::apply_kv::<sqlx::Sqlite>(&mut tx, app, writes).await?;
        tx.commit().await.map_err(db)
    }

    #[tokio::test]
    async fn blocking_reads_of_an_in_memory_database_go_through_the_pool() {
        let (_dir, store, file_pool, _app) = store_with_app().await;
        let path = super::SqliteKvReader::new(&file_pool).path;
        assert!(path.is_some_and(|p| p.ends_with("p.db")));
        for url in ["sqlite::memory:", "sqlite://:memory:"] {
            let pool = SqlitePool::connect(url).await.expect("pool");
            assert!(super::SqliteKvReader::new(&pool).path.is_none(), "{url}");
            pool.close().await;
        }
        store.health.close().await;
    }

    #[tokio::test]
    async fn twenty_concurrent_increments_through_apply_kv_all_count() {
        let (_dir, store, pool, app) = store_with_app().await;
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (pool, app) = (pool.clone(), app.clone());
                tokio::spawn(async move {
                    apply(
                        &pool,
                        &app,
                        &[KvWrite::Incr {
                            key: "n".into(),
                            by: 2,
                        }],
                    )
                    .await
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("join").expect("incr");
        }
        let entry = store.kv.get(&app, "n").await.expect("get").expect("entry");
        assert_eq!(entry.value, json!(40));
    }

    #[tokio::test]
    async fn an_increment_of_a_string_is_refused_and_rolls_back_the_whole_apply() {
        let (_dir, store, pool, app) = store_with_app().await;
        apply(
            &pool,
            &app,
            &[KvWrite::Set {
                key: "s".into(),
                value: json!("x"),
                ttl: None,
            }],
        )
        .await
        .expect("set");
        let err = apply(
            &pool,
            &app,
            &[
                KvWrite::Set {
                    key: "other".into(),
                    value: json!(1),
                    ttl: None,
                },
                KvWrite::Incr {
                    key: "s".into(),
                    by: 1,
                },
            ],
        )
        .await
        .expect_err("incr of a string");
        assert!(matches!(err, StoreError::Conflict("kv integer")), "{err:?}");
        assert_eq!(
            store
                .kv
                .get(&app, "s")
                .await
                .expect("get")
                .expect("kept")
                .value,
            json!("x")
        );
        assert!(store.kv.get(&app, "other").await.expect("get").is_none());
    }

    /// Migration 0019 on a file that was at 0018 with entries in it: every entry, its value
    /// and expiry as they were, in a WITHOUT ROWID table with its expiry index, the
    /// foreign key and the app-delete cascade still in force, and the store reading them.
    #[tokio::test]
    async fn the_without_rowid_rebuild_keeps_every_entry_its_expiry_and_the_cascade() {
        use sqlx::sqlite::SqliteConnectOptions;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.db");
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .foreign_keys(true);
        let pool = SqlitePool::connect_with(options).await.expect("pool");
        let migrations = super::super::MIGRATIONS;
        let at = migrations
            .iter()
            .position(|m| m.1 == 19)
            .expect("migration 0019");
        crate::repo::migrator(&migrations[..at])
            .run(&pool)
            .await
            .expect("up to 0018");
        let stamp = "2026-01-02T03:04:05.000006Z";
        for app in ["shop", "other"] {
            sqlx::query("INSERT INTO apps (name, created_at) VALUES (?, ?)")
                .bind(app)
                .bind(stamp)
                .execute(&pool)
                .await
                .expect("app");
        }
        let entries: [(&str, &str, &str, Option<&str>); 5] = [
            ("shop", "user/1", r#"{"name":"ada"}"#, None),
            (
                "shop",
                "gone",
                r#""expired""#,
                Some("2020-01-01T00:00:00.000000Z"),
            ),
            ("shop", "later", "3", Some("2999-01-01T00:00:00.000000Z")),
            ("shop", "user/0", "[1,2]", None),
            ("other", "user/1", "true", None),
        ];
        for (app, key, value, expires) in entries {
            sqlx::query(
                "INSERT INTO kv (app, key, value, updated_at, expires_at) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(app)
            .bind(key)
            .bind(value)
            .bind(stamp)
            .bind(expires)
            .execute(&pool)
            .await
            .expect("entry");
        }
        type Row = (String, String, String, String, Option<String>);
        let dump = async |pool: &SqlitePool| -> Vec<Row> {
            sqlx::query_as(
                "SELECT app, key, value, updated_at, expires_at FROM kv ORDER BY app, key",
            )
            .fetch_all(pool)
            .await
            .expect("dump")
        };
        let before = dump(&pool).await;
        assert_eq!(before.len(), 5);
        crate::repo::migrator(migrations)
            .run(&pool)
            .await
            .expect("0019");
        assert_eq!(dump(&pool).await, before);
        let schema: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, sql FROM sqlite_schema WHERE tbl_name = 'kv' AND sql IS NOT NULL
             ORDER BY name",
        )
        .fetch_all(&pool)
        .await
        .expect("schema");
        let names: Vec<&str> = schema.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["kv", "kv_app_expires"]);
        assert!(schema[0].1.ends_with("WITHOUT ROWID"), "{}", schema[0].1);
        let no_app = sqlx::query(
            "INSERT INTO kv (app, key, value, updated_at, expires_at) VALUES ('ghost', 'k', '1', ?, NULL)",
        )
        .bind(stamp)
        .execute(&pool)
        .await;
        assert!(no_app.is_err(), "the foreign key to apps holds");

        let url = format!("sqlite://{}", path.display());
        let store = crate::connect(&url).await.expect("connect");
        let shop = AppName::parse("shop").expect("app");
        let user = store
            .kv
            .get(&shop, "user/1")
            .await
            .expect("get")
            .expect("kept");
        assert_eq!(user.value, serde_json::json!({"name": "ada"}));
        assert_eq!(super::super::ts(user.updated_at), stamp);
        assert!(store.kv.get(&shop, "gone").await.expect("get").is_none());
        let later = store
            .kv
            .get(&shop, "later")
            .await
            .expect("get")
            .expect("live");
        assert_eq!(
            later.expires_at.map(super::super::ts).as_deref(),
            Some("2999-01-01T00:00:00.000000Z")
        );
        let listed: Vec<String> = store
            .kv
            .list(&shop, "user/", None, 10)
            .await
            .expect("list")
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(listed, ["user/0", "user/1"]);
        // Expired entries are purged by the next write, through `kv_app_expires`.
        apply(&pool, &shop, &[KvWrite::Delete { key: "none".into() }])
            .await
            .expect("write");
        let keys: Vec<(String,)> =
            sqlx::query_as("SELECT key FROM kv WHERE app = 'shop' ORDER BY key")
                .fetch_all(&pool)
                .await
                .expect("keys");
        assert_eq!(
            keys.into_iter().map(|(k,)| k).collect::<Vec<_>>(),
            ["later", "user/0", "user/1"]
        );
        store.apps.delete(&shop).await.expect("delete app");
        let left: Vec<Row> = dump(&pool).await;
        assert_eq!(left.len(), 1);
        assert_eq!(
            (left[0].0.as_str(), left[0].1.as_str()),
            ("other", "user/1")
        );
        store.health.close().await;
        pool.close().await;
    }

    /// Every statement on `kv` (the repository's, the backup's dump, what deleting an app
    /// cascades to) searches the table's (app, key) b-tree or the expiry index: no scan of
    /// other apps' entries, no sort.
    #[tokio::test]
    async fn every_kv_statement_searches_its_key_or_the_expiry_index() {
        use crate::repo::kv::KvSql;
        use sqlx::Sqlite;
        let (dir, store, pool, _app) = store_with_app().await;
        let conn = rusqlite::Connection::open(dir.path().join("p.db")).expect("open");
        let plan = |sql: &str| -> String {
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("prepare");
            let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
            let rows = stmt
                .query_map(rusqlite::params_from_iter(nulls), |row| {
                    row.get::<_, String>(3)
                })
                .expect("plan");
            rows.map(|r| r.expect("row")).collect::<Vec<_>>().join("; ")
        };
        let primary_key = "SEARCH kv USING PRIMARY KEY (app=? AND key";
        let cases = [
            (Sqlite::GET, primary_key),
            (Sqlite::LIST, primary_key),
            (Sqlite::DELETE_LIVE, primary_key),
            (Sqlite::DELETE, primary_key),
            (
                Sqlite::PURGE_EXPIRED,
                "INDEX kv_app_expires (app=? AND expires_at",
            ),
            // What deleting an app cascades to (the foreign key's lookup of its children).
            (
                "DELETE FROM kv WHERE app = ?1",
                "SEARCH kv USING PRIMARY KEY (app=?)",
            ),
            // The backup's dump, in its order.
            (
                "SELECT app, key, value, updated_at, expires_at FROM kv ORDER BY app, key",
                "SCAN kv",
            ),
        ];
        for (sql, want) in cases {
            let got = plan(sql);
            assert!(got.contains(want), "{sql}: {got}");
            assert!(!got.contains("TEMP B-TREE"), "{sql}: {got}");
            assert!(
                !got.contains("SCAN") || want.starts_with("SCAN"),
                "{sql}: {got}"
            );
        }
        drop(conn);
        pool.close().await;
        store.health.close().await;
    }

    #[tokio::test]
    async fn writes_for_a_missing_app_are_not_found() {
        let (_dir, _store, pool, _app) = store_with_app().await;
        let ghost = AppName::parse("ghost").expect("app");
        let err = apply(
            &pool,
            &ghost,
            &[KvWrite::Incr {
                key: "n".into(),
                by: 1,
            }],
        )
        .await
        .expect_err("no app");
        assert!(matches!(err, StoreError::NotFound("app")), "{err:?}");
    }
}
