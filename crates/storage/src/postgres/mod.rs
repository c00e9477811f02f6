//! PostgreSQL: production and cluster mode. Same behaviour as SQLite, its own SQL.
//! `search_path` from the URL (`options=-c search_path=...`) decides which schema the
//! tables and the migration history live in, which is how tests get isolated schemas.
use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use shared::store::StoreHealth;
use shared::{Store, StoreError};
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::error::db;

mod apps;
mod blobs;
mod dead_letters;
mod invocations;
mod kv;
mod limits;
mod meta;
mod outbox;
mod scripts;
mod settings;
mod tokens;
mod triggers;

/// The embedded migrations as (file, version, description, SQL), in order; a unit test
/// checks the files against the folder and the other backend's list.
pub(crate) const MIGRATIONS: &[(&str, i64, &str, &str)] = &[
    (
        "0001_init.sql",
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        "0002_events.sql",
        2,
        "events",
        include_str!("../../migrations/postgres/0002_events.sql"),
    ),
    (
        "0003_data.sql",
        3,
        "data",
        include_str!("../../migrations/postgres/0003_data.sql"),
    ),
    (
        "0004_server_meta.sql",
        4,
        "server_meta",
        include_str!("../../migrations/postgres/0004_server_meta.sql"),
    ),
    (
        "0005_token_scopes.sql",
        5,
        "token_scopes",
        include_str!("../../migrations/postgres/0005_token_scopes.sql"),
    ),
    (
        "0006_invocation_drops.sql",
        6,
        "invocation_drops",
        include_str!("../../migrations/postgres/0006_invocation_drops.sql"),
    ),
    (
        "0007_limits.sql",
        7,
        "limits",
        include_str!("../../migrations/postgres/0007_limits.sql"),
    ),
];

const POOL_SIZE: u32 = 8;
/// The newest migration applied: `/readyz` wants the last one this build embeds.
const SCHEMA_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success";

/// Connect to the PostgreSQL database that `url` names and migrate it.
pub(crate) async fn connect(url: &str, data: crate::DataParts) -> Result<Store, StoreError> {
    let options = PgConnectOptions::from_str(url).map_err(db)?;
    let pool = PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .connect_with(options)
        .await
        .map_err(db)?;
    migrator().run(&pool).await.map_err(StoreError::backend)?;
    meta::check_secret_key(&pool, &data.secrets, &data.key_fingerprint).await?;
    // The outbox's wake-up, shared by every repository that inserts outbox rows.
    let inserted = Arc::new(tokio::sync::Notify::new());
    Ok(Store {
        apps: Arc::new(apps::PgApps(pool.clone())),
        scripts: Arc::new(scripts::PgScripts(pool.clone())),
        triggers: Arc::new(triggers::PgTriggers::new(pool.clone(), inserted.clone())),
        invocations: Arc::new(invocations::PgInvocations(pool.clone())),
        tokens: Arc::new(tokens::PgTokens(pool.clone())),
        outbox: Arc::new(outbox::PgOutbox::new(
            pool.clone(),
            data.objects.clone(),
            inserted.clone(),
        )),
        dead_letters: Arc::new(dead_letters::PgDeadLetters::new(pool.clone(), inserted)),
        kv: Arc::new(kv::PgKv(pool.clone())),
        blobs: Arc::new(blobs::PgBlobs(pool.clone())),
        objects: data.objects,
        settings: Arc::new(settings::PgSettings::new(pool.clone(), data.secrets)),
        mailbox: Arc::new(settings::PgMailbox(pool.clone())),
        limits: Arc::new(limits::PgLimits(pool.clone())),
        health: Arc::new(PgHealth(pool)),
    })
}

fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
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

struct PgHealth(PgPool);

#[async_trait]
impl StoreHealth for PgHealth {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let applied: i64 = sqlx::query_scalar(SCHEMA_VERSION)
            .fetch_one(&self.0)
            .await
            .map_err(db)?;
        crate::schema_is_current(applied, MIGRATIONS)
    }

    async fn close(&self) {
        self.0.close().await;
    }
}
