//! Dead letters on SQLite: events that ran out of attempts, kept with their last error
//! until replayed, deleted or purged by retention. A replay puts the event back into the
//! outbox and deletes the dead letter in one transaction, so it is never both or neither.
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use shared::store::DeadLetterRepository;
use shared::{
    AppName, DeadLetter, DeadLetterId, EventId, EventKind, ScriptName, StoreError, TriggerId,
};
use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use tokio::sync::Notify;

use super::outbox::{CorruptKind, DEFAULT_MAX_ATTEMPTS, NewRow, insert_row};
use super::{begin_write, parse_ts, ts};
use crate::error::db;
use crate::{decode, now};

/// Queue idempotency keys are remembered at least this long.
const KEY_RETENTION: TimeDelta = TimeDelta::hours(24);

const LIST: &str = "SELECT id, app, kind, script, source, payload, attempts, error, event_id,
            created_at
     FROM dead_letters WHERE app = ?1 AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3";
const GET: &str = "SELECT id, app, kind, script, source, payload, attempts, error, event_id,
            created_at
     FROM dead_letters WHERE app = ? AND id = ?";
const TAKE: &str = "DELETE FROM dead_letters WHERE app = ? AND id = ?
     RETURNING kind, script, trigger_id, source, payload";
const TRIGGER_MAX_ATTEMPTS: &str = "SELECT max_attempts FROM triggers WHERE app = ? AND id = ?";
const DELETE: &str = "DELETE FROM dead_letters WHERE app = ? AND id = ?";
const PURGE_APP: &str = "DELETE FROM dead_letters WHERE app = ?";
const PURGE_BEFORE: &str = "DELETE FROM dead_letters WHERE created_at < ?";
const PURGE_KEYS: &str = "DELETE FROM idempotency_keys WHERE created_at < ?";
const OLDEST: &str = "SELECT MIN(created_at) FROM dead_letters";

pub(super) struct SqliteDeadLetters {
    pool: SqlitePool,
    /// The outbox's wake-up: a replay inserted a row.
    inserted: Arc<Notify>,
}

impl SqliteDeadLetters {
    pub(super) fn new(pool: SqlitePool, inserted: Arc<Notify>) -> Self {
        Self { pool, inserted }
    }
}

fn row_to_dead_letter(row: &SqliteRow) -> Result<DeadLetter, StoreError> {
    let id: &str = row.try_get("id").map_err(db)?;
    let kind: &str = row.try_get("kind").map_err(db)?;
    let script: Option<&str> = row.try_get("script").map_err(db)?;
    let payload: &str = row.try_get("payload").map_err(db)?;
    let attempts: i64 = row.try_get("attempts").map_err(db)?;
    let event_id: &str = row.try_get("event_id").map_err(db)?;
    Ok(DeadLetter {
        id: id.parse().map_err(StoreError::backend)?,
        app: decode(row.try_get("app").map_err(db)?, AppName::parse)?,
        kind: EventKind::parse(kind).ok_or_else(|| StoreError::backend(CorruptKind))?,
        script: script.map(|s| decode(s, ScriptName::parse)).transpose()?,
        source: row.try_get("source").map_err(db)?,
        payload: serde_json::from_str(payload).map_err(StoreError::backend)?,
        attempts: u32::try_from(attempts).map_err(StoreError::backend)?,
        error: row.try_get("error").map_err(db)?,
        event_id: event_id.parse().map_err(StoreError::backend)?,
        created_at: parse_ts(row.try_get("created_at").map_err(db)?)?,
    })
}

#[async_trait]
impl DeadLetterRepository for SqliteDeadLetters {
    async fn list(
        &self,
        app: &AppName,
        before: Option<DeadLetterId>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(LIST)
            .bind(app.as_str())
            .bind(before.map(|id| id.to_string()))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(row_to_dead_letter).collect()
    }

    async fn get(&self, app: &AppName, id: DeadLetterId) -> Result<Option<DeadLetter>, StoreError> {
        let row = sqlx::query(GET)
            .bind(app.as_str())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(row_to_dead_letter).transpose()
    }

    async fn replay(&self, app: &AppName, id: DeadLetterId) -> Result<EventId, StoreError> {
        let now = now();
        let mut tx = begin_write(&self.pool).await?;
        let row = sqlx::query(TAKE)
            .bind(app.as_str())
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound("dead letter"))?;
        let kind: String = row.try_get("kind").map_err(db)?;
        let trigger: Option<String> = row.try_get("trigger_id").map_err(db)?;
        let trigger = trigger
            .as_deref()
            .map(str::parse::<TriggerId>)
            .transpose()
            .map_err(StoreError::backend)?;
        let max_attempts = match trigger {
            Some(t) => sqlx::query_scalar::<_, i64>(TRIGGER_MAX_ATTEMPTS)
                .bind(app.as_str())
                .bind(t.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?,
            None => None,
        };
        let new = NewRow {
            kind: EventKind::parse(&kind).ok_or_else(|| StoreError::backend(CorruptKind))?,
            script: row.try_get("script").map_err(db)?,
            // A trigger deleted since keeps nothing routed to it.
            trigger: trigger.filter(|_| max_attempts.is_some()),
            source: row.try_get("source").map_err(db)?,
            payload: row.try_get("payload").map_err(db)?,
            max_attempts: max_attempts
                .and_then(|m| u32::try_from(m).ok())
                .unwrap_or(DEFAULT_MAX_ATTEMPTS),
            parked: false,
            available_at: now,
            scheduled_at: now,
        };
        let event = insert_row(&mut tx, app, &new, now).await?;
        tx.commit().await.map_err(db)?;
        self.inserted.notify_one();
        Ok(event)
    }

    async fn delete(&self, app: &AppName, id: DeadLetterId) -> Result<(), StoreError> {
        let done = sqlx::query(DELETE)
            .bind(app.as_str())
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("dead letter"));
        }
        Ok(())
    }

    async fn purge_app(&self, app: &AppName) -> Result<u64, StoreError> {
        let done = sqlx::query(PURGE_APP)
            .bind(app.as_str())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }

    /// Also forgets queue idempotency keys older than both `cutoff` and 24 hours, so the
    /// retention sweeper bounds that table too.
    async fn purge_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let keys_cutoff = cutoff.min(now() - KEY_RETENTION);
        let mut tx = begin_write(&self.pool).await?;
        let done = sqlx::query(PURGE_BEFORE)
            .bind(ts(cutoff))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(PURGE_KEYS)
            .bind(ts(keys_cutoff))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn oldest(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let (raw,): (Option<String>,) = sqlx::query_as(OLDEST)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        raw.as_deref().map(parse_ts).transpose()
    }
}
