//! Per-app and per-script limits on PostgreSQL (`app_limits`, `script_limits`); the column
//! mapping is shared with SQLite in `crate::limits`.
use std::collections::BTreeMap;

use async_trait::async_trait;
use shared::store::LimitRepository;
use shared::{AppLimits, AppName, LimitOverrides, ScriptName, StoreError};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use crate::error::db;
use crate::limits::{limit_columns, limit_updates, overrides, values};
use crate::{app_missing, decode, now};

const LIST_APPS: &str = concat!("SELECT app, ", limit_columns!(), " FROM app_limits");
const LIST_SCRIPTS: &str = concat!(
    "SELECT app, script, ",
    limit_columns!(),
    " FROM script_limits ORDER BY app, script"
);
const GET_APP: &str = concat!(
    "SELECT ",
    limit_columns!(),
    " FROM app_limits WHERE app = $1"
);
const GET_SCRIPTS: &str = concat!(
    "SELECT script, ",
    limit_columns!(),
    " FROM script_limits WHERE app = $1 ORDER BY script"
);
const SET_APP: &str = concat!(
    "INSERT INTO app_limits (app, ",
    limit_columns!(),
    ", updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (app) DO UPDATE SET ",
    limit_updates!()
);
const DELETE_APP: &str = "DELETE FROM app_limits WHERE app = $1";
const SET_SCRIPT: &str = concat!(
    "INSERT INTO script_limits (app, script, ",
    limit_columns!(),
    ", updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
     ON CONFLICT (app, script) DO UPDATE SET ",
    limit_updates!()
);
const DELETE_SCRIPT: &str = "DELETE FROM script_limits WHERE app = $1 AND script = $2";

pub(super) struct PgLimits(pub(super) PgPool);

fn row_to_limits(row: &PgRow) -> Result<LimitOverrides, StoreError> {
    let columns = LimitOverrides::FIELDS
        .iter()
        .map(|field| row.try_get::<Option<i64>, _>(*field))
        .collect::<Result<Vec<_>, _>>()
        .map_err(db)?;
    overrides(columns)
}

/// A write that names a missing script (or app) fails its foreign key.
fn script_missing(e: sqlx::Error) -> StoreError {
    match app_missing(e) {
        StoreError::NotFound(_) => StoreError::NotFound("script"),
        other => other,
    }
}

#[async_trait]
impl LimitRepository for PgLimits {
    async fn list_all(&self) -> Result<Vec<(AppName, AppLimits)>, StoreError> {
        let mut all: BTreeMap<AppName, AppLimits> = BTreeMap::new();
        for row in sqlx::query(LIST_APPS)
            .fetch_all(&self.0)
            .await
            .map_err(db)?
        {
            let app = decode(row.try_get("app").map_err(db)?, AppName::parse)?;
            all.entry(app).or_default().app = row_to_limits(&row)?;
        }
        for row in sqlx::query(LIST_SCRIPTS)
            .fetch_all(&self.0)
            .await
            .map_err(db)?
        {
            let app = decode(row.try_get("app").map_err(db)?, AppName::parse)?;
            let script = decode(row.try_get("script").map_err(db)?, ScriptName::parse)?;
            all.entry(app)
                .or_default()
                .scripts
                .insert(script, row_to_limits(&row)?);
        }
        Ok(all.into_iter().collect())
    }

    async fn get(&self, app: &AppName) -> Result<AppLimits, StoreError> {
        let own = sqlx::query(GET_APP)
            .bind(app.as_str())
            .fetch_optional(&self.0)
            .await
            .map_err(db)?;
        let mut limits = AppLimits {
            app: own
                .as_ref()
                .map(row_to_limits)
                .transpose()?
                .unwrap_or_default(),
            ..AppLimits::default()
        };
        for row in sqlx::query(GET_SCRIPTS)
            .bind(app.as_str())
            .fetch_all(&self.0)
            .await
            .map_err(db)?
        {
            let script = decode(row.try_get("script").map_err(db)?, ScriptName::parse)?;
            limits.scripts.insert(script, row_to_limits(&row)?);
        }
        Ok(limits)
    }

    async fn set_app(&self, app: &AppName, limits: &LimitOverrides) -> Result<(), StoreError> {
        if limits.is_empty() {
            sqlx::query(DELETE_APP)
                .bind(app.as_str())
                .execute(&self.0)
                .await
                .map_err(db)?;
            return Ok(());
        }
        let mut query = sqlx::query(SET_APP).bind(app.as_str());
        for value in values(limits) {
            query = query.bind(value);
        }
        query
            .bind(now())
            .execute(&self.0)
            .await
            .map_err(app_missing)?;
        Ok(())
    }

    async fn set_script(
        &self,
        app: &AppName,
        script: &ScriptName,
        limits: &LimitOverrides,
    ) -> Result<(), StoreError> {
        if limits.is_empty() {
            sqlx::query(DELETE_SCRIPT)
                .bind(app.as_str())
                .bind(script.as_str())
                .execute(&self.0)
                .await
                .map_err(db)?;
            return Ok(());
        }
        let mut query = sqlx::query(SET_SCRIPT)
            .bind(app.as_str())
            .bind(script.as_str());
        for value in values(limits) {
            query = query.bind(value);
        }
        query
            .bind(now())
            .execute(&self.0)
            .await
            .map_err(script_missing)?;
        Ok(())
    }
}
