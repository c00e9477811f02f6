//! Admin API tokens on PostgreSQL, stored only by the hash of their secret.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use shared::store::{ApiToken, TokenRepository};
use shared::{StoreError, TokenId};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};
use uuid::Uuid;

use crate::error::{conflict_as, db};
use crate::now;

const INSERT: &str =
    "INSERT INTO api_tokens (id, name, secret_hash, created_at) VALUES ($1, $2, $3, $4)";
const FIND_BY_HASH: &str = "SELECT id, name, created_at FROM api_tokens WHERE secret_hash = $1";
const LIST: &str = "SELECT id, name, created_at FROM api_tokens ORDER BY created_at, id";
const DELETE: &str = "DELETE FROM api_tokens WHERE id = $1";
const COUNT: &str = "SELECT COUNT(*) AS n FROM api_tokens";

pub(super) struct PgTokens(pub(super) PgPool);

fn row_to_token(row: &PgRow) -> Result<ApiToken, StoreError> {
    Ok(ApiToken {
        id: TokenId(row.try_get::<Uuid, _>("id").map_err(db)?),
        name: row.try_get("name").map_err(db)?,
        created_at: row.try_get::<DateTime<Utc>, _>("created_at").map_err(db)?,
    })
}

#[async_trait]
impl TokenRepository for PgTokens {
    async fn create(&self, name: &str, secret_hash: &str) -> Result<ApiToken, StoreError> {
        let token = ApiToken {
            id: TokenId::new(),
            name: name.to_owned(),
            created_at: now(),
        };
        sqlx::query(INSERT)
            .bind(token.id.0)
            .bind(name)
            .bind(secret_hash)
            .bind(token.created_at)
            .execute(&self.0)
            .await
            .map_err(conflict_as("token"))?;
        Ok(token)
    }

    async fn find_by_hash(&self, secret_hash: &str) -> Result<Option<ApiToken>, StoreError> {
        let row = sqlx::query(FIND_BY_HASH)
            .bind(secret_hash)
            .fetch_optional(&self.0)
            .await
            .map_err(db)?;
        row.as_ref().map(row_to_token).transpose()
    }

    async fn list(&self) -> Result<Vec<ApiToken>, StoreError> {
        let rows = sqlx::query(LIST).fetch_all(&self.0).await.map_err(db)?;
        rows.iter().map(row_to_token).collect()
    }

    async fn delete(&self, id: TokenId) -> Result<(), StoreError> {
        let done = sqlx::query(DELETE)
            .bind(id.0)
            .execute(&self.0)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("token"));
        }
        Ok(())
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query(COUNT)
            .fetch_one(&self.0)
            .await
            .map_err(db)?
            .try_get("n")
            .map_err(db)?;
        u64::try_from(n).map_err(StoreError::backend)
    }

    async fn install_bootstrap(
        &self,
        name: &str,
        secret_hash: &str,
    ) -> Result<shared::store::Bootstrap, StoreError> {
        super::meta::install_bootstrap(&self.0, name, secret_hash).await
    }
}
