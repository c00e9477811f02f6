//! Invocation history on SQLite. A batch is one transaction of prepared inserts; a record
//! whose app is gone is skipped by the insert's own `WHERE EXISTS`, not by a failed FK.
//! The outbox's commit writes event records through `insert_record` in its own transaction.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use shared::store::{InvocationFilter, InvocationRepository};
use shared::{
    AppName, InvocationId, InvocationRecord, InvocationStatus, LogLine, ScriptName, StoreError,
};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};

use super::{begin_write, parse_ts, ts};
use crate::decode;
use crate::error::{CorruptStatus, db};

const INSERT: &str = r#"INSERT INTO invocations
         (id, app, script, version, "trigger", status, started_at, duration_ms, http_status,
          summary, logs, error, request_id, attempt)
     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14
     WHERE EXISTS (SELECT 1 FROM apps WHERE name = ?2)
     ON CONFLICT (id) DO NOTHING"#;
/// Records per multi-row insert: one statement (and one round trip to SQLite's worker
/// thread) per chunk instead of per record. 32 rows x 14 columns stays far below SQLite's
/// bound-parameter limit.
const CHUNK: usize = 32;

/// `INSERT ... SELECT FROM (VALUES (..), ..)` for `rows` records; a record whose app is gone
/// is skipped by the `WHERE EXISTS`. Only placeholders vary, never input.
fn insert_many_sql(rows: usize) -> String {
    let one = format!("({})", vec!["?"; 14].join(", "));
    let values = vec![one; rows].join(", ");
    format!(
        r#"INSERT INTO invocations
         (id, app, script, version, "trigger", status, started_at, duration_ms, http_status,
          summary, logs, error, request_id, attempt)
     SELECT column1, column2, column3, column4, column5, column6, column7, column8, column9,
            column10, column11, column12, column13, column14
     FROM (VALUES {values})
     WHERE EXISTS (SELECT 1 FROM apps WHERE name = column2)
     ON CONFLICT (id) DO NOTHING"#
    )
}

const LIST: &str = r#"SELECT id, app, script, version, "trigger", status, started_at, duration_ms,
            http_status, summary, logs, error, request_id, attempt
     FROM invocations
     WHERE app = ?1
       AND (?2 IS NULL OR status = ?2)
       AND (?3 IS NULL OR started_at >= ?3)
       AND (?4 IS NULL OR started_at < ?4)
       AND (?5 IS NULL OR id < ?5)
     ORDER BY id DESC LIMIT ?6"#;
/// The same as `LIST` for one script, so that the (app, script, id) index serves it.
const LIST_BY_SCRIPT: &str = r#"SELECT id, app, script, version, "trigger", status, started_at,
            duration_ms, http_status, summary, logs, error, request_id, attempt
     FROM invocations
     WHERE app = ?1 AND script = ?7
       AND (?2 IS NULL OR status = ?2)
       AND (?3 IS NULL OR started_at >= ?3)
       AND (?4 IS NULL OR started_at < ?4)
       AND (?5 IS NULL OR id < ?5)
     ORDER BY id DESC LIMIT ?6"#;
/// Oldest first through the primary key (ids are time-ordered), a bounded number per call.
const PURGE_BEFORE: &str = "DELETE FROM invocations WHERE id IN
    (SELECT id FROM invocations WHERE id < ? ORDER BY id LIMIT ?)";
const OLDEST: &str = "SELECT id FROM invocations ORDER BY id LIMIT 1";
const COUNT_DROPPED: &str = "INSERT INTO invocation_drops (app, dropped)
     SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM apps WHERE name = ?1)
     ON CONFLICT (app) DO UPDATE SET dropped = invocation_drops.dropped + excluded.dropped";
const DROPPED: &str = "SELECT dropped FROM invocation_drops WHERE app = ?";

const GET: &str = r#"SELECT id, app, script, version, "trigger", status, started_at, duration_ms,
            http_status, summary, logs, error, request_id, attempt
     FROM invocations WHERE app = ? AND id = ?"#;

pub(super) struct SqliteInvocations(pub(super) SqlitePool);

