//! `BackupRepository` written once over `sql::Db` (docs/backup.md).
//!
//! `TABLES` names every table of the schema with what a backup does with it: a table
//! that is kept lists its columns and how each is stored, in restore order (parents
//! first); one that is left out says why. The test at the bottom compares this list with
//! the tables and columns a freshly migrated database really has, on both backends, so a
//! migration that adds a table or a column fails it until the backup knows about it.
//!
//! A snapshot is one read-only transaction (`BackupSql::BEGIN_SNAPSHOT`: a deferred
//! transaction on SQLite, whose WAL snapshot is taken by its first read; `REPEATABLE READ
//! READ ONLY` on PostgreSQL). A restore is one write transaction. Rows travel as JSON
//! objects whose values do not depend on the backend (`Kind`), so either backend reads
//! what the other wrote. The statements are built from `TABLES`; a backend supplies only
//! how it names a column in a `SELECT` and a placeholder in an `INSERT`.
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use shared::bus::NotificationBus;
use shared::store::{BackupRepository, BackupRow, RestoreError, Restored, Snapshot, TableRows};
use shared::{Channel, StoreError};
use sqlx::Pool;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::error::db;
use crate::repo::Migrations;
use crate::sql::{Cols, Db, Stmt, sql, sql_built};

/// How a column is stored, and so how it is read, written to an archive and bound back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    /// `BIGINT` on PostgreSQL.
    Int,
    /// `INTEGER` on PostgreSQL.
    Int4,
    Flag,
    /// Hex in the archive.
    Bytes,
    /// RFC 3339 with microseconds in the archive.
    Ts,
    Uuid,
    /// JSON text in the archive (`jsonb` on PostgreSQL).
    Json,
}

/// One table a backup keeps.
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) name: &'static str,
    pub(crate) cols: &'static [(&'static str, Kind)],
    /// The `ORDER BY` of its dump: its primary key.
    order: &'static str,
    /// Only with `--with-invocations`.
    optional: bool,
    /// Added beside the target's own rows (`ON CONFLICT DO NOTHING`), not replacing them.
    merge: bool,
}

/// What a backup does with a table of the schema.
pub(crate) enum Disposition {
    Kept(Table),
    /// Left out, and why (docs/backup.md lists them).
    Left(&'static str, &'static str),
}

use Disposition::{Kept, Left};
use Kind::{Bytes, Flag, Int, Int4, Json, Text, Ts};

const fn kept(
    name: &'static str,
    cols: &'static [(&'static str, Kind)],
    order: &'static str,
) -> Disposition {
    Kept(Table {
        name,
        cols,
        order,
        optional: false,
        merge: false,
    })
}

/// A limits table's columns: its key columns, the ten limits, `updated_at`.
macro_rules! with_limits {
    ($($key:expr),*) => {
        &[
            $($key,)*
            ("max_operations", Int),
            ("timeout_ms", Int),
            ("max_call_depth", Int),
            ("max_string_bytes", Int),
            ("max_array_len", Int),
            ("max_map_len", Int),
            ("max_output_bytes", Int),
            ("max_log_bytes", Int),
            ("max_concurrency", Int),
            ("max_requests_per_sec", Int),
            ("updated_at", Ts),
        ]
    };
}

/// An event's columns (`outbox`, `dead_letters`): what it is and where it goes, then `rest`.
macro_rules! event_cols {
    ($($rest:expr),* $(,)?) => {
        &[
            ("id", Kind::Uuid),
            ("app", Text),
            ("kind", Text),
            ("script", Text),
            ("trigger_id", Kind::Uuid),
            ("source", Text),
            ("payload", Json),
            $($rest,)*
        ]
    };
}

