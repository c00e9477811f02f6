//! Per-app config, secrets and the development mailbox on SQLite.
//!
//! What must stay true:
//! - secret values are only ever stored sealed (`crypto::SecretBox`, bound to app and
//!   name) and only `secret_get` opens them; names are listable, values are not;
//! - every statement is scoped by app; writes for a missing app are `NotFound("app")`.
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use shared::store::{MailboxRepository, SettingsRepository};
use shared::{AppName, EmailMessage, StoreError};
use sqlx::Row;
use sqlx::sqlite::SqlitePool;
use uuid::Uuid;

use super::{parse_ts, ts};
use crate::crypto::SecretBox;
use crate::error::db;
use crate::{app_missing, now};

const CONFIG_GET: &str = "SELECT value FROM app_config WHERE app = ?1 AND key = ?2";
const CONFIG_SET: &str = "INSERT INTO app_config (app, key, value) VALUES (?1, ?2, ?3)
     ON CONFLICT (app, key) DO UPDATE SET value = excluded.value";
const CONFIG_DELETE: &str = "DELETE FROM app_config WHERE app = ?1 AND key = ?2";
const CONFIG_LIST: &str = "SELECT key, value FROM app_config WHERE app = ?1 ORDER BY key";
const SECRET_GET: &str = "SELECT nonce, ciphertext FROM app_secrets WHERE app = ?1 AND name = ?2";
const SECRET_SET: &str = "INSERT INTO app_secrets (app, name, nonce, ciphertext, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (app, name) DO UPDATE SET
         nonce = excluded.nonce, ciphertext = excluded.ciphertext,
         updated_at = excluded.updated_at";
const SECRET_DELETE: &str = "DELETE FROM app_secrets WHERE app = ?1 AND name = ?2";
const SECRET_NAMES: &str = "SELECT name FROM app_secrets WHERE app = ?1 ORDER BY name";
const MAIL_INSERT: &str =
    "INSERT INTO mailbox (id, app, message, created_at) VALUES (?1, ?2, ?3, ?4)";
const MAIL_LIST: &str = "SELECT message, created_at FROM mailbox WHERE app = ?1
     ORDER BY id DESC LIMIT ?2";

pub(super) struct SqliteSettings {
    pool: SqlitePool,
    secrets: Arc<SecretBox>,
}

impl SqliteSettings {
    pub(super) fn new(pool: SqlitePool, secrets: Arc<SecretBox>) -> Self {
        Self { pool, secrets }
    }
}

fn json_of(raw: &str) -> Result<Value, StoreError> {
    serde_json::from_str(raw).map_err(StoreError::backend)
}

#[async_trait]
impl SettingsRepository for SqliteSettings {
    async fn config_get(&self, app: &AppName, key: &str) -> Result<Option<Value>, StoreError> {
        let raw: Option<String> = sqlx::query_scalar(CONFIG_GET)
            .bind(app.as_str())
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        raw.as_deref().map(json_of).transpose()
    }

    async fn config_set(&self, app: &AppName, key: &str, value: &Value) -> Result<(), StoreError> {
        let json = serde_json::to_string(value).map_err(StoreError::backend)?;
        sqlx::query(CONFIG_SET)
            .bind(app.as_str())
            .bind(key)
            .bind(json)
            .execute(&self.pool)
            .await
            .map_err(app_missing)?;
        Ok(())
    }

    async fn config_delete(&self, app: &AppName, key: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(CONFIG_DELETE)
            .bind(app.as_str())
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn config_list(&self, app: &AppName) -> Result<Vec<(String, Value)>, StoreError> {
        let rows = sqlx::query(CONFIG_LIST)
            .bind(app.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                let raw: String = row.try_get("value").map_err(db)?;
                Ok((row.try_get("key").map_err(db)?, json_of(&raw)?))
            })
            .collect()
    }

    async fn secret_get(&self, app: &AppName, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(SECRET_GET)
            .bind(app.as_str())
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let nonce: Vec<u8> = row.try_get("nonce").map_err(db)?;
        let ciphertext: Vec<u8> = row.try_get("ciphertext").map_err(db)?;
        self.secrets
            .open(app, name, &nonce, &ciphertext)
            .map(Some)
            .map_err(StoreError::backend)
    }

