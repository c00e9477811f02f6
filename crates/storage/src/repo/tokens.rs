//! Admin API tokens, stored only by the hash of their secret. The last admin token cannot
//! be deleted: a delete reads every admin row and the target under a lock that two
//! deletes cannot both hold, so the count it decides on is never stale.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use shared::store::{
    ApiToken, Bootstrap, NewToken, Session, TokenDeleted, TokenRepository, TokenRole,
};
use shared::{StoreError, TokenId};
use sqlx::Pool;

use crate::error::{conflict_as, db};
use crate::meta::MetaSql;
use crate::now;
use crate::sql::{Cols, Db, sql};
use crate::token_scope::{apps_from_text, apps_to_text, role_from_text};

/// The statements of `Tokens`, with their arguments in placeholder order.
pub(crate) trait TokensSql: Db {
    /// (id, name, secret_hash, role, apps, created_at)
    const INSERT: &'static str;
    /// (secret_hash) -> a token row (id, name, role, apps, created_at)
    const FIND_BY_HASH: &'static str;
    /// () -> token rows, oldest first
    const LIST: &'static str;
    /// (id) -> id, role of every admin and of the target, locked until the commit (in id
    /// order, so two deletes never deadlock).
    const LOCK_ADMINS_AND_TARGET: &'static str;
    /// (id)
    const DELETE: &'static str;
    /// () -> n
    const COUNT: &'static str;
    /// (secret_hash, token_id, created_at, expires_at)
    const INSERT_SESSION: &'static str;
    /// (now): every session that expired before it
    const DELETE_EXPIRED_SESSIONS: &'static str;
    /// (secret_hash) -> a token row (id, name, role, apps, created_at) and `expires_at`
    const FIND_SESSION: &'static str;
    /// (secret_hash)
    const DELETE_SESSION: &'static str;
}

pub(crate) struct Tokens<DB: Db>(pub(crate) Pool<DB>);

fn row_to_token(row: &impl Cols) -> Result<ApiToken, StoreError> {
    Ok(ApiToken {
        id: TokenId(row.uuid("id")?),
        name: row.string("name")?,
        role: role_from_text(row.text("role")?)?,
        apps: apps_from_text(row.opt_text("apps")?)?,
        created_at: row.ts("created_at")?,
    })
}

#[async_trait]
impl<DB: TokensSql + MetaSql> TokenRepository for Tokens<DB> {
    async fn create(&self, new: &NewToken) -> Result<ApiToken, StoreError> {
        let token = ApiToken {
            id: TokenId::new(),
            name: new.name.clone(),
            role: new.role,
            apps: new.apps.clone(),
            created_at: now(),
        };
        sql::<DB>(DB::INSERT)
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
        let row = sql::<DB>(DB::FIND_BY_HASH)
            .bind(secret_hash)
            .fetch_optional(&self.0)
            .await
            .map_err(db)?;
        row.as_ref().map(row_to_token).transpose()
    }

    async fn list(&self) -> Result<Vec<ApiToken>, StoreError> {
        let rows = sql::<DB>(DB::LIST).fetch_all(&self.0).await.map_err(db)?;
        rows.iter().map(row_to_token).collect()
    }

    async fn delete(&self, id: TokenId) -> Result<TokenDeleted, StoreError> {
        let mut tx = DB::begin_write(&self.0).await?;
        let rows = sql::<DB>(DB::LOCK_ADMINS_AND_TARGET)
            .bind(id.0)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        let mut target = None;
        let mut admins = 0usize;
        for row in &rows {
            let role = role_from_text(row.text("role")?)?;
            if role == TokenRole::Admin {
                admins += 1;
            }
            if row.uuid("id")? == id.0 {
                target = Some(role);
            }
        }
        let Some(role) = target else {
            return Err(StoreError::NotFound("token"));
        };
        if role == TokenRole::Admin && admins <= 1 {
            return Ok(TokenDeleted::LastAdmin);
        }
        sql::<DB>(DB::DELETE)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(TokenDeleted::Deleted)
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let row = sql::<DB>(DB::COUNT).fetch_one(&self.0).await.map_err(db)?;
        row.count("n")
    }

    async fn install_bootstrap(
        &self,
        name: &str,
        secret_hash: &str,
    ) -> Result<Bootstrap, StoreError> {
        crate::meta::install_bootstrap(&self.0, name, secret_hash).await
    }

    async fn create_session(
        &self,
        secret_hash: &str,
        token: TokenId,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sql::<DB>(DB::DELETE_EXPIRED_SESSIONS)
            .bind(now)
            .execute(&self.0)
            .await
            .map_err(db)?;
        sql::<DB>(DB::INSERT_SESSION)
            .bind(secret_hash)
            .bind(token.0)
            .bind(now)
            .bind(expires_at)
            .execute(&self.0)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d)
                    if matches!(d.kind(), sqlx::error::ErrorKind::ForeignKeyViolation) =>
                {
                    StoreError::NotFound("token")
                }
                _ => conflict_as("session")(e),
            })?;
        Ok(())
    }

    async fn find_session(
        &self,
        secret_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, StoreError> {
        let row = sql::<DB>(DB::FIND_SESSION)
            .bind(secret_hash)
            .fetch_optional(&self.0)
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let expires_at = row.ts("expires_at")?;
        if expires_at <= now {
            return Ok(None);
        }
        Ok(Some(Session {
            token: row_to_token(&row)?,
            expires_at,
        }))
    }

    async fn delete_session(&self, secret_hash: &str) -> Result<bool, StoreError> {
        let n = sql::<DB>(DB::DELETE_SESSION)
            .bind(secret_hash)
            .execute(&self.0)
            .await
            .map_err(db)?;
        Ok(n > 0)
    }
}
