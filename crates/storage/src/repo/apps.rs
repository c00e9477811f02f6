//! Apps. Deleting the app row cascades to everything the app owns; it also leaves every
//! token scope that named the app, so a later app of the same name is not in those
//! tokens' scope.
use async_trait::async_trait;
use shared::store::{App, AppRepository};
use shared::{AppName, StoreError};
use sqlx::Pool;

use crate::error::{conflict_as, db};
use crate::now;
use crate::sql::{Cols, Db, sql};

/// The statements of `Apps`, in placeholder order.
pub(crate) trait AppsSql: Db {
    /// (name, created_at)
    const INSERT: &'static str;
    /// (name) -> name, created_at
    const GET: &'static str;
    /// () -> name, created_at, by name
    const LIST: &'static str;
    /// (name)
    const DELETE: &'static str;
    /// (name): drop the name from every token scope that lists it.
    const UNSCOPE: &'static str;
}

pub(crate) struct Apps<DB: Db>(pub(crate) Pool<DB>);

pub(crate) fn row_to_app(row: &impl Cols) -> Result<App, StoreError> {
    Ok(App {
        name: row.name("name", AppName::parse)?,
        created_at: row.ts("created_at")?,
    })
}

#[async_trait]
impl<DB: AppsSql> AppRepository for Apps<DB> {
    async fn create(&self, name: &AppName) -> Result<App, StoreError> {
        let created_at = now();
        sql::<DB>(DB::INSERT)
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
        let row = sql::<DB>(DB::GET)
            .bind(name.as_str())
            .fetch_optional(&self.0)
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound("app"))?;
        row_to_app(&row)
    }

    async fn list(&self) -> Result<Vec<App>, StoreError> {
        let rows = sql::<DB>(DB::LIST).fetch_all(&self.0).await.map_err(db)?;
        rows.iter().map(row_to_app).collect()
    }

    async fn delete(&self, name: &AppName) -> Result<(), StoreError> {
        let mut tx = DB::begin_write(&self.0).await?;
        let deleted = sql::<DB>(DB::DELETE)
            .bind(name.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if deleted == 0 {
            return Err(StoreError::NotFound("app"));
        }
        sql::<DB>(DB::UNSCOPE)
            .bind(name.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }
}
