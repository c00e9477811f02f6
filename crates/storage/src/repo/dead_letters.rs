//! Dead letters: events that ran out of attempts, kept with their last error until
//! replayed, deleted or purged by retention. A replay puts the event back into the outbox
//! and deletes the dead letter in one transaction, so it is never both or neither.
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use shared::store::{DeadLetterFilter, DeadLetterRepository, QueueSample};
use shared::{
    AppName, DeadLetter, DeadLetterId, EventId, EventKind, ScriptName, StoreError, TriggerId,
};
use sqlx::Pool;
use tokio::sync::Notify;

use crate::error::db;
use crate::now;
use crate::outbox::{CorruptKind, DEFAULT_MAX_ATTEMPTS, NewRow, OutboxSql, Plan};
use crate::sql::{Cols, Db, sql};

/// Queue idempotency keys are remembered at least this long.
const KEY_RETENTION: TimeDelta = TimeDelta::hours(24);

/// The statements of `DeadLetters`, with their arguments in placeholder order. Payloads
/// come out as JSON text.
pub(crate) trait DeadLettersSql: OutboxSql {
    /// (app, before or NULL, limit) -> dead letter rows (id, app, kind, script, source,
    /// payload, attempts, error, event_id, created_at), newest first
    const LIST: &'static str;
    /// (app, before, script, kind, error text, since, until, limit) -> dead letter rows,
    /// newest first; every argument but app and limit may be NULL.
    const LIST_MATCHING: &'static str;
    /// (app, before, script, kind, error text, since, until) -> n: how many match.
    const COUNT_MATCHING: &'static str;
    /// (app, id) -> a dead letter row
    const GET: &'static str;
    /// (app, id) -> kind, script, trigger_id, source, payload of the deleted letter
    const TAKE: &'static str;
    /// (app, trigger id) -> max_attempts, if the trigger still exists
    const TRIGGER_MAX_ATTEMPTS: &'static str;
    /// (app, id)
    const DELETE: &'static str;
    /// (app)
    const PURGE_APP: &'static str;
    /// (cutoff): letters made before it.
    const PURGE_BEFORE: &'static str;
    /// (cutoff): idempotency keys remembered since before it.
    const PURGE_KEYS: &'static str;
    /// () -> oldest: when the oldest letter was made
    const OLDEST: &'static str;
    /// (app, minute): count the app's outbox rows and dead letters into its sample of the
    /// minute (an upsert), unless the app is gone.
    const SAMPLE_QUEUE: &'static str;
    /// (app, keep since): delete the app's samples of earlier minutes.
    const PRUNE_QUEUE_HISTORY: &'static str;
    /// (app, since) -> minute, queue_depth, dead_letters: the app's samples from the last
    /// one at or before `since` on, oldest first.
    const QUEUE_HISTORY: &'static str;
    /// (app) -> queue_depth, dead_letters: counted now.
    const QUEUE_NOW: &'static str;
}

fn row_to_sample(row: &impl Cols, minute: DateTime<Utc>) -> Result<QueueSample, StoreError> {
    let count =
        |col: &str| -> Result<u64, StoreError> { Ok(u64::try_from(row.int(col)?).unwrap_or(0)) };
    Ok(QueueSample {
        minute,
        queue_depth: count("queue_depth")?,
        dead_letters: count("dead_letters")?,
    })
}

pub(crate) struct DeadLetters<DB: Db> {
    pool: Pool<DB>,
    /// The outbox's wake-up: a replay inserted a row.
    inserted: Arc<Notify>,
}

impl<DB: Db> DeadLetters<DB> {
    pub(crate) fn new(pool: Pool<DB>, inserted: Arc<Notify>) -> Self {
        Self { pool, inserted }
    }
}

fn row_to_dead_letter(row: &impl Cols) -> Result<DeadLetter, StoreError> {
    Ok(DeadLetter {
        id: DeadLetterId(row.uuid("id")?),
        app: row.name("app", AppName::parse)?,
        kind: EventKind::parse(row.text("kind")?)
            .ok_or_else(|| StoreError::backend(CorruptKind))?,
        script: row
            .opt_text("script")?
            .map(|s| crate::decode(s, ScriptName::parse))
            .transpose()?,
        source: row.opt_string("source")?,
        payload: row.json("payload")?,
        attempts: row.attempts("attempts")?,
        error: row.string("error")?,
        event_id: EventId(row.uuid("event_id")?),
        created_at: row.ts("created_at")?,
    })
}

#[async_trait]
impl<DB: DeadLettersSql> DeadLetterRepository for DeadLetters<DB> {
    async fn list(
        &self,
        app: &AppName,
        before: Option<DeadLetterId>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sql::<DB>(<DB as DeadLettersSql>::LIST)
            .bind(app.as_str())
            .bind(before.map(|id| id.0))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(row_to_dead_letter).collect()
    }

    async fn list_matching(
        &self,
        app: &AppName,
        filter: &DeadLetterFilter,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sql::<DB>(<DB as DeadLettersSql>::LIST_MATCHING)
            .bind(app.as_str())
            .bind(filter.before.map(|id| id.0))
            .bind(filter.script.as_ref().map(ScriptName::as_str))
            .bind(filter.kind.map(EventKind::as_str))
            .bind(filter.error.as_deref())
            .bind(filter.since)
            .bind(filter.until)
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(row_to_dead_letter).collect()
    }

