//! Apps on PostgreSQL. Deleting the app row cascades to everything the app owns.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use shared::store::{App, AppRepository};
use shared::{AppName, StoreError};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use crate::error::{conflict_as, db};
use crate::{decode, now};

const INSERT: &str = "INSERT INTO apps (name, created_at) VALUES ($1, $2)";
const GET: &str = "SELECT name, created_at FROM apps WHERE name = $1";
const LIST: &str = "SELECT name, created_at FROM apps ORDER BY name";
const DELETE: &str = "DELETE FROM apps WHERE name = $1";
/// A deleted app leaves every token scope that named it (a scope that named only it then
/// covers no app), so a later app of the same name is not in those tokens' scope.
const UNSCOPE: &str = "UPDATE api_tokens
     SET apps = TRIM(REPLACE(',' || apps || ',', ',' || $1 || ',', ','), ',')
     WHERE apps IS NOT NULL AND strpos(',' || apps || ',', ',' || $1 || ',') > 0";

pub(super) struct PgApps(pub(super) PgPool);

fn row_to_app(row: &PgRow) -> Result<App, StoreError> {
    Ok(App {
        name: decode(row.try_get("name").map_err(db)?, AppName::parse)?,
        created_at: row.try_get::<DateTime<Utc>, _>("created_at").map_err(db)?,
    })
}

#[async_trait]
impl AppRepository for PgApps {
    async fn create(&self, name: &AppName) -> Result<App, StoreError> {
        let created_at = now();
        sqlx::query(INSERT)
            .bind(name.as_str())
            .bind(created_at)
            .execute(&self.0)
            .await
            .map_err(conflict_as("app"))?;
        Ok(App {
            name: name.clone(),
            created_at,
        })
    }

    async fn get(&self, name: &AppName) -> Result<App, StoreError> {
        let row = sqlx::query(GET)
            .bind(name.as_str())
            .fetch_optional(&self.0)
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound("app"))?;
        row_to_app(&row)
    }

    async fn list(&self) -> Result<Vec<App>, StoreError> {
        let rows = sqlx::query(LIST).fetch_all(&self.0).await.map_err(db)?;
        rows.iter().map(row_to_app).collect()
    }

    async fn delete(&self, name: &AppName) -> Result<(), StoreError> {
        let mut tx = self.0.begin().await.map_err(db)?;
        let done = sqlx::query(DELETE)
            .bind(name.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("app"));
        }
        sqlx::query(UNSCOPE)
            .bind(name.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }
}