/// Every table of the schema, the kept ones in restore order.
pub(crate) const TABLES: &[Disposition] = &[
    kept("apps", &[("name", Text), ("created_at", Ts)], "name"),
    kept(
        "scripts",
        &[
            ("app", Text),
            ("name", Text),
            ("active_version", Int),
            ("latest_version", Int),
            ("created_at", Ts),
            ("updated_at", Ts),
        ],
        "app, name",
    ),
    kept(
        "script_versions",
        &[
            ("app", Text),
            ("script", Text),
            ("version", Int),
            ("source", Text),
            ("created_at", Ts),
        ],
        "app, script, version",
    ),
    kept(
        "triggers",
        &[
            ("id", Kind::Uuid),
            ("app", Text),
            ("script", Text),
            ("kind", Text),
            ("config", Text),
            ("unique_key", Text),
            ("max_attempts", Int4),
            ("created_at", Ts),
            ("last_fired_at", Ts),
            ("idempotency_ttl_secs", Int4),
        ],
        "id",
    ),
    kept("app_limits", with_limits!(("app", Text)), "app"),
    kept(
        "script_limits",
        with_limits!(("app", Text), ("script", Text)),
        "app, script",
    ),
    kept(
        "app_config",
        &[("app", Text), ("key", Text), ("value", Json)],
        "app, key",
    ),
    kept(
        "app_secrets",
        &[
            ("app", Text),
            ("name", Text),
            ("nonce", Bytes),
            ("ciphertext", Bytes),
            ("updated_at", Ts),
        ],
        "app, name",
    ),
    kept(
        "kv",
        &[
            ("app", Text),
            ("key", Text),
            ("value", Json),
            ("updated_at", Ts),
            ("expires_at", Ts),
        ],
        "app, key",
    ),
    kept(
        "blobs",
        &[
            ("app", Text),
            ("name", Text),
            ("object", Text),
            ("size", Int),
            ("content_type", Text),
            ("updated_at", Ts),
        ],
        "app, name",
    ),
    kept(
        "outbox",
        event_cols!(
            ("attempt", Int4),
            ("max_attempts", Int4),
            ("parked", Flag),
            ("available_at", Ts),
            ("scheduled_at", Ts),
            ("created_at", Ts),
            ("lease_owner", Text),
            ("lease_expires_at", Ts),
            ("lease_token", Kind::Uuid),
            ("last_error", Text),
            ("trace_context", Text),
        ),
        "id",
    ),
    kept(
        "dead_letters",
        event_cols!(
            ("attempts", Int4),
            ("error", Text),
            ("event_id", Kind::Uuid),
            ("created_at", Ts),
        ),
        "id",
    ),
    kept(
        "idempotency_keys",
        &[
            ("app", Text),
            ("queue", Text),
            ("key", Text),
            ("created_at", Ts),
        ],
        "app, queue, key",
    ),
    kept(
        "mailbox",
        &[
            ("id", Kind::Uuid),
            ("app", Text),
            ("message", Json),
            ("created_at", Ts),
        ],
        "id",
    ),
    kept(
        "realtime_apps",
        &[("app", Text), ("last_id", Int), ("cors_origins", Json)],
        "app",
    ),
    kept(
        "realtime_topics",
        &[("app", Text), ("topic", Text), ("created_at", Ts)],
        "app, topic",
    ),
    kept(
        "realtime_events",
        &[
            ("app", Text),
            ("id", Int),
            ("topic", Text),
            ("payload", Text),
            ("created_at", Ts),
        ],
        "app, id",
    ),
    Kept(Table {
        name: "api_tokens",
        cols: &[
            ("id", Kind::Uuid),
            ("name", Text),
            ("secret_hash", Text),
            ("created_at", Ts),
            ("role", Text),
            ("apps", Text),
        ],
        order: "id",
        optional: false,
        merge: true,
    }),
    Kept(Table {
        name: "invocation_drops",
        cols: &[("app", Text), ("dropped", Int)],
        order: "app",
        optional: true,
        merge: false,
    }),
    Kept(Table {
        name: "invocations",
        cols: &[
            ("id", Kind::Uuid),
            ("app", Text),
            ("script", Text),
            ("version", Int),
            ("trigger", Text),
            ("status", Text),
            ("started_at", Ts),
            ("duration_ms", Int),
            ("http_status", Int4),
            ("summary", Text),
            ("logs", Json),
            ("error", Text),
            ("request_id", Text),
            ("attempt", Int4),
            ("trace_id", Text),
        ],
        order: "id",
        optional: true,
        merge: false,
    }),
    Left(
        "server_meta",
        "the target's own facts: its key fingerprint (the archive's is in the manifest) and its bootstrap token",
    ),
    Left(
        "http_idempotency",
        "answers kept for client retries, minutes long; a retry after the move runs again",
    ),
    Left(
        "dashboard_sessions",
        "browser logins; sign in again on the new server",
    ),
    Left("nodes", "the running processes of the old server"),
    Left(
        "queue_history",
        "the dashboard's chart of the last day's queue depths; it fills again as the apps run",
    ),
    Left("_sqlx_migrations", "the target's own migration history"),
];

/// The tables a backup keeps, in restore order.
pub(crate) fn kept_tables(with_invocations: bool) -> impl Iterator<Item = &'static Table> {
    TABLES.iter().filter_map(move |d| match d {
        Kept(t) if with_invocations || !t.optional => Some(t),
        _ => None,
    })
}