    async fn count_matching(
        &self,
        app: &AppName,
        filter: &DeadLetterFilter,
    ) -> Result<u64, StoreError> {
        let row = sql::<DB>(<DB as DeadLettersSql>::COUNT_MATCHING)
            .bind(app.as_str())
            .bind(filter.before.map(|id| id.0))
            .bind(filter.script.as_ref().map(ScriptName::as_str))
            .bind(filter.kind.map(EventKind::as_str))
            .bind(filter.error.as_deref())
            .bind(filter.since)
            .bind(filter.until)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(u64::try_from(row.int("n")?).unwrap_or(0))
    }

    async fn get(&self, app: &AppName, id: DeadLetterId) -> Result<Option<DeadLetter>, StoreError> {
        let row = sql::<DB>(<DB as DeadLettersSql>::GET)
            .bind(app.as_str())
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(row_to_dead_letter).transpose()
    }

    async fn replay(&self, app: &AppName, id: DeadLetterId) -> Result<EventId, StoreError> {
        let now = now();
        let mut tx = DB::begin_write(&self.pool).await?;
        let row = sql::<DB>(<DB as DeadLettersSql>::TAKE)
            .bind(app.as_str())
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound("dead letter"))?;
        let trigger = row.opt_uuid("trigger_id")?.map(TriggerId);
        let max_attempts = match trigger {
            Some(t) => sql::<DB>(<DB as DeadLettersSql>::TRIGGER_MAX_ATTEMPTS)
                .bind(app.as_str())
                .bind(t.0)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                .map(|row| row.int4("max_attempts"))
                .transpose()?,
            None => None,
        };
        let event = EventId::new();
        let new = NewRow {
            id: event,
            app: app.clone(),
            kind: EventKind::parse(row.text("kind")?)
                .ok_or_else(|| StoreError::backend(CorruptKind))?,
            script: row.opt_string("script")?,
            // A trigger deleted since keeps nothing routed to it.
            trigger: trigger.filter(|_| max_attempts.is_some()),
            source: row.opt_string("source")?,
            payload: row.string("payload")?,
            max_attempts: max_attempts
                .and_then(|m| u32::try_from(m).ok())
                .unwrap_or(DEFAULT_MAX_ATTEMPTS),
            parked: false,
            available_at: now,
            scheduled_at: now,
            trace: None,
        };
        Plan::row(new).insert::<DB>(&mut tx, now).await?;
        tx.commit().await.map_err(db)?;
        self.inserted.notify_one();
        Ok(event)
    }

    async fn delete(&self, app: &AppName, id: DeadLetterId) -> Result<(), StoreError> {
        let deleted = sql::<DB>(<DB as DeadLettersSql>::DELETE)
            .bind(app.as_str())
            .bind(id.0)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if deleted == 0 {
            return Err(StoreError::NotFound("dead letter"));
        }
        Ok(())
    }

    async fn purge_app(&self, app: &AppName) -> Result<u64, StoreError> {
        sql::<DB>(<DB as DeadLettersSql>::PURGE_APP)
            .bind(app.as_str())
            .execute(&self.pool)
            .await
            .map_err(db)
    }

    /// Also forgets queue idempotency keys older than both `cutoff` and 24 hours, so the
    /// retention sweeper bounds that table too.
    async fn purge_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let keys_cutoff = cutoff.min(now() - KEY_RETENTION);
        let mut tx = DB::begin_write(&self.pool).await?;
        let purged = sql::<DB>(<DB as DeadLettersSql>::PURGE_BEFORE)
            .bind(cutoff)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sql::<DB>(<DB as DeadLettersSql>::PURGE_KEYS)
            .bind(keys_cutoff)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(purged)
    }

    async fn oldest(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        sql::<DB>(<DB as DeadLettersSql>::OLDEST)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?
            .opt_ts("oldest")
    }

    async fn sample_queues(
        &self,
        apps: &[AppName],
        minute: DateTime<Utc>,
        keep_since: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if apps.is_empty() {
            return Ok(());
        }
        // In name order, so two nodes sampling the same apps never wait on each other's
        // rows in opposite orders.
        let mut apps: Vec<&AppName> = apps.iter().collect();
        apps.sort();
        apps.dedup();
        let mut tx = DB::begin_write(&self.pool).await?;
        for app in apps {
            sql::<DB>(<DB as DeadLettersSql>::SAMPLE_QUEUE)
                .bind(app.as_str())
                .bind(minute)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            sql::<DB>(<DB as DeadLettersSql>::PRUNE_QUEUE_HISTORY)
                .bind(app.as_str())
                .bind(keep_since)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn queue_history(
        &self,
        app: &AppName,
        since: DateTime<Utc>,
    ) -> Result<Vec<QueueSample>, StoreError> {
        let rows = sql::<DB>(<DB as DeadLettersSql>::QUEUE_HISTORY)
            .bind(app.as_str())
            .bind(since)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| row_to_sample(row, row.ts("minute")?))
            .collect()
    }

    async fn queue_now(
        &self,
        app: &AppName,
        minute: DateTime<Utc>,
    ) -> Result<QueueSample, StoreError> {
        let row = sql::<DB>(<DB as DeadLettersSql>::QUEUE_NOW)
            .bind(app.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        row_to_sample(&row, minute)
    }
}
