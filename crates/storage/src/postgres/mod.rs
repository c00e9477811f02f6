//! PostgreSQL: production and cluster mode. Same behaviour as SQLite, its own SQL.
//! `search_path` from the URL (`options=-c search_path=...`) decides which schema the
//! tables and the migration history live in, which is how tests get isolated schemas.
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use shared::{Store, StoreError};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Pool, Postgres, Transaction};
use uuid::Uuid;

use crate::error::db;

mod apps;
mod backup;
mod blobs;
mod bus;
mod dead_letters;
mod idempotency;
mod invocations;
mod kv;
mod limits;
mod meta;
mod nodes;
mod outbox;
mod realtime;
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
    (
        "0008_http_idempotency.sql",
        8,
        "http_idempotency",
        include_str!("../../migrations/postgres/0008_http_idempotency.sql"),
    ),
    (
        "0009_realtime.sql",
        9,
        "realtime",
        include_str!("../../migrations/postgres/0009_realtime.sql"),
    ),
    (
        "0010_sessions.sql",
        10,
        "sessions",
        include_str!("../../migrations/postgres/0010_sessions.sql"),
    ),
    (
        "0011_nodes.sql",
        11,
        "nodes",
        include_str!("../../migrations/postgres/0011_nodes.sql"),
    ),
    (
        "0012_lease_tokens.sql",
        12,
        "lease_tokens",
        include_str!("../../migrations/postgres/0012_lease_tokens.sql"),
    ),
    (
        "0013_traces.sql",
        13,
        "traces",
        include_str!("../../migrations/postgres/0013_traces.sql"),
    ),
    (
        "0014_queue_history.sql",
        14,
        "queue_history",
        include_str!("../../migrations/postgres/0014_queue_history.sql"),
    ),
    (
        "0016_node_realtime_streams.sql",
        16,
        "node_realtime_streams",
        include_str!("../../migrations/postgres/0016_node_realtime_streams.sql"),
    ),
    (
        "0017_outbox_claims.sql",
        17,
        "outbox_claims",
        include_str!("../../migrations/postgres/0017_outbox_claims.sql"),
    ),
    (
        "0018_outbox_claim_in_place.sql",
        18,
        "outbox_claim_in_place",
        include_str!("../../migrations/postgres/0018_outbox_claim_in_place.sql"),
    ),
];

const POOL_SIZE: u32 = 8;

/// The pool's options: `POOL_SIZE` connections, pinged before use only when they may have
/// broken while idle (`crate::pool`).
pub(crate) fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        // Not a round trip before every statement: only a connection that may have
        // broken while idle is pinged (`crate::pool`).
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if crate::pool::needs_ping(meta.idle_for)
                    && let Err(error) = sqlx::Connection::ping(conn).await
                {
                    crate::pool::connection_lost();
                    return Err(error);
                }
                Ok(true)
            })
        })
}

/// Connect to the PostgreSQL database that `url` names and migrate it.
pub(crate) async fn connect(url: &str, data: crate::DataParts) -> Result<Store, StoreError> {
    let options = PgConnectOptions::from_str(url).map_err(db)?;
    let pool = pool_options().connect_with(options).await.map_err(db)?;
    crate::repo::migrator(MIGRATIONS)
        .run(&pool)
        .await
        .map_err(StoreError::backend)?;
    crate::meta::check_secret_key(&pool, &data.secrets, &data.key_fingerprint).await?;
    // The outbox's wake-up, shared by every repository that inserts outbox rows.
    let inserted = Arc::new(tokio::sync::Notify::new());
    let triggers = Arc::new(triggers::PgTriggers::new(pool.clone(), inserted.clone()));
    let bus = Arc::new(bus::PgBus::new(pool.clone()).await?);
    let limits = Arc::new(limits::PgLimits(pool.clone()));
    Ok(crate::repo::store(
        pool, data, MIGRATIONS, triggers, inserted, bus, limits,
    ))
}

impl crate::sql::Dialect for Postgres {
    const BACKEND: &'static str = "postgres";
    type Ts = DateTime<Utc>;
    type Id = Uuid;

    fn ts(at: DateTime<Utc>) -> DateTime<Utc> {
        at
    }

    fn from_ts(raw: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
        Ok(raw)
    }

    fn id(id: Uuid) -> Uuid {
        id
    }

    fn from_id(raw: Uuid) -> Result<Uuid, StoreError> {
        Ok(raw)
    }

    fn rows_affected(done: &sqlx::postgres::PgQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn begin_write(
        pool: &Pool<Postgres>,
    ) -> Result<Transaction<'static, Postgres>, StoreError> {
        pool.begin().await.map_err(db)
    }
}
