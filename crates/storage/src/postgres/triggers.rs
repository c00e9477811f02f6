//! Triggers on PostgreSQL. The spec is stored whole as JSON text (`config`), with `kind`
//! and `unique_key` beside it for filtering and for the UNIQUE(app, unique_key) rule.
//! Creating a queue trigger releases the queue's parked messages in the same transaction;
//! a cron fire moves `last_fired_at` and inserts its outbox event in one transaction,
//! guarded so that one slot fires once however many schedulers (nodes) try.
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use shared::store::{
    Idempotency, NewTrigger, Trigger, TriggerOptions, TriggerRepository, TriggerSpec,
};
use shared::{AppName, EventId, ScriptName, StoreError, TriggerId};
use sqlx::Postgres;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};
use tokio::sync::Notify;
use uuid::Uuid;

use super::outbox::NOTIFY;
use crate::error::{conflict_as, db};
use crate::outbox::{NewRow, Plan};
use crate::{decode, now};

const APP_EXISTS: &str = "SELECT 1 FROM apps WHERE name = $1";
/// Locks the script row against a concurrent delete until the trigger is in.
const SCRIPT_EXISTS: &str = "SELECT 1 FROM scripts WHERE app = $1 AND name = $2 FOR KEY SHARE";
const INSERT: &str =
    "INSERT INTO triggers (id, app, script, kind, config, unique_key, max_attempts, created_at,
         idempotency_ttl_secs)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const LIST: &str = "SELECT id, app, script, config, max_attempts, created_at, last_fired_at,
         idempotency_ttl_secs
     FROM triggers WHERE app = $1 ORDER BY created_at, id";
const LIST_ALL: &str = "SELECT id, app, script, config, max_attempts, created_at, last_fired_at,
         idempotency_ttl_secs
     FROM triggers ORDER BY app, created_at, id";
const DELETE: &str = "DELETE FROM triggers WHERE app = $1 AND id = $2";
/// Parked messages keep their own due time; the consumer only gives them a route.
const RELEASE_PARKED: &str = "UPDATE outbox SET parked = false, script = $1, trigger_id = $2,
         max_attempts = $3
     WHERE app = $4 AND parked AND kind = 'queue' AND source = $5";
const CRON_TRIGGER: &str = "SELECT app, script, config, max_attempts FROM triggers
     WHERE app = $1 AND id = $2 AND kind = 'cron'";
const FIRE: &str = "UPDATE triggers SET last_fired_at = $1
     WHERE id = $2 AND kind = 'cron' AND (last_fired_at IS NULL OR last_fired_at < $1)
     RETURNING app, script, config, max_attempts";

pub(super) struct PgTriggers {
    pool: PgPool,
    /// The outbox's wake-up: a released queue or a cron fire inserted rows.
    inserted: Arc<Notify>,
}

impl PgTriggers {
    pub(super) fn new(pool: PgPool, inserted: Arc<Notify>) -> Self {
        Self { pool, inserted }
    }
}

fn row_to_trigger(row: &PgRow) -> Result<Trigger, StoreError> {
    let config: &str = row.try_get("config").map_err(db)?;
    let max_attempts: i32 = row.try_get("max_attempts").map_err(db)?;
    Ok(Trigger {
        id: TriggerId(row.try_get::<Uuid, _>("id").map_err(db)?),
        app: decode(row.try_get("app").map_err(db)?, AppName::parse)?,
        script: decode(row.try_get("script").map_err(db)?, ScriptName::parse)?,
        spec: serde_json::from_str::<TriggerSpec>(config).map_err(StoreError::backend)?,
        max_attempts: u32::try_from(max_attempts).map_err(StoreError::backend)?,
        created_at: row.try_get::<DateTime<Utc>, _>("created_at").map_err(db)?,
        last_fired_at: row
            .try_get::<Option<DateTime<Utc>>, _>("last_fired_at")
            .map_err(db)?,
        idempotency: idempotency(
            row.try_get::<Option<i32>, _>("idempotency_ttl_secs")
                .map_err(db)?
                .map(i64::from),
        )?,
    })
}

/// The stored TTL as the trigger's opt-in.
fn idempotency(ttl_secs: Option<i64>) -> Result<Option<Idempotency>, StoreError> {
    ttl_secs
        .map(|secs| {
            let secs = u32::try_from(secs).map_err(StoreError::backend)?;
            Idempotency::new(secs).map_err(StoreError::backend)
        })
        .transpose()
}