fn table(name: &str) -> Option<&'static Table> {
    kept_tables(true).find(|t| t.name == name)
}

/// An archive table this build does not restore: one a backup leaves out, or unknown.
fn unknown_table(name: &str) -> RestoreError {
    let left = TABLES.iter().find_map(|d| match d {
        Left(left, why) if *left == name => Some(*why),
        _ => None,
    });
    RestoreError::Archive(match left {
        Some(why) => format!("the archive holds table '{name}', which a backup leaves out ({why})"),
        None => format!("the archive has an unknown table '{name}'"),
    })
}

/// What a backend writes its own way in the generated statements.
pub(crate) trait BackupSql: Db {
    /// Starts the read-only snapshot.
    const BEGIN_SNAPSHOT: &'static str;
    /// (name)
    const DELETE_APP: &'static str;
    /// (app) -> object
    const APP_OBJECTS: &'static str;
    /// A column in a `SELECT`, read back under its own name.
    fn select_col(name: &str, kind: Kind) -> String;
    /// The `n`th placeholder (from 1) of an `INSERT`, for a column of `kind`.
    fn placeholder(n: usize, kind: Kind) -> String;
}

fn select<DB: BackupSql>(t: &Table) -> String {
    let cols: Vec<String> = t.cols.iter().map(|(c, k)| DB::select_col(c, *k)).collect();
    format!(
        "SELECT {} FROM {} ORDER BY {}",
        cols.join(", "),
        t.name,
        t.order
    )
}

fn insert<DB: BackupSql>(t: &Table) -> String {
    let cols: Vec<String> = t.cols.iter().map(|(c, _)| format!("\"{c}\"")).collect();
    let params: Vec<String> = t
        .cols
        .iter()
        .enumerate()
        .map(|(i, (_, k))| DB::placeholder(i + 1, *k))
        .collect();
    let conflict = if t.merge {
        " ON CONFLICT DO NOTHING"
    } else {
        ""
    };
    format!(
        "INSERT INTO {} ({}) VALUES ({}){conflict}",
        t.name,
        cols.join(", "),
        params.join(", ")
    )
}

/// A stored value as the archive writes it.
fn read(row: &impl Cols, col: &str, kind: Kind) -> Result<Value, StoreError> {
    Ok(match kind {
        Text | Json => row.opt_text(col)?.map_or(Value::Null, Value::from),
        Int => row.opt_int(col)?.map_or(Value::Null, Value::from),
        Int4 => row.opt_int4(col)?.map_or(Value::Null, Value::from),
        Flag => Value::Bool(row.flag(col)?),
        Bytes => Value::String(hex::encode(row.bytes(col)?)),
        Ts => row.opt_ts(col)?.map_or(Value::Null, |t| {
            t.to_rfc3339_opts(SecondsFormat::Micros, true).into()
        }),
        Kind::Uuid => row
            .opt_uuid(col)?
            .map_or(Value::Null, |u| u.to_string().into()),
    })
}

/// An archive's value of `table.col`, bound as the column is stored.
fn bind<DB: Db>(
    stmt: Stmt<DB>,
    table: &str,
    col: &str,
    kind: Kind,
    value: Option<&Value>,
) -> Result<Stmt<DB>, RestoreError> {
    let bad = |what: &str| {
        RestoreError::Archive(format!(
            "the archive's {table}.{col} holds a value that is not {what}"
        ))
    };
    let value = value.unwrap_or(&Value::Null);
    let text = || match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.as_str())),
        _ => Err(bad("text")),
    };
    Ok(match kind {
        Text => stmt.bind(text()?),
        Json => {
            let raw = text()?;
            if let Some(raw) = raw {
                serde_json::from_str::<serde::de::IgnoredAny>(raw).map_err(|_| bad("JSON"))?;
            }
            stmt.bind(raw)
        }
        Int => stmt.bind(match value {
            Value::Null => None,
            v => Some(v.as_i64().ok_or_else(|| bad("an integer"))?),
        }),
        Int4 => stmt.bind(match value {
            Value::Null => None,
            v => Some(
                v.as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(|| bad("a 32-bit integer"))?,
            ),
        }),
        Flag => stmt.bind(value.as_bool().ok_or_else(|| bad("true or false"))?),
        Bytes => {
            let raw = text()?.ok_or_else(|| bad("hex bytes"))?;
            stmt.bind(&hex::decode(raw).map_err(|_| bad("hex bytes"))?)
        }
        Ts => stmt.bind(match text()? {
            None => None,
            Some(raw) => Some(
                DateTime::parse_from_rfc3339(raw)
                    .map_err(|_| bad("an RFC 3339 time"))?
                    .with_timezone(&Utc),
            ),
        }),
        Kind::Uuid => stmt.bind(match text()? {
            None => None,
            Some(raw) => Some(Uuid::parse_str(raw).map_err(|_| bad("a UUID"))?),
        }),
    })
}

