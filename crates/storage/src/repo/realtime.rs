//! Realtime: topics exposed to browsers, each app's signing key and CORS origins, and the
//! durable replay buffer (written by the outbox's commit, `outbox::plan`).
//!
//! What must stay true:
//! - the signing key is an app secret, sealed like every other (`crypto::SecretBox`), under
//!   a name no user can give (`KEY_SECRET` starts with a control character, which the
//!   secrets API refuses) and which the secrets list leaves out;
//! - the first key is made once even when two nodes race: insert-if-absent, then read;
//! - pruning keeps each app's newest `keep` events and nothing older than the age bound.
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use shared::store::{RealtimeAccess, RealtimeBounds, RealtimeEvent, RealtimeRepository};
use shared::{AppName, ChannelName, StoreError};
use sqlx::Pool;

use super::settings::SettingsSql;
use crate::crypto::SecretBox;
use crate::error::db;
use crate::sql::{Cols, Db, sql};
use crate::{app_missing, decode, now};

/// The app secret that holds the signing key (hex). Secret names a user gives may not
/// contain control characters, so this one can never collide with theirs.
pub(crate) const KEY_SECRET: &str = "\u{1}realtime-key";

/// The statements of `Realtime`, with their arguments in placeholder order.
pub(crate) trait RealtimeSql: SettingsSql {
    /// (app) -> a row while the app exists.
    const APP_EXISTS: &'static str;
    /// (app, topic, created_at): nothing when already there.
    const EXPOSE: &'static str;
    /// (app, topic)
    const UNEXPOSE: &'static str;
    /// (app) -> topic, by topic
    const TOPICS: &'static str;
    /// (app, cors_origins as JSON text): insert or replace.
    const SET_CORS: &'static str;
    /// (app) -> cors_origins as JSON text
    const CORS: &'static str;
    /// (app, name, nonce, ciphertext, updated_at): nothing when already there.
    const SECRET_ADD: &'static str;
    /// (app, after, limit) -> id, topic, payload, created_at, oldest first
    const EVENTS_AFTER: &'static str;
    /// (app) -> oldest (NULL when empty), last
    const BOUNDS: &'static str;
    /// (keep): drop events more than `keep` below their app's last id.
    const PRUNE_COUNT: &'static str;
    /// (older_than)
    const PRUNE_AGE: &'static str;
    /// () -> oldest: the earliest created_at of any app's event (NULL when empty).
    const OLDEST: &'static str;
}

pub(crate) struct Realtime<DB: Db> {
    pool: Pool<DB>,
    secrets: Arc<SecretBox>,
}

impl<DB: RealtimeSql> Realtime<DB> {
    pub(crate) fn new(pool: Pool<DB>, secrets: Arc<SecretBox>) -> Self {
        Self { pool, secrets }
    }

    async fn require_app(&self, app: &AppName) -> Result<(), StoreError> {
        sql::<DB>(DB::APP_EXISTS)
            .bind(app.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .map(drop)
            .ok_or(StoreError::NotFound("app"))
    }

    /// The stored key, if any.
    async fn stored_key(&self, app: &AppName) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sql::<DB>(DB::SECRET_GET)
            .bind(app.as_str())
            .bind(KEY_SECRET)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let hex = self
            .secrets
            .open(
                app,
                KEY_SECRET,
                &row.bytes("nonce")?,
                &row.bytes("ciphertext")?,
            )
            .map_err(StoreError::backend)?;
        hex::decode(hex).map(Some).map_err(StoreError::backend)
    }

    /// A new key, sealed: (nonce, ciphertext).
    fn sealed_new_key(&self, app: &AppName) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
        let key: [u8; shared::realtime::KEY_BYTES] = rand::random();
        self.secrets
            .seal(app, KEY_SECRET, &hex::encode(key))
            .map_err(StoreError::backend)
    }
}

#[async_trait]
impl<DB: RealtimeSql> RealtimeRepository for Realtime<DB> {
    async fn expose(&self, app: &AppName, topic: &ChannelName) -> Result<bool, StoreError> {
        let added = sql::<DB>(DB::EXPOSE)
            .bind(app.as_str())
            .bind(topic.as_str())
            .bind(now())
            .execute(&self.pool)
            .await
            .map_err(app_missing)?;
        Ok(added > 0)
    }