#[async_trait]
impl TriggerRepository for PgTriggers {
    async fn create_with(
        &self,
        new: NewTrigger,
        options: TriggerOptions,
    ) -> Result<Trigger, StoreError> {
        let trigger = Trigger {
            id: TriggerId::new(),
            app: new.app,
            script: new.script,
            spec: new.spec,
            max_attempts: new.max_attempts,
            created_at: now(),
            last_fired_at: None,
            idempotency: options.idempotency,
        };
        let config = serde_json::to_string(&trigger.spec).map_err(StoreError::backend)?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(APP_EXISTS)
            .bind(trigger.app.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound("app"))?;
        sqlx::query(SCRIPT_EXISTS)
            .bind(trigger.app.as_str())
            .bind(trigger.script.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound("script"))?;
        sqlx::query(INSERT)
            .bind(trigger.id.0)
            .bind(trigger.app.as_str())
            .bind(trigger.script.as_str())
            .bind(trigger.spec.kind())
            .bind(config)
            .bind(trigger.spec.unique_key())
            .bind(i32::try_from(trigger.max_attempts).unwrap_or(i32::MAX))
            .bind(trigger.created_at)
            .bind(
                trigger
                    .idempotency
                    .map(|i| i32::try_from(i.ttl_secs).unwrap_or(i32::MAX)),
            )
            .execute(&mut *tx)
            .await
            .map_err(conflict_as("trigger"))?;
        let mut released = 0;
        if let TriggerSpec::Queue { queue } = &trigger.spec {
            released = sqlx::query(RELEASE_PARKED)
                .bind(trigger.script.as_str())
                .bind(trigger.id.0)
                .bind(i32::try_from(trigger.max_attempts).unwrap_or(i32::MAX))
                .bind(trigger.app.as_str())
                .bind(queue.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
            if released > 0 {
                sqlx::query(NOTIFY).execute(&mut *tx).await.map_err(db)?;
            }
        }
        tx.commit().await.map_err(db)?;
        if released > 0 {
            self.inserted.notify_one();
        }
        Ok(trigger)
    }

    async fn list(&self, app: &AppName) -> Result<Vec<Trigger>, StoreError> {
        let rows = sqlx::query(LIST)
            .bind(app.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(row_to_trigger).collect()
    }

    async fn list_all(&self) -> Result<Vec<Trigger>, StoreError> {
        let rows = sqlx::query(LIST_ALL)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(row_to_trigger).collect()
    }

    async fn delete(&self, app: &AppName, id: TriggerId) -> Result<(), StoreError> {
        let done = sqlx::query(DELETE)
            .bind(app.as_str())
            .bind(id.0)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("trigger"));
        }
        Ok(())
    }

    async fn fire_cron(&self, id: TriggerId, slot: DateTime<Utc>) -> Result<bool, StoreError> {
        let now = now();
        let mut tx = self.pool.begin().await.map_err(db)?;
        let Some(row) = sqlx::query(FIRE)
            .bind(slot)
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
        else {
            return Ok(false);
        };
        let app = decode(row.try_get("app").map_err(db)?, AppName::parse)?;
        let config: &str = row.try_get("config").map_err(db)?;
        let max_attempts: i32 = row.try_get("max_attempts").map_err(db)?;
        let script = row.try_get("script").map_err(db)?;
        let Some(new) = NewRow::cron(
            app,
            id,
            script,
            config,
            max_attempts.into(),
            Some(slot),
            now,
        )?
        else {
            return Ok(false);
        };
        Plan::row(new).insert::<Postgres>(&mut tx, now).await?;
        tx.commit().await.map_err(db)?;
        self.inserted.notify_one();
        Ok(true)
    }

    async fn run_cron_now(&self, app: &AppName, id: TriggerId) -> Result<EventId, StoreError> {
        let now = now();
        let mut tx = self.pool.begin().await.map_err(db)?;
        let row = sqlx::query(CRON_TRIGGER)
            .bind(app.as_str())
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound("trigger"))?;
        let config: &str = row.try_get("config").map_err(db)?;
        let max_attempts: i32 = row.try_get("max_attempts").map_err(db)?;
        let script = row.try_get("script").map_err(db)?;
        let new = NewRow::cron(
            app.clone(),
            id,
            script,
            config,
            max_attempts.into(),
            None,
            now,
        )?
        .ok_or(StoreError::NotFound("trigger"))?;
        let event = new.id;
        Plan::row(new).insert::<Postgres>(&mut tx, now).await?;
        tx.commit().await.map_err(db)?;
        self.inserted.notify_one();
        Ok(event)
    }
}
