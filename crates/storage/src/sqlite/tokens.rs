//! Admin API tokens on SQLite, stored only by the hash of their secret.
use async_trait::async_trait;
use shared::store::{ApiToken, NewToken, TokenDeleted, TokenRepository};
use shared::{StoreError, TokenId};
use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use super::{begin_write, parse_ts, ts};
use crate::error::{conflict_as, db};
use crate::now;
use crate::token_scope::{apps_from_text, apps_to_text, role_from_text};

const INSERT: &str = "INSERT INTO api_tokens (id, name, secret_hash, role, apps, created_at) \
                      VALUES (?, ?, ?, ?, ?, ?)";
const FIND_BY_HASH: &str =
    "SELECT id, name, role, apps, created_at FROM api_tokens WHERE secret_hash = ?";
const LIST: &str =
    "SELECT id, name, role, apps, created_at FROM api_tokens ORDER BY created_at, id";
const ROLE_OF: &str = "SELECT role FROM api_tokens WHERE id = ?";
/// Deletes unless the row is the last admin: the check is part of the statement, and the
/// statement runs under the write lock (`BEGIN IMMEDIATE`), so no other delete interleaves.
const DELETE_GUARDED: &str = "DELETE FROM api_tokens WHERE id = ?1 AND (role <> 'admin' \
     OR EXISTS (SELECT 1 FROM api_tokens WHERE role = 'admin' AND id <> ?1))";
const COUNT: &str = "SELECT COUNT(*) AS n FROM api_tokens";

pub(super) struct SqliteTokens(pub(super) SqlitePool);

fn row_to_token(row: &SqliteRow) -> Result<ApiToken, StoreError> {
    let id: &str = row.try_get("id").map_err(db)?;
    Ok(ApiToken {
        id: id.parse().map_err(StoreError::backend)?,
        name: row.try_get("name").map_err(db)?,
        role: role_from_text(row.try_get("role").map_err(db)?)?,
        apps: apps_from_text(row.try_get("apps").map_err(db)?)?,
        created_at: parse_ts(row.try_get("created_at").map_err(db)?)?,
    })
}

#[async_trait]
impl TokenRepository for SqliteTokens {
    async fn create(&self, new: &NewToken) -> Result<ApiToken, StoreError> {
        let token = ApiToken {
            id: TokenId::new(),
            name: new.name.clone(),
            role: new.role,
            apps: new.apps.clone(),
            created_at: now(),
        };
        sqlx::query(INSERT)
            .bind(token.id.to_string())
            .bind(&new.name)
            .bind(&new.secret_hash)
            .bind(new.role.as_str())
            .bind(apps_to_text(new.apps.as_deref()))
            .bind(ts(token.created_at))
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

    async fn delete(&self, id: TokenId) -> Result<TokenDeleted, StoreError> {
        let mut tx = begin_write(&self.0).await?;
        let done = sqlx::query(DELETE_GUARDED)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let outcome = if done.rows_affected() > 0 {
            TokenDeleted::Deleted
        } else {
            let exists = sqlx::query(ROLE_OF)
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                .is_some();
            if !exists {
                return Err(StoreError::NotFound("token"));
            }
            TokenDeleted::LastAdmin
        };
        tx.commit().await.map_err(db)?;
        Ok(outcome)
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
