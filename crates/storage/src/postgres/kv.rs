//! KV's statements on PostgreSQL. Values are JSONB, bound and read as text; `Incr` checks
//! the 64-bit range in `numeric` before the `int8` arithmetic could fail, and the row lock
//! of `ON CONFLICT DO UPDATE` orders concurrent increments.
//!
//! A group commit's merged writes (`apply_merged`) go in one statement whatever their
//! number: each kind of write is a part of it over one UNNEST of the keys, and the purge of
//! expired entries leaves the written keys to their writes, so no row is touched twice.
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use shared::event::KvWrite;
use shared::store::KvEntry;
use shared::{AppName, StoreError};
use sqlx::postgres::{PgArguments, PgConnection, PgPool};
use sqlx::query::Query;
use sqlx::{Connection, Postgres};

use crate::error::db;
use crate::repo::kv::{BlockingGet, KvSql, Merged, MergedKv, row_to_entry};
use crate::sql::sql;
use crate::{app_missing, expiry, now};

/// (app[], key[], op[] ('s', 'd' or 'i'), value[] (JSON text of a set), expires_at[] (of a
/// set), by[] (of an increment), now): every merged write and each app's purge. The rows it
/// reports are the increments that were applied; `INCR`'s rules, per key.
const APPLY_MERGED: &str = r#"WITH w (app, key, op, value, expires_at, by) AS (
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[],
                              $5::timestamptz[], $6::int8[])),
     purged AS (
         DELETE FROM kv WHERE kv.app = ANY($1) AND kv.expires_at IS NOT NULL
             AND kv.expires_at <= $7
             AND NOT EXISTS (SELECT 1 FROM w WHERE w.app = kv.app AND w.key = kv.key)),
     deleted AS (
         DELETE FROM kv USING w WHERE w.op = 'd' AND kv.app = w.app AND kv.key = w.key),
     stored AS (
         INSERT INTO kv (app, key, value, updated_at, expires_at)
         SELECT w.app, w.key, w.value::jsonb, $7, w.expires_at FROM w WHERE w.op = 's'
         ON CONFLICT (app, key) DO UPDATE SET
             value = excluded.value, updated_at = excluded.updated_at,
             expires_at = excluded.expires_at)
     INSERT INTO kv (app, key, value, updated_at, expires_at)
     SELECT w.app, w.key, to_jsonb(w.by), $7, NULL FROM w WHERE w.op = 'i'
     ON CONFLICT (app, key) DO UPDATE SET
         value = CASE WHEN kv.expires_at IS NOT NULL AND kv.expires_at <= $7
                      THEN excluded.value
                      ELSE to_jsonb((kv.value #>> '{}')::int8
                                    + (excluded.value #>> '{}')::int8) END,
         updated_at = $7,
         expires_at = CASE WHEN kv.expires_at IS NOT NULL AND kv.expires_at <= $7
                           THEN NULL ELSE kv.expires_at END
     WHERE (kv.expires_at IS NOT NULL AND kv.expires_at <= $7)
        OR CASE WHEN jsonb_typeof(kv.value) <> 'number' THEN false
                WHEN (kv.value #>> '{}') !~ '^-?[0-9]+$' THEN false
                ELSE (kv.value #>> '{}')::numeric + (excluded.value #>> '{}')::numeric
                     BETWEEN -9223372036854775808 AND 9223372036854775807 END"#;

/// Merged writes as `APPLY_MERGED`'s arrays ($1-$6), with the time of the writes ($7) and
/// how many increments the statement must apply.
pub(super) struct MergedArrays<'a> {
    apps: Vec<&'a str>,
    keys: Vec<&'a str>,
    op: Vec<&'static str>,
    value: Vec<Option<String>>,
    expires_at: Vec<Option<DateTime<Utc>>>,
    by: Vec<Option<i64>>,
    pub(super) at: DateTime<Utc>,
    pub(super) increments: i64,
}

impl<'a> MergedArrays<'a> {
    pub(super) fn new(merged: &'a MergedKv<'a>) -> Result<Self, StoreError> {
        let at = now();
        let keys = merged.keys();
        let mut arrays = MergedArrays {
            apps: Vec::with_capacity(keys.len()),
            keys: Vec::with_capacity(keys.len()),
            op: Vec::with_capacity(keys.len()),
            value: Vec::with_capacity(keys.len()),
            expires_at: Vec::with_capacity(keys.len()),
            by: Vec::with_capacity(keys.len()),
            at,
            increments: 0,
        };
        for (app, key, write) in keys {
            let (o, v, e, b) = match write {
                Merged::Last(KvWrite::Set { value, ttl, .. }) => {
                    let json = serde_json::to_string(value).map_err(StoreError::backend)?;
                    ("s", Some(json), expiry(at, *ttl), None)
                }
                Merged::Last(_) => ("d", None, None, None),
                Merged::Incr(n) => ("i", None, None, Some(*n)),
            };
            arrays.apps.push(app.as_str());
            arrays.keys.push(key);
            arrays.op.push(o);
            arrays.value.push(v);
            arrays.expires_at.push(e);
            arrays.by.push(b);
            arrays.increments += i64::from(b.is_some());
        }
        Ok(arrays)
    }

    /// Binds the six arrays, in `APPLY_MERGED`'s order, next on `query`.
    pub(super) fn bind<'q>(
        self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(self.apps)
            .bind(self.keys)
            .bind(self.op)
            .bind(self.value)
            .bind(self.expires_at)
            .bind(self.by)
    }
}

/// Apply merged writes in one statement, each app's expired entries purged in it.
///
/// # Errors
/// As `repo::kv::apply_merged`: `Conflict("kv integer")` when an increment meets a
/// non-integer or leaves the range (the caller rolls back and applies per event).
pub(crate) async fn apply_merged(
    conn: &mut PgConnection,
    merged: &MergedKv<'_>,
) -> Result<(), StoreError> {
    if merged.is_empty() {
        return Ok(());
    }
    let arrays = MergedArrays::new(merged)?;
    let (at, increments) = (arrays.at, arrays.increments);
    let changed = arrays
        .bind(sqlx::query(APPLY_MERGED))
        .bind(at)
        .execute(&mut *conn)
        .await
        .map_err(app_missing)?
        .rows_affected();
    if i64::try_from(changed).ok() != Some(increments) {
        return Err(StoreError::Conflict("kv integer"));
    }
    Ok(())
}

impl KvSql for Postgres {
    const GET: &'static str = "SELECT key, value::text AS value, updated_at, expires_at FROM kv
     WHERE app = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > $3)";
    const LIST: &'static str = r#"SELECT key, value::text AS value, updated_at, expires_at FROM kv
     WHERE app = $1 AND key >= ($2::text COLLATE "C")
       AND ($3::text IS NULL OR key < ($3::text COLLATE "C"))
       AND ($4::text IS NULL OR key > ($4::text COLLATE "C"))
       AND (expires_at IS NULL OR expires_at > $5)
     ORDER BY key LIMIT $6"#;
    const DELETE_LIVE: &'static str =
        "DELETE FROM kv WHERE app = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > $3)";
    const DELETE: &'static str = "DELETE FROM kv WHERE app = $1 AND key = $2";
    const SET: &'static str = "INSERT INTO kv (app, key, value, updated_at, expires_at)
     VALUES ($1, $2, $3::jsonb, $4, $5)
     ON CONFLICT (app, key) DO UPDATE SET
         value = excluded.value, updated_at = excluded.updated_at,
         expires_at = excluded.expires_at";
    /// An expired entry counts as missing (starts from 0, loses its expiry); a live one keeps
    /// its expiry. The `WHERE` (checked before the new values are computed) refuses a live
    /// value that is not a JSON integer, which changes no row.
    const INCR: &'static str = "INSERT INTO kv (app, key, value, updated_at, expires_at)
     VALUES ($1, $2, to_jsonb($3::int8), $4, NULL)
     ON CONFLICT (app, key) DO UPDATE SET
         value = CASE WHEN kv.expires_at IS NOT NULL AND kv.expires_at <= $4
                      THEN to_jsonb($3::int8)
                      ELSE to_jsonb((kv.value #>> '{}')::int8 + $3::int8) END,
         updated_at = $4,
         expires_at = CASE WHEN kv.expires_at IS NOT NULL AND kv.expires_at <= $4
                           THEN NULL ELSE kv.expires_at END
     WHERE (kv.expires_at IS NOT NULL AND kv.expires_at <= $4)
        OR CASE WHEN jsonb_typeof(kv.value) <> 'number' THEN false
                WHEN (kv.value #>> '{}') !~ '^-?[0-9]+$' THEN false
                ELSE (kv.value #>> '{}')::numeric + $3::numeric
                     BETWEEN -9223372036854775808 AND 9223372036854775807 END";
    const PURGE_EXPIRED: &'static str =
        "DELETE FROM kv WHERE app = $1 AND expires_at IS NOT NULL AND expires_at <= $2";

    fn set_many() -> &'static str {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            let rows: Vec<String> = (0..crate::repo::kv::SET_MANY_ROWS)
                .map(|i| {
                    let n = i * 5;
                    format!(
                        "(${}, ${}, ${}::jsonb, ${}, ${})",
                        n + 1,
                        n + 2,
                        n + 3,
                        n + 4,
                        n + 5
                    )
                })
                .collect();
            format!(
                "INSERT INTO kv (app, key, value, updated_at, expires_at) VALUES {}
     ON CONFLICT (app, key) DO UPDATE SET
         value = excluded.value, updated_at = excluded.updated_at,
         expires_at = excluded.expires_at",
                rows.join(", ")
            )
        });
        SQL.as_str()
    }

    type Reader = PgKvReader;

    fn reader(pool: &PgPool) -> PgKvReader {
        PgKvReader {
            pool: pool.clone(),
            idle: Mutex::new(Vec::new()),
        }
    }
}

/// The reads of `kv::get` and `kv::incr` on the script threads: each reading thread takes
/// a connection of its own (as many as threads read at once: the script threads), on
/// which `GET` stays prepared. A pooled read paid the pool's acquire and its liveness
/// ping, a round trip of its own, before the query's.
///
/// What must stay true: the pool's connect options (the same database, schema and user);
/// no transaction is left open, so each read sees the last commit; a connection that
/// failed is dropped and the next read opens another; closing the pool closes these too.
pub(crate) struct PgKvReader {
    pool: PgPool,
    /// Connections no thread is reading on.
    idle: Mutex<Vec<PgConnection>>,
}

impl PgKvReader {
    fn idle(&self) -> MutexGuard<'_, Vec<PgConnection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn read(
        &self,
        conn: &mut Option<PgConnection>,
        app: &AppName,
        key: &str,
    ) -> Result<Option<KvEntry>, StoreError> {
        let conn = match conn {
            Some(conn) => conn,
            None => conn.insert(
                PgConnection::connect_with(&self.pool.connect_options())
                    .await
                    .map_err(db)?,
            ),
        };
        let row = sql::<Postgres>(Postgres::GET)
            .bind(app.as_str())
            .bind(key)
            .bind(now())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
        row.as_ref().map(row_to_entry).transpose()
    }
}

impl BlockingGet for PgKvReader {
    fn get(
        &self,
        rt: &tokio::runtime::Handle,
        app: &AppName,
        key: &str,
    ) -> Option<Result<Option<KvEntry>, StoreError>> {
        if self.pool.is_closed() {
            let closed = std::mem::take(&mut *self.idle());
            rt.block_on(async { drop(closed) });
            return Some(Err(db(sqlx::Error::PoolClosed)));
        }
        let mut conn = self.idle().pop();
        let reused = conn.is_some();
        let read = rt.block_on(async {
            let mut read = self.read(&mut conn, app, key).await;
            if read.is_err() {
                // It may be broken half way through an exchange: never reuse it.
                drop(conn.take());
                // A kept connection may have died while idle (a server restart, a
                // dropped TCP session): the pool would have pinged it; try once anew.
                if reused {
                    read = self.read(&mut conn, app, key).await;
                    if read.is_err() {
                        drop(conn.take());
                    }
                }
            }
            read
        });
        if let Some(conn) = conn {
            self.idle().push(conn);
        }
        Some(read)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testing::TestUrl;

    async fn read(store: &shared::Store, key: &str) -> Result<Option<KvEntry>, StoreError> {
        let (kv, app, key) = (
            Arc::clone(&store.kv),
            AppName::parse("shop").unwrap(),
            key.to_owned(),
        );
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || kv.get_blocking(&rt, &app, &key))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_kept_reading_connection_that_died_while_idle_is_replaced_by_the_next_read() {
        let schema = TestUrl::postgres().await;
        let store = crate::connect(&schema.url).await.unwrap();
        assert_eq!(read(&store, "k").await.unwrap(), None);
        // End the kept connection from the server side, as a restart would.
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&schema.url)
            .await
            .unwrap();
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE query = $1 AND pid <> pg_backend_pid()",
        )
        .bind(Postgres::GET)
        .fetch_all(&admin)
        .await
        .unwrap();
        assert!(!killed.is_empty(), "the reading connection was found");
        assert_eq!(read(&store, "k").await.unwrap(), None);
        store.health.close().await;
    }
}
