//! Invocation history on PostgreSQL. A batch is one multi-row `INSERT ... SELECT FROM
//! UNNEST(...)`: one statement, one round trip, atomic by itself. A record whose app is
//! gone is skipped by its `WHERE EXISTS`, not by a failed FK. The outbox's commit writes
//! event records through `insert_records` in its own transaction.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use shared::store::{InvocationFilter, InvocationRepository};
use shared::{
    AppName, InvocationId, InvocationRecord, InvocationStatus, LogLine, ScriptName, StoreError,
};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::types::Json;
use uuid::Uuid;

use crate::decode;
use crate::error::{CorruptStatus, db};

const INSERT_BATCH: &str = r#"INSERT INTO invocations
         (id, app, script, version, "trigger", status, started_at, duration_ms, http_status,
          summary, logs, error, request_id, attempt)
     SELECT t.id, t.app, t.script, t.version, t.trig, t.status, t.started_at, t.duration_ms,
            t.http_status, t.summary, t.logs::jsonb, t.error, t.request_id, t.attempt
     FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[],
                 $7::timestamptz[], $8::int8[], $9::int4[], $10::text[], $11::text[],
                 $12::text[], $13::text[], $14::int4[])
          AS t(id, app, script, version, trig, status, started_at, duration_ms, http_status,
               summary, logs, error, request_id, attempt)
     WHERE EXISTS (SELECT 1 FROM apps a WHERE a.name = t.app)
     ON CONFLICT (id) DO NOTHING"#;
const LIST: &str = r#"SELECT id, app, script, version, "trigger", status, started_at, duration_ms,
            http_status, summary, logs, error, request_id, attempt
     FROM invocations
     WHERE app = $1
       AND ($2::text IS NULL OR status = $2)
       AND ($3::timestamptz IS NULL OR started_at >= $3)
       AND ($4::timestamptz IS NULL OR started_at < $4)
       AND ($5::uuid IS NULL OR id < $5)
     ORDER BY id DESC LIMIT $6"#;
/// The same as `LIST` for one script, so that the (app, script, id) index serves it.
const LIST_BY_SCRIPT: &str = r#"SELECT id, app, script, version, "trigger", status, started_at,
            duration_ms, http_status, summary, logs, error, request_id, attempt
     FROM invocations
     WHERE app = $1 AND script = $7
       AND ($2::text IS NULL OR status = $2)
       AND ($3::timestamptz IS NULL OR started_at >= $3)
       AND ($4::timestamptz IS NULL OR started_at < $4)
       AND ($5::uuid IS NULL OR id < $5)
     ORDER BY id DESC LIMIT $6"#;
/// Oldest first through the primary key (ids are time-ordered), a bounded number per call.
const PURGE_BEFORE: &str = "DELETE FROM invocations WHERE id IN
    (SELECT id FROM invocations WHERE id < $1 ORDER BY id LIMIT $2)";
const OLDEST: &str = "SELECT id FROM invocations ORDER BY id LIMIT 1";
const COUNT_DROPPED: &str = "INSERT INTO invocation_drops (app, dropped)
     SELECT t.app, t.dropped FROM UNNEST($1::text[], $2::int8[]) AS t(app, dropped)
     WHERE EXISTS (SELECT 1 FROM apps a WHERE a.name = t.app)
     ON CONFLICT (app) DO UPDATE SET dropped = invocation_drops.dropped + excluded.dropped";
const DROPPED: &str = "SELECT dropped FROM invocation_drops WHERE app = $1";

const GET: &str = r#"SELECT id, app, script, version, "trigger", status, started_at, duration_ms,
            http_status, summary, logs, error, request_id, attempt
     FROM invocations WHERE app = $1 AND id = $2"#;

pub(super) struct PgInvocations(pub(super) PgPool);

