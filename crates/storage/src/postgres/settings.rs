//! Per-app config, secrets and the development mailbox on PostgreSQL.
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
use sqlx::postgres::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use crate::crypto::SecretBox;
use crate::error::db;
use crate::{app_missing, now};

const CONFIG_GET: &str = "SELECT value FROM app_config WHERE app = $1 AND key = $2";
const CONFIG_SET: &str = "INSERT INTO app_config (app, key, value) VALUES ($1, $2, $3)
     ON CONFLICT (app, key) DO UPDATE SET value = excluded.value";
const CONFIG_DELETE: &str = "DELETE FROM app_config WHERE app = $1 AND key = $2";
const CONFIG_LIST: &str = "SELECT key, value FROM app_config WHERE app = $1 ORDER BY key";
const SECRET_GET: &str = "SELECT nonce, ciphertext FROM app_secrets WHERE app = $1 AND name = $2";
const SECRET_SET: &str = "INSERT INTO app_secrets (app, name, nonce, ciphertext, updated_at)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (app, name) DO UPDATE SET
         nonce = excluded.nonce, ciphertext = excluded.ciphertext,
         updated_at = excluded.updated_at";
const SECRET_DELETE: &str = "DELETE FROM app_secrets WHERE app = $1 AND name = $2";
const SECRET_NAMES: &str = "SELECT name FROM app_secrets WHERE app = $1 ORDER BY name";
const MAIL_INSERT: &str =
    "INSERT INTO mailbox (id, app, message, created_at) VALUES ($1, $2, $3, $4)";
const MAIL_LIST: &str = "SELECT message, created_at FROM mailbox WHERE app = $1
     ORDER BY id DESC LIMIT $2";

pub(super) struct PgSettings {
    pool: PgPool,
    secrets: Arc<SecretBox>,
}

impl PgSettings {
    pub(super) fn new(pool: PgPool, secrets: Arc<SecretBox>) -> Self {
        Self { pool, secrets }
    }
}

#[async_trait]
impl SettingsRepository for PgSettings {
    async fn config_get(&self, app: &AppName, key: &str) -> Result<Option<Value>, StoreError> {
        let raw: Option<Json<Value>> = sqlx::query_scalar(CONFIG_GET)
            .bind(app.as_str())
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(raw.map(|v| v.0))
    }

    async fn config_set(&self, app: &AppName, key: &str, value: &Value) -> Result<(), StoreError> {
        sqlx::query(CONFIG_SET)
            .bind(app.as_str())
            .bind(key)
            .bind(Json(value))
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
                let value: Json<Value> = row.try_get("value").map_err(db)?;
                Ok((row.try_get("key").map_err(db)?, value.0))
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
            .bind(now())
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

pub(super) struct PgMailbox(pub(super) PgPool);

#[async_trait]
impl MailboxRepository for PgMailbox {
    async fn deliver(&self, app: &AppName, message: &EmailMessage) -> Result<(), StoreError> {
        sqlx::query(MAIL_INSERT)
            .bind(Uuid::now_v7())
            .bind(app.as_str())
            .bind(Json(message))
            .bind(now())
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
                let message: Json<EmailMessage> = row.try_get("message").map_err(db)?;
                Ok((row.try_get("created_at").map_err(db)?, message.0))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &str = "SELECT nonce, ciphertext FROM app_secrets WHERE app = $1 AND name = $2";
    const COPY: &str = "INSERT INTO app_secrets (app, name, nonce, ciphertext, updated_at)
         SELECT $3, $4, nonce, ciphertext, updated_at FROM app_secrets
         WHERE app = $1 AND name = $2";

    #[tokio::test]
    async fn secrets_are_sealed_in_their_rows_and_a_copied_row_does_not_open() {
        let url = crate::testing::fresh_postgres_url().await;
        let store = crate::connect(&url).await.expect("connect");
        let pool = PgPool::connect(&url).await.expect("pool");
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
        store.health.close().await;
        // The schema name is the test helper's (a fixed prefix and hex digits), never input.
        let schema = url.rsplit_once("search_path%3D").map(|(_, s)| s.to_owned());
        let schema = schema.expect("a test schema");
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&pool)
            .await
            .expect("drop the test schema");
        pool.close().await;
    }

    #[tokio::test]
    async fn concurrent_puts_of_one_name_hand_back_every_replaced_object_once() {
        let url = crate::testing::fresh_postgres_url().await;
        let store = crate::connect(&url).await.expect("connect");
        let pool = PgPool::connect(&url).await.expect("pool");
        let shop = AppName::parse("shop").expect("app");
        store.apps.create(&shop).await.expect("create");
        let puts: Vec<_> = (0..12)
            .map(|i| {
                let (pool, shop) = (pool.clone(), shop.clone());
                tokio::spawn(async move {
                    let mut tx = pool.begin().await.expect("begin");
                    let write = shared::BlobWrite::Put {
                        name: "same".into(),
                        object: format!("shop/object-{i}"),
                        size: 1,
                        content_type: None,
                    };
                    let freed = crate::postgres::blobs::apply_blobs(&mut tx, &shop, &[write])
                        .await
                        .expect("apply");
                    tx.commit().await.expect("commit");
                    freed
                })
            })
            .collect();
        let mut freed = Vec::new();
        for put in puts {
            freed.extend(put.await.expect("join"));
        }
        let current = store
            .blobs
            .get(&shop, "same")
            .await
            .expect("get")
            .expect("named");
        freed.push(current.object);
        freed.sort();
        let mut all: Vec<String> = (0..12).map(|i| format!("shop/object-{i}")).collect();
        all.sort();
        assert_eq!(
            freed, all,
            "each object is either current or freed, exactly once"
        );
        store.health.close().await;
        let schema = url.rsplit_once("search_path%3D").map(|(_, s)| s.to_owned());
        let schema = schema.expect("a test schema");
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&pool)
            .await
            .expect("drop the test schema");
        pool.close().await;
    }
}
