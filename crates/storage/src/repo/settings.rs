//! Per-app config, secrets and the development mailbox.
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
use sqlx::Pool;
use uuid::Uuid;

use crate::crypto::SecretBox;
use crate::error::db;
use crate::sql::{Cols, Db, sql};
use crate::{app_missing, now};

/// The statements of `Settings` and `Mailbox`, with their arguments in placeholder order.
/// JSON goes in and comes out as text.
pub(crate) trait SettingsSql: Db {
    /// (app, key) -> value
    const CONFIG_GET: &'static str;
    /// (app, key, value): insert or replace.
    const CONFIG_SET: &'static str;
    /// (app, key)
    const CONFIG_DELETE: &'static str;
    /// (app) -> key, value by key
    const CONFIG_LIST: &'static str;
    /// (app, name) -> nonce, ciphertext
    const SECRET_GET: &'static str;
    /// (app, name, nonce, ciphertext, updated_at): insert or replace.
    const SECRET_SET: &'static str;
    /// (app, name)
    const SECRET_DELETE: &'static str;
    /// (app) -> name by name
    const SECRET_NAMES: &'static str;
    /// (id, app, message, created_at)
    const MAIL_INSERT: &'static str;
    /// (app, limit) -> message, created_at, newest first
    const MAIL_LIST: &'static str;
}

pub(crate) struct Settings<DB: Db> {
    pool: Pool<DB>,
    secrets: Arc<SecretBox>,
}

impl<DB: Db> Settings<DB> {
    pub(crate) fn new(pool: Pool<DB>, secrets: Arc<SecretBox>) -> Self {
        Self { pool, secrets }
    }
}

#[async_trait]
impl<DB: SettingsSql> SettingsRepository for Settings<DB> {
    async fn config_get(&self, app: &AppName, key: &str) -> Result<Option<Value>, StoreError> {
        let row = sql::<DB>(DB::CONFIG_GET)
            .bind(app.as_str())
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|row| row.json("value")).transpose()
    }

    async fn config_set(&self, app: &AppName, key: &str, value: &Value) -> Result<(), StoreError> {
        let json = serde_json::to_string(value).map_err(StoreError::backend)?;
        sql::<DB>(DB::CONFIG_SET)
            .bind(app.as_str())
            .bind(key)
            .bind(json)
            .execute(&self.pool)
            .await
            .map_err(app_missing)?;
        Ok(())
    }

    async fn config_delete(&self, app: &AppName, key: &str) -> Result<bool, StoreError> {
        let deleted = sql::<DB>(DB::CONFIG_DELETE)
            .bind(app.as_str())
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(deleted > 0)
    }

    async fn config_list(&self, app: &AppName) -> Result<Vec<(String, Value)>, StoreError> {
        let rows = sql::<DB>(DB::CONFIG_LIST)
            .bind(app.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| Ok((row.string("key")?, row.json("value")?)))
            .collect()
    }

    async fn secret_get(&self, app: &AppName, name: &str) -> Result<Option<String>, StoreError> {
        let row = sql::<DB>(DB::SECRET_GET)
            .bind(app.as_str())
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        self.secrets
            .open(app, name, &row.bytes("nonce")?, &row.bytes("ciphertext")?)
            .map(Some)
            .map_err(StoreError::backend)
    }

    async fn secret_set(&self, app: &AppName, name: &str, value: &str) -> Result<(), StoreError> {
        let (nonce, ciphertext) = self
            .secrets
            .seal(app, name, value)
            .map_err(StoreError::backend)?;
        sql::<DB>(DB::SECRET_SET)
            .bind(app.as_str())
            .bind(name)
            .bind(&nonce)
            .bind(&ciphertext)
            .bind(now())
            .execute(&self.pool)
            .await
            .map_err(app_missing)?;
        Ok(())
    }

    async fn secret_delete(&self, app: &AppName, name: &str) -> Result<bool, StoreError> {
        let deleted = sql::<DB>(DB::SECRET_DELETE)
            .bind(app.as_str())
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(deleted > 0)
    }

    async fn secret_names(&self, app: &AppName) -> Result<Vec<String>, StoreError> {
        let rows = sql::<DB>(DB::SECRET_NAMES)
            .bind(app.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        // Names with control characters are the platform's own (the realtime signing
        // key): users cannot give such names, and do not see them.
        let mut names = Vec::with_capacity(rows.len());
        for row in &rows {
            let name = row.string("name")?;
            if !name.chars().any(char::is_control) {
                names.push(name);
            }
        }
        Ok(names)
    }
}

