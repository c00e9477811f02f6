//! The repositories, written once over `sql::Db`: each file holds a repository's rules,
//! its row mapping and the trait of statements a backend supplies (`AppsSql`, ...). The
//! backends implement those traits in their own folders with nothing but SQL, plus the few
//! hooks where the two really work differently (a batch insert). `store` puts one
//! database's repositories together.
use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use shared::bus::NotificationBus;
use shared::store::{LimitRepository, StoreHealth, TriggerRepository};
use shared::{Store, StoreError};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Pool, SqlSafeStr};
use tokio::sync::Notify;

use crate::error::db;
use crate::meta::MetaSql;
use crate::outbox::{Outbox, OutboxSql};
use crate::sql::{Cols, Db, sql};

pub(crate) mod apps;
pub(crate) mod blobs;
pub(crate) mod dead_letters;
pub(crate) mod idempotency;
pub(crate) mod invocations;
pub(crate) mod kv;
pub(crate) mod nodes;
pub(crate) mod realtime;
pub(crate) mod scripts;
pub(crate) mod settings;
pub(crate) mod tokens;

/// The embedded migrations of one backend as (file, version, description, SQL), in order.
pub(crate) type Migrations = &'static [(&'static str, i64, &'static str, &'static str)];

/// A backend with every repository's statements.
pub(crate) trait AllSql:
    apps::AppsSql
    + scripts::ScriptsSql
    + tokens::TokensSql
    + MetaSql
    + dead_letters::DeadLettersSql
    + settings::SettingsSql
    + realtime::RealtimeSql
    + nodes::NodesSql
    + OutboxSql
    + crate::backup::BackupSql
{
}

impl<DB> AllSql for DB where
    DB: apps::AppsSql
        + scripts::ScriptsSql
        + tokens::TokensSql
        + MetaSql
        + dead_letters::DeadLettersSql
        + settings::SettingsSql
        + realtime::RealtimeSql
        + nodes::NodesSql
        + OutboxSql
        + crate::backup::BackupSql
{
}

/// Every repository of one migrated database; `triggers` is the backend's own.
pub(crate) fn store<DB: AllSql>(
    pool: Pool<DB>,
    data: crate::DataParts,
    migrations: Migrations,
    triggers: Arc<dyn TriggerRepository>,
    inserted: Arc<Notify>,
    bus: Arc<dyn NotificationBus>,
    limits: Arc<dyn LimitRepository>,
) -> Store {
    Store {
        apps: Arc::new(apps::Apps(pool.clone())),
        scripts: Arc::new(scripts::Scripts(pool.clone())),
        triggers,
        invocations: Arc::new(invocations::Invocations(pool.clone())),
        tokens: Arc::new(tokens::Tokens(pool.clone())),
        outbox: Arc::new(Outbox::new(
            pool.clone(),
            data.objects.clone(),
            inserted.clone(),
            bus.clone(),
        )),
        dead_letters: Arc::new(dead_letters::DeadLetters::new(
            pool.clone(),
            inserted.clone(),
        )),
        kv: Arc::new(kv::Kv::new(pool.clone())),
        blobs: Arc::new(blobs::Blobs(pool.clone())),
        objects: data.objects,
        settings: Arc::new(settings::Settings::new(pool.clone(), data.secrets.clone())),
        realtime: Arc::new(realtime::Realtime::new(pool.clone(), data.secrets)),
        mailbox: Arc::new(settings::Mailbox(pool.clone())),
        limits,
        nodes: Arc::new(nodes::Nodes(pool.clone())),
        idempotency: Arc::new(idempotency::Idempotency(pool.clone())),
        backup: Arc::new(crate::backup::Backup::new(
            pool.clone(),
            migrations,
            data.key_fingerprint,
            inserted.clone(),
            bus.clone(),
        )),
        health: Arc::new(Health {
            pool,
            migrations,
            bus: bus.clone(),
        }),
        bus,
    }
}

/// The migrator of `migrations`.
pub(crate) fn migrator(migrations: Migrations) -> Migrator {
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|(_, version, name, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*name),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// The newest migration applied: `/readyz` wants the last one this build embeds.
pub(crate) const SCHEMA_VERSION: &str =
    "SELECT COALESCE(MAX(version), 0) AS version FROM _sqlx_migrations WHERE success";

struct Health<DB: Db> {
    pool: Pool<DB>,
    migrations: Migrations,
    bus: Arc<dyn NotificationBus>,
}

#[async_trait]
impl<DB: Db> StoreHealth for Health<DB> {
    fn backend(&self) -> &'static str {
        DB::BACKEND
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let applied = sql::<DB>(SCHEMA_VERSION)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?
            .int("version")?;
        crate::schema_is_current(applied, self.migrations)
    }

    async fn close(&self) {
        self.bus.close();
        self.pool.close().await;
    }
}
