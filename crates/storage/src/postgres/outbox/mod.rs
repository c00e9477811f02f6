//! The outbox on PostgreSQL: its statements, and what several nodes claiming and
//! committing at once need.
//!
//! What must stay true here, beyond the rules in `crate::outbox`:
//! - claims use `FOR UPDATE SKIP LOCKED` and stamp the claim's token and the end of the
//!   lease on the database's clock (a row under a live lease is not due), so two nodes
//!   never claim one row; a claim writes no indexed column, so it moves no index entry
//!   (`due`); a batch finishes only the rows still stamped with its events' tokens
//!   (`commit`);
//! - a batch is one transaction with a fixed number of multi-row statements (UNNEST), plus
//!   a savepoint only for events with KV or blob writes (`commit`, `insert`);
//! - the apps of a batch are locked (`FOR KEY SHARE`) first, so an app deleted meanwhile
//!   waits for the commit or is already gone, never a deadlock or a failed FK halfway;
//! - a transaction that inserts rows also sends an outbox notice on the notification bus
//!   (`NOTIFY`, delivered when it commits); each node's outbox turns those into its local
//!   wake-up (`crate::outbox`). Nothing polls.
use std::time::Duration;

use chrono::{DateTime, Utc};
use shared::store::EventCommit;
use shared::{LeaseToken, StoreError};
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Pool, Postgres};

use crate::outbox::{Batch, Letter, NewRow, OutboxSql};

mod commit; // one batch: held rows, effects in savepoints, dead letters, records
mod due; // claiming due rows; when the next one is due, on this node's clock
mod insert; // planned rows and dead letters, one UNNEST statement each
#[cfg(test)]
mod tests;

/// Runs inside a transaction that inserted rows; delivered when it commits.
pub(super) const NOTIFY: &str = super::bus::NOTIFY_OUTBOX;

impl OutboxSql for Postgres {
    const LOCK_APP: &'static str = "SELECT name FROM apps WHERE name = $1 FOR KEY SHARE";
    const LOCK_APP_IS: &'static str =
        "SELECT name FROM apps WHERE name = $1 AND created_at = $2 FOR KEY SHARE";
    const TOPIC_SUBSCRIBERS: &'static str = "SELECT id, script, max_attempts FROM triggers
     WHERE app = $1 AND kind = 'topic' AND config::jsonb ->> 'topic' = $2
     ORDER BY created_at, id";
    const QUEUE_CONSUMER: &'static str =
        "SELECT id, script, max_attempts FROM triggers WHERE app = $1 AND unique_key = $2";
    const DEAD_LETTER_TRIGGERS: &'static str = "SELECT id, script, max_attempts FROM triggers
     WHERE app = $1 AND kind = 'dead_letter' ORDER BY created_at, id";
    const INSERT_KEY: &'static str = "INSERT INTO idempotency_keys (app, queue, key, created_at)
     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
    const DELETE_HELD: &'static str =
        "DELETE FROM outbox WHERE id = $1 AND lease_owner = $2 AND lease_token = $3";
    const PENDING: &'static str = "SELECT COUNT(*) AS n FROM outbox WHERE app = $1";
    const TOPIC_EXPOSED: &'static str =
        "SELECT 1 AS one FROM realtime_topics WHERE app = $1 AND topic = $2";
    const TAKE_REALTIME_IDS: &'static str =
        "INSERT INTO realtime_apps (app, last_id) VALUES ($1, $2)
     ON CONFLICT (app) DO UPDATE SET last_id = realtime_apps.last_id + EXCLUDED.last_id
     RETURNING last_id";
    const INSERT_REALTIME: &'static str =
        "INSERT INTO realtime_events (app, id, topic, payload, created_at)
     VALUES ($1, $2, $3, $4, $5)";

    async fn claim(
        pool: &Pool<Postgres>,
        node: &str,
        token: LeaseToken,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<PgRow>, StoreError> {
        due::claim(pool, node, token, limit, lease).await
    }

    async fn commit_batch<'a>(
        conn: &'a mut PgConnection,
        node: &'a str,
        batch: &'a [EventCommit],
        now: DateTime<Utc>,
        acc: &'a mut Batch,
    ) -> Result<(), StoreError> {
        commit::commit_batch(conn, node, batch, now, acc).await
    }

    async fn commit_at_once<'a>(
        pool: &'a Pool<Postgres>,
        node: &'a str,
        batch: &'a [EventCommit],
    ) -> bool {
        commit::commit_at_once(pool, node, batch).await
    }

    async fn insert(
        conn: &mut PgConnection,
        rows: &[NewRow],
        letters: &[Letter],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        insert::insert(conn, rows, letters, now).await
    }

    async fn next_due_at(pool: &Pool<Postgres>) -> Result<Option<DateTime<Utc>>, StoreError> {
        due::next_due_at(pool).await
    }
}