pub(crate) struct Mailbox<DB: Db>(pub(crate) Pool<DB>);

#[async_trait]
impl<DB: SettingsSql> MailboxRepository for Mailbox<DB> {
    async fn deliver(&self, app: &AppName, message: &EmailMessage) -> Result<(), StoreError> {
        let json = serde_json::to_string(message).map_err(StoreError::backend)?;
        sql::<DB>(DB::MAIL_INSERT)
            .bind(Uuid::now_v7())
            .bind(app.as_str())
            .bind(json)
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
        let rows = sql::<DB>(DB::MAIL_LIST)
            .bind(app.as_str())
            .bind(i64::from(limit))
            .fetch_all(&self.0)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| Ok((row.ts("created_at")?, row.json("message")?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use shared::{AppName, StoreError};
    use sqlx::{Pool, Postgres, Sqlite};

    use crate::sql::{Cols, Db, sql};
    use crate::testing::TestUrl;

    #[tokio::test]
    async fn secrets_are_sealed_in_their_rows_and_a_copied_row_does_not_open_on_sqlite() {
        let db = TestUrl::sqlite();
        secrets_are_sealed_in_their_rows_and_a_copied_row_does_not_open::<Sqlite>(&db.url).await;
        db.close().await;
    }

    #[tokio::test]
    async fn secrets_are_sealed_in_their_rows_and_a_copied_row_does_not_open_on_postgres() {
        let db = TestUrl::postgres().await;
        secrets_are_sealed_in_their_rows_and_a_copied_row_does_not_open::<Postgres>(&db.url).await;
        db.close().await;
    }

    async fn secrets_are_sealed_in_their_rows_and_a_copied_row_does_not_open<DB: Db>(url: &str) {
        const RAW: &str =
            "SELECT nonce, ciphertext FROM app_secrets WHERE app = 'shop' AND name = 'stripe'";
        let store = crate::connect(url).await.expect("connect");
        let pool = Pool::<DB>::connect(url).await.expect("pool");
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

        let row = sql::<DB>(RAW).fetch_one(&pool).await.expect("raw row");
        let (nonce, ciphertext) = (
            row.bytes("nonce").expect("nonce"),
            row.bytes("ciphertext").expect("ciphertext"),
        );
        assert_eq!(nonce.len(), crate::crypto::NONCE_LEN);
        assert!(
            !ciphertext
                .windows(value.len())
                .any(|w| w == value.as_bytes())
        );

        let copies: [(&'static str, &'static str); 2] = [
            (
                "blog",
                "INSERT INTO app_secrets (app, name, nonce, ciphertext, updated_at)
                 SELECT 'blog', 'stripe', nonce, ciphertext, updated_at FROM app_secrets
                 WHERE app = 'shop' AND name = 'stripe'",
            ),
            (
                "shop",
                "INSERT INTO app_secrets (app, name, nonce, ciphertext, updated_at)
                 SELECT 'shop', 'paypal', nonce, ciphertext, updated_at FROM app_secrets
                 WHERE app = 'shop' AND name = 'stripe'",
            ),
        ];
        for ((app, copy), name) in copies.into_iter().zip(["stripe", "paypal"]) {
            sql::<DB>(copy).execute(&pool).await.expect("copy the row");
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
