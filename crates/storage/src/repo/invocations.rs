//! Invocation history. A record whose app is gone is skipped by the insert's own
//! `WHERE EXISTS`, not by a failed FK, so one deleted app never fails a batch. The outbox's
//! commit writes event records through `InvocationsSql::insert_records` in its own
//! transaction.
use std::future::Future;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use shared::store::{InvocationFilter, InvocationRepository, MinuteStats};
use shared::{AppName, InvocationId, InvocationRecord, InvocationStatus, ScriptName, StoreError};
use sqlx::Pool;

use crate::error::{CorruptStatus, db};
use crate::sql::{Cols, Db, sql};

/// The statements of `Invocations`, with their arguments in placeholder order, and the
/// batch insert each backend writes its own way.
pub(crate) trait InvocationsSql: Db {
    /// (app, status, since, until, before, limit, trigger) -> record rows, newest first;
    /// every filter but `app` may be NULL.
    const LIST: &'static str;
    /// `LIST` with one more argument, the script, so its index serves it.
    const LIST_BY_SCRIPT: &'static str;
    /// (app, id) -> a record row
    const GET: &'static str;
    /// (first id kept, limit): delete the oldest records, at most `limit`.
    const PURGE_BEFORE: &'static str;
    /// () -> id of the oldest record
    const OLDEST: &'static str;
    /// (app, n): add to the app's dropped count, unless the app is gone.
    const COUNT_DROPPED: &'static str;
    /// (app) -> dropped
    const DROPPED: &'static str;
    /// (app, first id kept, since) -> per minute of `started_at` (oldest first): minute
    /// (`YYYY-MM-DDTHH:MM` text), ok, error, timeout, http, p50, p95, p99 (nearest rank).
    const STATS: &'static str;

    /// Insert `batch` on `conn` (inside the caller's transaction); records whose app is
    /// gone, or that are there already, are skipped.
    fn insert_records(
        conn: &mut Self::Connection,
        batch: &[&InvocationRecord],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

pub(crate) struct Invocations<DB: Db>(pub(crate) Pool<DB>);

fn row_to_record(row: &impl Cols) -> Result<InvocationRecord, StoreError> {
    Ok(InvocationRecord {
        id: InvocationId(row.uuid("id")?),
        app: row.name("app", AppName::parse)?,
        script: row.name("script", ScriptName::parse)?,
        version: row.opt_int("version")?,
        trigger: row.string("trigger")?,
        status: InvocationStatus::parse(row.text("status")?)
            .ok_or_else(|| StoreError::backend(CorruptStatus))?,
        started_at: row.ts("started_at")?,
        duration_ms: u64::try_from(row.int("duration_ms")?).unwrap_or(0),
        http_status: row
            .opt_int4("http_status")?
            .map(u16::try_from)
            .transpose()
            .map_err(StoreError::backend)?,
        summary: row.string("summary")?,
        logs: row.json("logs")?,
        error: row.opt_string("error")?,
        request_id: row.opt_string("request_id")?,
        attempt: row
            .opt_int4("attempt")?
            .map(u32::try_from)
            .transpose()
            .map_err(StoreError::backend)?,
        trace_id: row.opt_string("trace_id")?,
    })
}

#[async_trait]
impl<DB: InvocationsSql> InvocationRepository for Invocations<DB> {
    async fn record(&self, batch: &[InvocationRecord]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let batch: Vec<&InvocationRecord> = batch.iter().collect();
        let mut tx = DB::begin_write(&self.0).await?;
        DB::insert_records(&mut tx, &batch).await?;
        tx.commit().await.map_err(db)
    }

    async fn list(
        &self,
        app: &AppName,
        filter: &InvocationFilter,
    ) -> Result<Vec<InvocationRecord>, StoreError> {
        let statement = if filter.script.is_some() {
            DB::LIST_BY_SCRIPT
        } else {
            DB::LIST
        };
        let mut query = sql::<DB>(statement)
            .bind(app.as_str())
            .bind(filter.status.map(InvocationStatus::as_str))
            .bind(filter.since)
            .bind(filter.until)
            .bind(filter.before.map(|id| id.0))
            .bind(i64::from(filter.limit))
            .bind(filter.trigger.as_deref());
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
        let row = sql::<DB>(DB::GET)
            .bind(app.as_str())
            .bind(id.0)
            .fetch_optional(&self.0)
            .await
            .map_err(db)?;
        row.as_ref().map(row_to_record).transpose()
    }

    async fn purge_before(&self, cutoff: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let first_kept = InvocationId::first_at(cutoff);
        sql::<DB>(DB::PURGE_BEFORE)
            .bind(first_kept.0)
            .bind(i64::from(limit))
            .execute(&self.0)
            .await
            .map_err(db)
    }

    async fn oldest(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row = sql::<DB>(DB::OLDEST)
            .fetch_optional(&self.0)
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        Ok(InvocationId(row.uuid("id")?).made_at())
    }

    async fn count_dropped(&self, drops: &[(AppName, u64)]) -> Result<(), StoreError> {
        if drops.is_empty() {
            return Ok(());
        }
        // In name order, so two nodes counting the same apps never wait on each other's
        // rows in opposite orders.
        let mut drops: Vec<&(AppName, u64)> = drops.iter().collect();
        drops.sort_by(|a, b| a.0.cmp(&b.0));
        let mut tx = DB::begin_write(&self.0).await?;
        for (app, n) in drops {
            sql::<DB>(DB::COUNT_DROPPED)
                .bind(app.as_str())
                .bind(i64::try_from(*n).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn dropped(&self, app: &AppName) -> Result<u64, StoreError> {
        let row = sql::<DB>(DB::DROPPED)
            .bind(app.as_str())
            .fetch_optional(&self.0)
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(0) };
        Ok(u64::try_from(row.int("dropped")?).unwrap_or(0))
    }

    async fn stats(
        &self,
        app: &AppName,
        since: DateTime<Utc>,
    ) -> Result<Vec<MinuteStats>, StoreError> {
        let rows = sql::<DB>(DB::STATS)
            .bind(app.as_str())
            .bind(InvocationId::first_at(since).0)
            .bind(since)
            .fetch_all(&self.0)
            .await
            .map_err(db)?;
        let count = |row: &DB::Row, col: &str| -> Result<u64, StoreError> {
            Ok(u64::try_from(row.opt_int(col)?.unwrap_or(0)).unwrap_or(0))
        };
        rows.iter()
            .map(|row| {
                let minute = row.text("minute")?;
                let minute = DateTime::parse_from_rfc3339(&format!("{minute}:00Z"))
                    .map_err(StoreError::backend)?
                    .with_timezone(&Utc);
                Ok(MinuteStats {
                    minute,
                    ok: count(row, "ok")?,
                    error: count(row, "error")?,
                    timeout: count(row, "timeout")?,
                    http: count(row, "http")?,
                    p50_ms: count(row, "p50")?,
                    p95_ms: count(row, "p95")?,
                    p99_ms: count(row, "p99")?,
                })
            })
            .collect()
    }
}