fn row_to_record(row: &PgRow) -> Result<InvocationRecord, StoreError> {
    let status: &str = row.try_get("status").map_err(db)?;
    let duration_ms: i64 = row.try_get("duration_ms").map_err(db)?;
    let http_status: Option<i32> = row.try_get("http_status").map_err(db)?;
    let logs: Json<Vec<LogLine>> = row.try_get("logs").map_err(db)?;
    let attempt: Option<i32> = row.try_get("attempt").map_err(db)?;
    Ok(InvocationRecord {
        id: InvocationId(row.try_get::<Uuid, _>("id").map_err(db)?),
        app: decode(row.try_get("app").map_err(db)?, AppName::parse)?,
        script: decode(row.try_get("script").map_err(db)?, ScriptName::parse)?,
        version: row.try_get("version").map_err(db)?,
        trigger: row.try_get("trigger").map_err(db)?,
        status: InvocationStatus::parse(status)
            .ok_or_else(|| StoreError::backend(CorruptStatus))?,
        started_at: row.try_get::<DateTime<Utc>, _>("started_at").map_err(db)?,
        duration_ms: u64::try_from(duration_ms).unwrap_or(0),
        http_status: http_status
            .map(u16::try_from)
            .transpose()
            .map_err(StoreError::backend)?,
        summary: row.try_get("summary").map_err(db)?,
        logs: logs.0,
        error: row.try_get("error").map_err(db)?,
        request_id: row.try_get("request_id").map_err(db)?,
        attempt: attempt
            .map(u32::try_from)
            .transpose()
            .map_err(StoreError::backend)?,
    })
}

/// Insert a batch in one statement on `conn` (a pool connection or the caller's
/// transaction); records whose app is gone are skipped.
pub(super) async fn insert_records(
    conn: &mut PgConnection,
    batch: &[InvocationRecord],
) -> Result<(), StoreError> {
    if batch.is_empty() {
        return Ok(());
    }
    let logs = batch
        .iter()
        .map(|r| serde_json::to_string(&r.logs))
        .collect::<Result<Vec<String>, _>>()
        .map_err(StoreError::backend)?;
    sqlx::query(INSERT_BATCH)
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
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

#[async_trait]
impl InvocationRepository for PgInvocations {
    async fn record(&self, batch: &[InvocationRecord]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut conn = self.0.acquire().await.map_err(db)?;
        insert_records(&mut conn, batch).await
    }

    async fn list(
        &self,
        app: &AppName,
        filter: &InvocationFilter,
    ) -> Result<Vec<InvocationRecord>, StoreError> {
        let sql = if filter.script.is_some() {
            LIST_BY_SCRIPT
        } else {
            LIST
        };
        let mut query = sqlx::query(sql)
            .bind(app.as_str())
            .bind(filter.status.map(InvocationStatus::as_str))
            .bind(filter.since)
            .bind(filter.until)
            .bind(filter.before.map(|id| id.0))
            .bind(i64::from(filter.limit));
        if let Some(script) = &filter.script {
            query = query.bind(script.as_str());
        }
        let rows = query.fetch_all(&self.0).await.map_err(db)?;
        rows.iter().map(row_to_record).collect()
    }

    async fn get(
        &self,
        app: &AppName,
        id: InvocationId,
    ) -> Result<Option<InvocationRecord>, StoreError> {
        let row = sqlx::query(GET)
            .bind(app.as_str())
            .bind(id.0)
            .fetch_optional(&self.0)
            .await
            .map_err(db)?;
        row.as_ref().map(row_to_record).transpose()
    }

    async fn purge_before(&self, cutoff: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let first_kept = InvocationId::first_at(cutoff);
        let done = sqlx::query(PURGE_BEFORE)
            .bind(first_kept.0)
            .bind(i64::from(limit))
            .execute(&self.0)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn oldest(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let raw: Option<(Uuid,)> = sqlx::query_as(OLDEST)
            .fetch_optional(&self.0)
            .await
            .map_err(db)?;
        Ok(raw.and_then(|(id,)| InvocationId(id).made_at()))
    }

    async fn count_dropped(&self, drops: &[(AppName, u64)]) -> Result<(), StoreError> {
        if drops.is_empty() {
            return Ok(());
        }
        let apps: Vec<&str> = drops.iter().map(|(app, _)| app.as_str()).collect();
        let counts: Vec<i64> = drops
            .iter()
            .map(|(_, n)| i64::try_from(*n).unwrap_or(i64::MAX))
            .collect();
        sqlx::query(COUNT_DROPPED)
            .bind(apps)
            .bind(counts)
            .execute(&self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn dropped(&self, app: &AppName) -> Result<u64, StoreError> {
        let n: Option<(i64,)> = sqlx::query_as(DROPPED)
            .bind(app.as_str())
            .fetch_optional(&self.0)
            .await
            .map_err(db)?;
        Ok(n.map_or(0, |(n,)| u64::try_from(n).unwrap_or(0)))
    }
}
