//! Triggers on SQLite. The spec is stored whole as JSON (`config`), with `kind` and
//! `unique_key` beside it for filtering and for the UNIQUE(app, unique_key) rule.
use async_trait::async_trait;
use shared::store::{NewTrigger, Trigger, TriggerRepository, TriggerSpec};
use shared::{AppName, ScriptName, StoreError, TriggerId};
use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use super::{begin_write, parse_ts, ts};
use crate::error::{conflict_as, db};
use crate::{decode, now};

const APP_EXISTS: &str = "SELECT 1 FROM apps WHERE name = ?";
const SCRIPT_EXISTS: &str = "SELECT 1 FROM scripts WHERE app = ? AND name = ?";
const INSERT: &str =
    "INSERT INTO triggers (id, app, script, kind, config, unique_key, max_attempts, created_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
const LIST: &str = "SELECT id, app, script, config, max_attempts, created_at FROM triggers
     WHERE app = ? ORDER BY created_at, id";
const LIST_ALL: &str = "SELECT id, app, script, config, max_attempts, created_at FROM triggers
     ORDER BY app, created_at, id";
const DELETE: &str = "DELETE FROM triggers WHERE app = ? AND id = ?";

pub(super) struct SqliteTriggers(pub(super) SqlitePool);

fn row_to_trigger(row: &SqliteRow) -> Result<Trigger, StoreError> {
    let id: &str = row.try_get("id").map_err(db)?;
    let config: &str = row.try_get("config").map_err(db)?;
    let max_attempts: i64 = row.try_get("max_attempts").map_err(db)?;
    Ok(Trigger {
        id: id.parse().map_err(StoreError::backend)?,
        app: decode(row.try_get("app").map_err(db)?, AppName::parse)?,
        script: decode(row.try_get("script").map_err(db)?, ScriptName::parse)?,
        spec: serde_json::from_str::<TriggerSpec>(config).map_err(StoreError::backend)?,
        max_attempts: u32::try_from(max_attempts).map_err(StoreError::backend)?,
        created_at: parse_ts(row.try_get("created_at").map_err(db)?)?,
    })
}

#[async_trait]
impl TriggerRepository for SqliteTriggers {
    async fn create(&self, new: NewTrigger) -> Result<Trigger, StoreError> {
        let trigger = Trigger {
            id: TriggerId::new(),
            app: new.app,
            script: new.script,
            spec: new.spec,
            max_attempts: new.max_attempts,
            created_at: now(),
        };
        let config = serde_json::to_string(&trigger.spec).map_err(StoreError::backend)?;
        let mut tx = begin_write(&self.0).await?;
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
            .bind(trigger.id.to_string())
            .bind(trigger.app.as_str())
            .bind(trigger.script.as_str())
            .bind(trigger.spec.kind())
            .bind(config)
            .bind(trigger.spec.unique_key())
            .bind(i64::from(trigger.max_attempts))
            .bind(ts(trigger.created_at))
            .execute(&mut *tx)
            .await
            .map_err(conflict_as("trigger"))?;
        tx.commit().await.map_err(db)?;
        Ok(trigger)
    }

    async fn list(&self, app: &AppName) -> Result<Vec<Trigger>, StoreError> {
        let rows = sqlx::query(LIST)
            .bind(app.as_str())
            .fetch_all(&self.0)
            .await
            .map_err(db)?;
        rows.iter().map(row_to_trigger).collect()
    }

    async fn list_all(&self) -> Result<Vec<Trigger>, StoreError> {
        let rows = sqlx::query(LIST_ALL).fetch_all(&self.0).await.map_err(db)?;
        rows.iter().map(row_to_trigger).collect()
    }

    async fn delete(&self, app: &AppName, id: TriggerId) -> Result<(), StoreError> {
        let done = sqlx::query(DELETE)
            .bind(app.as_str())
            .bind(id.to_string())
            .execute(&self.0)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("trigger"));
        }
        Ok(())
    }
}