/// The backup repository of one database.
pub(crate) struct Backup<DB: Db> {
    pool: Pool<DB>,
    migrations: Migrations,
    key_fingerprint: String,
    /// The outbox's wake-up and the bus, told after a restore that brought outbox rows.
    inserted: Arc<Notify>,
    bus: Arc<dyn NotificationBus>,
}

impl<DB: Db> Backup<DB> {
    pub(crate) fn new(
        pool: Pool<DB>,
        migrations: Migrations,
        key_fingerprint: String,
        inserted: Arc<Notify>,
        bus: Arc<dyn NotificationBus>,
    ) -> Self {
        Backup {
            pool,
            migrations,
            key_fingerprint,
            inserted,
            bus,
        }
    }
}

/// The apps an archive holds, checked as names.
fn archive_apps(tables: &[TableRows]) -> Result<Vec<shared::AppName>, RestoreError> {
    let Some(apps) = tables.iter().find(|t| t.table == "apps") else {
        return Ok(Vec::new());
    };
    apps.rows
        .iter()
        .map(|row| {
            row.get("name")
                .and_then(Value::as_str)
                .and_then(|n| shared::AppName::parse(n).ok())
                .ok_or_else(|| {
                    RestoreError::Archive("the archive holds an invalid app name".into())
                })
        })
        .collect()
}

#[async_trait]
impl<DB: BackupSql> BackupRepository for Backup<DB> {
    fn schema_version(&self) -> i64 {
        self.migrations.last().map_or(0, |m| m.1)
    }

    fn key_fingerprint(&self) -> &str {
        &self.key_fingerprint
    }