    async fn secret_set(&self, app: &AppName, name: &str, value: &str) -> Result<(), StoreError> {
        let (nonce, ciphertext) = self
            .secrets
            .seal(app, name, value)
            .map_err(StoreError::backend)?;
        sqlx::query(SECRET_SET)
            .bind(app.as_str())
            .bind(name)
            .bind(nonce)
            .bind(ciphertext)
            .bind(ts(now()))
            .execute(&self.pool)
            .await
            .map_err(app_missing)?;
        Ok(())
    }

    async fn secret_delete(&self, app: &AppName, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(SECRET_DELETE)
            .bind(app.as_str())
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn secret_names(&self, app: &AppName) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(SECRET_NAMES)
            .bind(app.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db)
    }
}

pub(super) struct SqliteMailbox(pub(super) SqlitePool);

#[async_trait]
impl MailboxRepository for SqliteMailbox {
    async fn deliver(&self, app: &AppName, message: &EmailMessage) -> Result<(), StoreError> {
        let json = serde_json::to_string(message).map_err(StoreError::backend)?;
        sqlx::query(MAIL_INSERT)
            .bind(Uuid::now_v7().hyphenated().to_string())
            .bind(app.as_str())
            .bind(json)
            .bind(ts(now()))
            .execute(&self.0)
            .await
            .map_err(app_missing)?;
        Ok(())
    }

    async fn list(
        &self,
        app: &AppName,
        limit: u32,
    ) -> Result<Vec<(DateTime<Utc>, EmailMessage)>, StoreError> {
        let rows = sqlx::query(MAIL_LIST)
            .bind(app.as_str())
            .bind(i64::from(limit))
            .fetch_all(&self.0)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                let raw: String = row.try_get("message").map_err(db)?;
                Ok((
                    parse_ts(row.try_get("created_at").map_err(db)?)?,
                    serde_json::from_str(&raw).map_err(StoreError::backend)?,
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &str = "SELECT nonce, ciphertext FROM app_secrets WHERE app = ?1 AND name = ?2";
    const COPY: &str = "INSERT INTO app_secrets (app, name, nonce, ciphertext, updated_at)
         SELECT ?3, ?4, nonce, ciphertext, updated_at FROM app_secrets
         WHERE app = ?1 AND name = ?2";

    #[tokio::test]
    async fn secrets_are_sealed_in_their_rows_and_a_copied_row_does_not_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let store = crate::connect(&url).await.expect("connect");
        let pool = SqlitePool::connect(&url).await.expect("pool");
        let (shop, blog) = (
            AppName::parse("shop").expect("app"),
            AppName::parse("blog").expect("app"),
        );
        store.apps.create(&shop).await.expect("create");
        store.apps.create(&blog).await.expect("create");
        let value = "sk_live_do-not-leak";
        store
            .settings
            .secret_set(&shop, "stripe", value)
            .await
            .expect("set");

        let (nonce, ciphertext): (Vec<u8>, Vec<u8>) = sqlx::query_as(RAW)
            .bind("shop")
            .bind("stripe")
            .fetch_one(&pool)
            .await
            .expect("raw row");
        assert_eq!(nonce.len(), crate::crypto::NONCE_LEN);
        assert!(
            !ciphertext
                .windows(value.len())
                .any(|w| w == value.as_bytes())
        );

        for (app, name) in [("blog", "stripe"), ("shop", "paypal")] {
            sqlx::query(COPY)
                .bind("shop")
                .bind("stripe")
                .bind(app)
                .bind(name)
                .execute(&pool)
                .await
                .expect("copy the row");
            let app = AppName::parse(app).expect("app");
            let err = store
                .settings
                .secret_get(&app, name)
                .await
                .expect_err("moved row");
            assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
            assert!(!err.to_string().contains(value));
        }
        assert_eq!(
            store
                .settings
                .secret_get(&shop, "stripe")
                .await
                .expect("get")
                .as_deref(),
            Some(value)
        );
        pool.close().await;
        store.health.close().await;
    }
}