    async fn unexpose(&self, app: &AppName, topic: &ChannelName) -> Result<bool, StoreError> {
        let removed = sql::<DB>(DB::UNEXPOSE)
            .bind(app.as_str())
            .bind(topic.as_str())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(removed > 0)
    }

    async fn topics(&self, app: &AppName) -> Result<Vec<ChannelName>, StoreError> {
        let rows = sql::<DB>(DB::TOPICS)
            .bind(app.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| decode(row.text("topic")?, ChannelName::parse))
            .collect()
    }

    async fn key(&self, app: &AppName) -> Result<Vec<u8>, StoreError> {
        if let Some(key) = self.stored_key(app).await? {
            return Ok(key);
        }
        let (nonce, ciphertext) = self.sealed_new_key(app)?;
        sql::<DB>(DB::SECRET_ADD)
            .bind(app.as_str())
            .bind(KEY_SECRET)
            .bind(&nonce)
            .bind(&ciphertext)
            .bind(now())
            .execute(&self.pool)
            .await
            .map_err(app_missing)?;
        // Ours, or the one another node made first.
        self.stored_key(app)
            .await?
            .ok_or(StoreError::NotFound("app"))
    }

    async fn rotate_key(&self, app: &AppName) -> Result<(), StoreError> {
        let (nonce, ciphertext) = self.sealed_new_key(app)?;
        sql::<DB>(DB::SECRET_SET)
            .bind(app.as_str())
            .bind(KEY_SECRET)
            .bind(&nonce)
            .bind(&ciphertext)
            .bind(now())
            .execute(&self.pool)
            .await
            .map_err(app_missing)?;
        Ok(())
    }

    async fn set_cors_origins(&self, app: &AppName, origins: &[String]) -> Result<(), StoreError> {
        let json = serde_json::to_string(origins).map_err(StoreError::backend)?;
        sql::<DB>(DB::SET_CORS)
            .bind(app.as_str())
            .bind(json)
            .execute(&self.pool)
            .await
            .map_err(app_missing)?;
        Ok(())
    }

    async fn access(&self, app: &AppName) -> Result<Option<RealtimeAccess>, StoreError> {
        match self.require_app(app).await {
            Ok(()) => {}
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
        let key = self.stored_key(app).await?;
        let exposed = self.topics(app).await?;
        let cors_origins = match sql::<DB>(DB::CORS)
            .bind(app.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
        {
            Some(row) => row.json("cors_origins")?,
            None => Vec::new(),
        };
        Ok(Some(RealtimeAccess {
            key,
            exposed,
            cors_origins,
        }))
    }

    async fn events_after(
        &self,
        app: &AppName,
        after: u64,
        limit: u32,
    ) -> Result<Vec<RealtimeEvent>, StoreError> {
        let rows = sql::<DB>(DB::EVENTS_AFTER)
            .bind(app.as_str())
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(RealtimeEvent {
                    id: row.count("id")?,
                    topic: decode(row.text("topic")?, ChannelName::parse)?,
                    payload: row.string("payload")?,
                    created_at: row.ts("created_at")?,
                })
            })
            .collect()
    }

    async fn bounds(&self, app: &AppName) -> Result<RealtimeBounds, StoreError> {
        let row = sql::<DB>(DB::BOUNDS)
            .bind(app.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        let last = u64::try_from(row.int("last")?).map_err(StoreError::backend)?;
        let oldest = match row.opt_int("oldest")? {
            Some(id) => u64::try_from(id).map_err(StoreError::backend)?,
            None => last + 1,
        };
        Ok(RealtimeBounds { oldest, last })
    }

    async fn prune(&self, keep: u64, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
        let by_count = sql::<DB>(DB::PRUNE_COUNT)
            .bind(i64::try_from(keep).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        let by_age = sql::<DB>(DB::PRUNE_AGE)
            .bind(older_than)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(by_count + by_age)
    }

    async fn oldest(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        sql::<DB>(DB::OLDEST)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?
            .opt_ts("oldest")
    }
}
