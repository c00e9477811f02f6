//! Admin API tokens on PostgreSQL, stored only by the hash of their secret.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use shared::store::{ApiToken, NewToken, TokenDeleted, TokenRepository, TokenRole};
use shared::{StoreError, TokenId};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};
use uuid::Uuid;

use crate::error::{conflict_as, db};
use crate::now;
use crate::token_scope::{apps_from_text, apps_to_text, role_from_text};

const INSERT: &str = "INSERT INTO api_tokens (id, name, secret_hash, role, apps, created_at) \
                      VALUES ($1, $2, $3, $4, $5, $6)";
const FIND_BY_HASH: &str =
    "SELECT id, name, role, apps, created_at FROM api_tokens WHERE secret_hash = $1";
const LIST: &str =
    "SELECT id, name, role, apps, created_at FROM api_tokens ORDER BY created_at, id";
/// Locks every admin row and the target, in id order (so two deletes never deadlock). A
/// concurrent delete that committed first has removed its row from what this one sees once
/// it gets the lock, so the count below is never stale.
const LOCK_ADMINS_AND_TARGET: &str =
    "SELECT id, role FROM api_tokens WHERE role = 'admin' OR id = $1 ORDER BY id FOR UPDATE";
const DELETE: &str = "DELETE FROM api_tokens WHERE id = $1";
const COUNT: &str = "SELECT COUNT(*) AS n FROM api_tokens";

pub(super) struct PgTokens(pub(super) PgPool);

fn row_to_token(row: &PgRow) -> Result<ApiToken, StoreError> {
    Ok(ApiToken {
        id: TokenId(row.try_get::<Uuid, _>("id").map_err(db)?),
        name: row.try_get("name").map_err(db)?,
        role: role_from_text(row.try_get("role").map_err(db)?)?,
        apps: apps_from_text(row.try_get("apps").map_err(db)?)?,
        created_at: row.try_get::<DateTime<Utc>, _>("created_at").map_err(db)?,
    })
}

#[async_trait]
impl TokenRepository for PgTokens {
    async fn create(&self, new: &NewToken) -> Result<ApiToken, StoreError> {
        let token = ApiToken {
            id: TokenId::new(),
            name: new.name.clone(),
            role: new.role,
            apps: new.apps.clone(),
            created_at: now(),
        };
        sqlx::query(INSERT)
            .bind(token.id.0)
            .bind(&new.name)
            .bind(&new.secret_hash)
            .bind(new.role.as_str())
            .bind(apps_to_text(new.apps.as_deref()))
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

    async fn delete(&self, id: TokenId) -> Result<TokenDeleted, StoreError> {
        let mut tx = self.0.begin().await.map_err(db)?;
        let rows = sqlx::query(LOCK_ADMINS_AND_TARGET)
            .bind(id.0)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        let mut target = None;
        let mut admins = 0usize;
        for row in &rows {
            let role = role_from_text(row.try_get("role").map_err(db)?)?;
            if role == TokenRole::Admin {
                admins += 1;
            }
            if row.try_get::<Uuid, _>("id").map_err(db)? == id.0 {
                target = Some(role);
            }
        }
        let Some(role) = target else {
            return Err(StoreError::NotFound("token"));
        };
        if role == TokenRole::Admin && admins <= 1 {
            return Ok(TokenDeleted::LastAdmin);
        }
        sqlx::query(DELETE)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(TokenDeleted::Deleted)
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
