//! Invocation history's statements on SQLite. A batch is prepared inserts of up to `CHUNK`
//! records each, inside the caller's transaction.
use std::sync::LazyLock;

use shared::{InvocationRecord, StoreError};
use sqlx::Sqlite;
use sqlx::sqlite::{SqliteArguments, SqliteConnection};

use super::ts;
use crate::error::db;
use crate::repo::invocations::InvocationsSql;

const INSERT: &str = r#"INSERT INTO invocations
         (id, app, script, version, "trigger", status, started_at, duration_ms, http_status,
          summary, logs, error, request_id, attempt, trace_id)
     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15
     WHERE EXISTS (SELECT 1 FROM apps WHERE name = ?2)
     ON CONFLICT (id) DO NOTHING"#;
/// Records per multi-row insert: one statement (and one round trip to SQLite's worker
/// thread) per chunk instead of per record. 32 rows x 15 columns stays far below SQLite's
/// bound-parameter limit.
const CHUNK: usize = 32;

/// `INSERT ... SELECT FROM (VALUES (..), ..)` for `rows` records; a record whose app is gone
/// is skipped by the `WHERE EXISTS`. Only placeholders vary, never input.
fn insert_many_sql(rows: usize) -> String {
    let one = format!("({})", vec!["?"; 15].join(", "));
    let values = vec![one; rows].join(", ");
    format!(
        r#"INSERT INTO invocations
         (id, app, script, version, "trigger", status, started_at, duration_ms, http_status,
          summary, logs, error, request_id, attempt, trace_id)
     SELECT column1, column2, column3, column4, column5, column6, column7, column8, column9,
            column10, column11, column12, column13, column14, column15
     FROM (VALUES {values})
     WHERE EXISTS (SELECT 1 FROM apps WHERE name = column2)
     ON CONFLICT (id) DO NOTHING"#
    )
}

type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments>;

/// Bind one record's 15 columns, in the order of `INSERT`'s column list.
fn bind_record<'q>(
    query: SqliteQuery<'q>,
    rec: &'q InvocationRecord,
) -> Result<SqliteQuery<'q>, StoreError> {
    let logs = serde_json::to_string(&rec.logs).map_err(StoreError::backend)?;
    Ok(query
        .bind(rec.id.to_string())
        .bind(rec.app.as_str())
        .bind(rec.script.as_str())
        .bind(rec.version)
        .bind(rec.trigger.as_str())
        .bind(rec.status.as_str())
        .bind(ts(rec.started_at))
        .bind(i64::try_from(rec.duration_ms).unwrap_or(i64::MAX))
        .bind(rec.http_status.map(i64::from))
        .bind(rec.summary.as_str())
        .bind(logs)
        .bind(rec.error.as_deref())
        .bind(rec.request_id.as_deref())
        .bind(rec.attempt.map(i64::from))
        .bind(rec.trace_id.as_deref()))
}

impl InvocationsSql for Sqlite {
    const LIST: &'static str = r#"SELECT id, app, script, version, "trigger", status,
            started_at, duration_ms, http_status, summary, logs, error, request_id, attempt,
            trace_id
     FROM invocations
     WHERE app = ?1
       AND (?2 IS NULL OR status = ?2)
       AND (?3 IS NULL OR started_at >= ?3)
       AND (?4 IS NULL OR started_at < ?4)
       AND (?5 IS NULL OR id < ?5)
       AND (?7 IS NULL OR "trigger" = ?7)
     ORDER BY id DESC LIMIT ?6"#;
    const LIST_BY_SCRIPT: &'static str = r#"SELECT id, app, script, version, "trigger",
            status, started_at, duration_ms, http_status, summary, logs, error, request_id,
            attempt, trace_id
     FROM invocations
     WHERE app = ?1 AND script = ?8
       AND (?2 IS NULL OR status = ?2)
       AND (?3 IS NULL OR started_at >= ?3)
       AND (?4 IS NULL OR started_at < ?4)
       AND (?5 IS NULL OR id < ?5)
       AND (?7 IS NULL OR "trigger" = ?7)
     ORDER BY id DESC LIMIT ?6"#;
    const GET: &'static str = r#"SELECT id, app, script, version, "trigger", status,
            started_at, duration_ms, http_status, summary, logs, error, request_id, attempt,
            trace_id
     FROM invocations WHERE app = ? AND id = ?"#;
    const PURGE_BEFORE: &'static str = "DELETE FROM invocations WHERE id IN
    (SELECT id FROM invocations WHERE id < ? ORDER BY id LIMIT ?)";
    const OLDEST: &'static str = "SELECT id FROM invocations ORDER BY id LIMIT 1";
    const COUNT_DROPPED: &'static str = "INSERT INTO invocation_drops (app, dropped)
     SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM apps WHERE name = ?1)
     ON CONFLICT (app) DO UPDATE SET dropped = invocation_drops.dropped + excluded.dropped";
    const DROPPED: &'static str = "SELECT dropped FROM invocation_drops WHERE app = ?";
    const STATS: &'static str = r#"WITH ranked AS (
       SELECT substr(started_at, 1, 16) AS minute, status, "trigger", duration_ms,
              ROW_NUMBER() OVER (PARTITION BY substr(started_at, 1, 16)
                                 ORDER BY duration_ms) AS rn,
              COUNT(*) OVER (PARTITION BY substr(started_at, 1, 16)) AS n
       FROM invocations WHERE app = ?1 AND id >= ?2 AND started_at >= ?3)
     SELECT minute,
            SUM(CASE WHEN status = 'ok' THEN 1 ELSE 0 END) AS ok,
            SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS error,
            SUM(CASE WHEN status = 'timeout' THEN 1 ELSE 0 END) AS timeout,
            SUM(CASE WHEN "trigger" = 'http' THEN 1 ELSE 0 END) AS http,
            MIN(CASE WHEN rn * 100 >= n * 50 THEN duration_ms END) AS p50,
            MIN(CASE WHEN rn * 100 >= n * 95 THEN duration_ms END) AS p95,
            MIN(CASE WHEN rn * 100 >= n * 99 THEN duration_ms END) AS p99
     FROM ranked GROUP BY minute ORDER BY minute"#;

    async fn insert_records(
        conn: &mut SqliteConnection,
        batch: &[&InvocationRecord],
    ) -> Result<(), StoreError> {
        static CHUNK_SQL: LazyLock<String> = LazyLock::new(|| insert_many_sql(CHUNK));
        let mut chunks = batch.chunks_exact(CHUNK);
        for chunk in &mut chunks {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(CHUNK_SQL.as_str()));
            for rec in chunk {
                query = bind_record(query, rec)?;
            }
            query.execute(&mut *conn).await.map_err(db)?;
        }
        for rec in chunks.remainder() {
            bind_record(sqlx::query(INSERT), rec)?
                .execute(&mut *conn)
                .await
                .map_err(db)?;
        }
        Ok(())
    }
}