fn row_to_record(row: &SqliteRow) -> Result<InvocationRecord, StoreError> {
    let id: &str = row.try_get("id").map_err(db)?;
    let status: &str = row.try_get("status").map_err(db)?;
    let duration_ms: i64 = row.try_get("duration_ms").map_err(db)?;
    let http_status: Option<i64> = row.try_get("http_status").map_err(db)?;
    let logs: &str = row.try_get("logs").map_err(db)?;
    let attempt: Option<i64> = row.try_get("attempt").map_err(db)?;
    Ok(InvocationRecord {
        id: id.parse().map_err(StoreError::backend)?,
        app: decode(row.try_get("app").map_err(db)?, AppName::parse)?,
        script: decode(row.try_get("script").map_err(db)?, ScriptName::parse)?,
        version: row.try_get("version").map_err(db)?,
        trigger: row.try_get("trigger").map_err(db)?,
        status: InvocationStatus::parse(status)
            .ok_or_else(|| StoreError::backend(CorruptStatus))?,
        started_at: parse_ts(row.try_get("started_at").map_err(db)?)?,
        duration_ms: u64::try_from(duration_ms).unwrap_or(0),
        http_status: http_status
            .map(u16::try_from)
            .transpose()
            .map_err(StoreError::backend)?,
        summary: row.try_get("summary").map_err(db)?,
        logs: serde_json::from_str::<Vec<LogLine>>(logs).map_err(StoreError::backend)?,
        error: row.try_get("error").map_err(db)?,
        request_id: row.try_get("request_id").map_err(db)?,
        attempt: attempt
            .map(u32::try_from)
            .transpose()
            .map_err(StoreError::backend)?,
    })
}

/// Insert one record inside the caller's transaction; skipped when its app is gone.
pub(super) async fn insert_record(
    conn: &mut SqliteConnection,
    rec: &InvocationRecord,
) -> Result<(), StoreError> {
    bind_record(sqlx::query(INSERT), rec)?
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// Bind one record's 14 columns, in the order of `INSERT`'s column list.
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
        .bind(rec.attempt.map(i64::from)))
}

#[async_trait]
impl InvocationRepository for SqliteInvocations {
    async fn record(&self, batch: &[InvocationRecord]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        static CHUNK_SQL: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| insert_many_sql(CHUNK));
        let mut tx = begin_write(&self.0).await?;
        let mut chunks = batch.chunks_exact(CHUNK);
        for chunk in &mut chunks {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(CHUNK_SQL.as_str()));
            for rec in chunk {
                query = bind_record(query, rec)?;
            }
            query.execute(&mut *tx).await.map_err(db)?;
        }
        for rec in chunks.remainder() {
            insert_record(&mut tx, rec).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok(())
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
            .bind(filter.since.map(ts))
            .bind(filter.until.map(ts))
            .bind(filter.before.map(|id| id.to_string()))
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
            .bind(id.to_string())
            .fetch_optional(&self.0)
            .await
            .map_err(db)?;
        row.as_ref().map(row_to_record).transpose()
    }

    async fn purge_before(&self, cutoff: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let first_kept = InvocationId::first_at(cutoff);
        let done = sqlx::query(PURGE_BEFORE)
            .bind(first_kept.to_string())
            .bind(i64::from(limit))
            .execute(&self.0)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn oldest(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let raw: Option<(String,)> = sqlx::query_as(OLDEST)
            .fetch_optional(&self.0)
            .await
            .map_err(db)?;
        let Some((raw,)) = raw else { return Ok(None) };
        let id: InvocationId = raw.parse().map_err(StoreError::backend)?;
        Ok(id.made_at())
    }

    async fn count_dropped(&self, drops: &[(AppName, u64)]) -> Result<(), StoreError> {
        if drops.is_empty() {
            return Ok(());
        }
        let mut tx = begin_write(&self.0).await?;
        for (app, n) in drops {
            sqlx::query(COUNT_DROPPED)
                .bind(app.as_str())
                .bind(i64::try_from(*n).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
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