    fn tables(&self, with_invocations: bool) -> Vec<&'static str> {
        kept_tables(with_invocations).map(|t| t.name).collect()
    }

    async fn snapshot(&self, with_invocations: bool) -> Result<Snapshot, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_SNAPSHOT).await.map_err(db)?;
        let schema_version = sql::<DB>(crate::repo::SCHEMA_VERSION)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?
            .int("version")?;
        let mut tables = Vec::new();
        for t in kept_tables(with_invocations) {
            let found = sql_built::<DB>(select::<DB>(t))
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
            let mut rows = Vec::with_capacity(found.len());
            for row in &found {
                let mut out = BackupRow::new();
                for (col, kind) in t.cols {
                    out.insert((*col).to_owned(), read(row, col, *kind)?);
                }
                rows.push(out);
            }
            tables.push(TableRows {
                table: t.name.to_owned(),
                rows,
            });
        }
        tx.rollback().await.map_err(db)?;
        Ok(Snapshot {
            schema_version,
            tables,
        })
    }

    async fn restore(&self, tables: Vec<TableRows>) -> Result<Restored, RestoreError> {
        // Everything is checked against `TABLES` before the transaction starts.
        let mut plan = Vec::with_capacity(tables.len());
        for t in &tables {
            let spec = table(&t.table).ok_or_else(|| unknown_table(&t.table))?;
            for row in &t.rows {
                if let Some(col) = row.keys().find(|k| !spec.cols.iter().any(|(c, _)| c == k)) {
                    return Err(RestoreError::Archive(format!(
                        "the archive's table {} has an unknown column '{col}'",
                        t.table
                    )));
                }
            }
            plan.push((spec, &t.rows));
        }
        // Restore order is `TABLES` order, whatever the archive's.
        plan.sort_by_key(|(spec, _)| {
            kept_tables(true)
                .position(|k| k.name == spec.name)
                .unwrap_or(usize::MAX)
        });
        let apps = archive_apps(&tables)?;
        let mut restored = Restored::default();
        let mut tx = DB::begin_write(&self.pool).await?;
        for app in &apps {
            for row in sql::<DB>(DB::APP_OBJECTS)
                .bind(app.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?
            {
                restored.freed_objects.push(row.string("object")?);
            }
            sql::<DB>(DB::DELETE_APP)
                .bind(app.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        let mut outbox_rows = 0;
        for (spec, rows) in plan {
            let statement = insert::<DB>(spec);
            let mut written = 0;
            for row in rows {
                let mut stmt = sql_built::<DB>(statement.clone());
                for (col, kind) in spec.cols {
                    stmt = bind(stmt, spec.name, col, *kind, row.get(*col))?;
                }
                written += stmt.execute(&mut *tx).await.map_err(db)?;
            }
            if spec.name == "outbox" {
                outbox_rows = written;
            }
            restored.rows.push((spec.name.to_owned(), written));
        }
        tx.commit().await.map_err(db)?;
        if outbox_rows > 0 {
            self.inserted.notify_one();
            if let Err(error) = self.bus.notify(Channel::Outbox, "restored").await {
                tracing::warn!(%error, "the other nodes were not told of the restored outbox rows");
            }
        }
        Ok(restored)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::testing::TestUrl;

    /// Every table of a fresh schema with its columns, as the database reports them.
    async fn schema(url: &TestUrl) -> BTreeMap<String, Vec<(String, String)>> {
        let store = crate::connect(&url.url).await.expect("connect");
        store.health.close().await;
        let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        match url.backend() {
            crate::Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&url.url).await.expect("open");
                let tables: Vec<(String,)> = sqlx::query_as(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                )
                .fetch_all(&pool)
                .await
                .expect("tables");
                for (name,) in tables {
                    let cols: Vec<(String, String)> =
                        sqlx::query_as("SELECT name, type FROM pragma_table_info(?) ORDER BY cid")
                            .bind(&name)
                            .fetch_all(&pool)
                            .await
                            .expect("columns");
                    out.insert(name, cols);
                }
                pool.close().await;
            }
            crate::Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&url.url).await.expect("open");
                let cols: Vec<(String, String, String)> = sqlx::query_as(
                    "SELECT table_name::text, column_name::text, data_type::text
                     FROM information_schema.columns WHERE table_schema = current_schema()
                     ORDER BY table_name, ordinal_position",
                )
                .fetch_all(&pool)
                .await
                .expect("columns");
                for (table, col, ty) in cols {
                    out.entry(table).or_default().push((col, ty));
                }
                pool.close().await;
            }
        }
        out
    }

    /// PostgreSQL's `data_type` for a kind.
    fn pg_type(kind: Kind) -> &'static str {
        match kind {
            Text => "text",
            Int => "bigint",
            Int4 => "integer",
            Flag => "boolean",
            Bytes => "bytea",
            Ts => "timestamp with time zone",
            Kind::Uuid => "uuid",
            Json => "jsonb",
        }
    }

    async fn the_backup_knows_every_table_and_column(url: TestUrl) {
        let found = schema(&url).await;
        let known: Vec<&str> = TABLES
            .iter()
            .map(|d| match d {
                Kept(t) => t.name,
                Left(name, _) => name,
            })
            .collect();
        for table in found.keys() {
            assert!(
                known.contains(&table.as_str()),
                "table {table} is in the schema but not in backup::TABLES: keep it or say why not"
            );
        }
        for name in &known {
            assert!(
                found.contains_key(*name),
                "backup::TABLES names {name}, which the schema lacks"
            );
        }
        for t in kept_tables(true) {
            let cols = &found[t.name];
            let names: Vec<&str> = cols.iter().map(|(c, _)| c.as_str()).collect();
            let mut expected: Vec<&str> = t.cols.iter().map(|(c, _)| *c).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            expected.sort_unstable();
            assert_eq!(
                sorted, expected,
                "the columns of {} differ from backup::TABLES",
                t.name
            );
            if url.backend() == crate::Backend::Postgres {
                for (col, kind) in t.cols {
                    let ty = &cols.iter().find(|(c, _)| c == col).expect("column").1;
                    assert_eq!(ty, pg_type(*kind), "{}.{col}", t.name);
                }
            }
        }
        url.close().await;
    }

    #[tokio::test]
    async fn the_backup_knows_every_table_and_column_on_sqlite() {
        the_backup_knows_every_table_and_column(TestUrl::sqlite()).await;
    }

    #[tokio::test]
    async fn the_backup_knows_every_table_and_column_on_postgres() {
        the_backup_knows_every_table_and_column(TestUrl::postgres().await).await;
    }

    #[test]
    fn restore_order_puts_every_table_after_apps_and_scripts() {
        let names: Vec<&str> = kept_tables(true).map(|t| t.name).collect();
        assert_eq!(names[0], "apps");
        let pos = |n: &str| names.iter().position(|x| *x == n).expect(n);
        for child in ["script_versions", "triggers", "script_limits"] {
            assert!(pos("scripts") < pos(child), "{child}");
        }
    }
}
