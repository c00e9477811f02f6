//! Invocation history's statements on PostgreSQL. A batch is one multi-row `INSERT ...
//! SELECT FROM UNNEST(...)`: one statement, one round trip, atomic by itself.
use shared::{InvocationRecord, StoreError};
use sqlx::Postgres;
use sqlx::postgres::{PgArguments, PgConnection};
use sqlx::query::Query;
use uuid::Uuid;

use crate::error::db;
use crate::repo::invocations::InvocationsSql;

const INSERT_BATCH: &str = r#"INSERT INTO invocations
         (id, app, script, version, "trigger", status, started_at, duration_ms, http_status,
          summary, logs, error, request_id, attempt, trace_id)
     SELECT t.id, t.app, t.script, t.version, t.trig, t.status, t.started_at, t.duration_ms,
            t.http_status, t.summary, t.logs::jsonb, t.error, t.request_id, t.attempt,
            t.trace_id
     FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[],
                 $7::timestamptz[], $8::int8[], $9::int4[], $10::text[], $11::text[],
                 $12::text[], $13::text[], $14::int4[], $15::text[])
          AS t(id, app, script, version, trig, status, started_at, duration_ms, http_status,
               summary, logs, error, request_id, attempt, trace_id)
     WHERE EXISTS (SELECT 1 FROM apps a WHERE a.name = t.app)
     ON CONFLICT (id) DO NOTHING"#;

impl InvocationsSql for Postgres {
    const LIST: &'static str = r#"SELECT id, app, script, version, "trigger", status,
            started_at, duration_ms, http_status, summary, logs::text AS logs, error,
            request_id, attempt, trace_id
     FROM invocations
     WHERE app = $1
       AND ($2::text IS NULL OR status = $2)
       AND ($3::timestamptz IS NULL OR started_at >= $3)
       AND ($4::timestamptz IS NULL OR started_at < $4)
       AND ($5::uuid IS NULL OR id < $5)
       AND ($7::text IS NULL OR "trigger" = $7)
     ORDER BY id DESC LIMIT $6"#;
    const LIST_BY_SCRIPT: &'static str = r#"SELECT id, app, script, version, "trigger",
            status, started_at, duration_ms, http_status, summary, logs::text AS logs, error,
            request_id, attempt, trace_id
     FROM invocations
     WHERE app = $1 AND script = $8
       AND ($2::text IS NULL OR status = $2)
       AND ($3::timestamptz IS NULL OR started_at >= $3)
       AND ($4::timestamptz IS NULL OR started_at < $4)
       AND ($5::uuid IS NULL OR id < $5)
       AND ($7::text IS NULL OR "trigger" = $7)
     ORDER BY id DESC LIMIT $6"#;
    const GET: &'static str = r#"SELECT id, app, script, version, "trigger", status,
            started_at, duration_ms, http_status, summary, logs::text AS logs, error,
            request_id, attempt, trace_id
     FROM invocations WHERE app = $1 AND id = $2"#;
    const PURGE_BEFORE: &'static str = "DELETE FROM invocations WHERE id IN
    (SELECT id FROM invocations WHERE id < $1 ORDER BY id LIMIT $2)";
    const OLDEST: &'static str = "SELECT id FROM invocations ORDER BY id LIMIT 1";
    const COUNT_DROPPED: &'static str = "INSERT INTO invocation_drops (app, dropped)
     SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM apps WHERE name = $1)
     ON CONFLICT (app) DO UPDATE SET dropped = invocation_drops.dropped + excluded.dropped";
    const DROPPED: &'static str = "SELECT dropped FROM invocation_drops WHERE app = $1";
    const STATS: &'static str = r#"WITH bucketed AS (
       SELECT to_char(date_trunc('minute', started_at AT TIME ZONE 'UTC'),
                      'YYYY-MM-DD"T"HH24:MI') AS minute, status, "trigger", duration_ms
       FROM invocations WHERE app = $1 AND id >= $2 AND started_at >= $3),
     ranked AS (
       SELECT minute, status, "trigger", duration_ms,
              ROW_NUMBER() OVER (PARTITION BY minute ORDER BY duration_ms) AS rn,
              COUNT(*) OVER (PARTITION BY minute) AS n
       FROM bucketed)
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
        conn: &mut PgConnection,
        batch: &[&InvocationRecord],
    ) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        bind_records(sqlx::query(INSERT_BATCH), batch)?
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        Ok(())
    }
}

/// Binds a batch of records as the 15 arrays of `INSERT_BATCH` ($1-$15, in its order), next
/// on `query` (the outbox's one-statement commit binds them after its own).
pub(super) fn bind_records<'q>(
    query: Query<'q, Postgres, PgArguments>,
    batch: &[&InvocationRecord],
) -> Result<Query<'q, Postgres, PgArguments>, StoreError> {
    let logs = batch
        .iter()
        .map(|r| serde_json::to_string(&r.logs))
        .collect::<Result<Vec<String>, _>>()
        .map_err(StoreError::backend)?;
    Ok(query
        .bind(batch.iter().map(|r| r.id.0).collect::<Vec<Uuid>>())
        .bind(batch.iter().map(|r| r.app.as_str()).collect::<Vec<_>>())
        .bind(batch.iter().map(|r| r.script.as_str()).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|r| r.version)
                .collect::<Vec<Option<i64>>>(),
        )
        .bind(batch.iter().map(|r| r.trigger.as_str()).collect::<Vec<_>>())
        .bind(batch.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
        .bind(batch.iter().map(|r| r.started_at).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|r| i64::try_from(r.duration_ms).unwrap_or(i64::MAX))
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|r| r.http_status.map(i32::from))
                .collect::<Vec<Option<i32>>>(),
        )
        .bind(batch.iter().map(|r| r.summary.as_str()).collect::<Vec<_>>())
        .bind(logs)
        .bind(batch.iter().map(|r| r.error.as_deref()).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|r| r.request_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|r| r.attempt.map(|a| i32::try_from(a).unwrap_or(i32::MAX)))
                .collect::<Vec<Option<i32>>>(),
        )
        .bind(
            batch
                .iter()
                .map(|r| r.trace_id.as_deref())
                .collect::<Vec<_>>(),
        ))
}
