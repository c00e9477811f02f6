//! Which rows are due: claiming them, and when the next one will be. Both go by the
//! database's clock, which every node shares.
use std::time::Duration;

use chrono::{DateTime, Utc};
use shared::StoreError;
use sqlx::postgres::{PgPool, PgRow};

use crate::error::db;
use crate::outbox::MAX_DELAY;

/// A row still leased when claimed again had a run that never finished (its process
/// stopped or hung): that run counts as an attempt.
const CLAIM: &str = "WITH picked AS (
         SELECT id FROM outbox WHERE NOT parked AND available_at <= now()
         ORDER BY available_at LIMIT $2 FOR UPDATE SKIP LOCKED)
     UPDATE outbox o SET lease_owner = $1,
         attempt = o.attempt + (CASE WHEN o.lease_owner IS NULL THEN 0 ELSE 1 END),
         lease_expires_at = now() + make_interval(secs => $3),
         available_at = now() + make_interval(secs => $3)
     FROM picked WHERE o.id = picked.id
     RETURNING o.id, o.app, o.kind, o.script, o.trigger_id, o.source, o.payload::text AS payload,
               o.attempt, o.max_attempts, o.scheduled_at, o.created_at,
               o.trace_context";
/// The database's own clock with the due time: claims compare against the database's
/// `now()`, so the wait is measured on that clock and moved onto this node's.
const NEXT_DUE: &str =
    "SELECT MIN(available_at) AS due, now() AS db_now FROM outbox WHERE NOT parked";

/// Lease up to `limit` due rows to `node`; two nodes never get the same row.
pub(super) async fn claim(
    pool: &PgPool,
    node: &str,
    limit: u32,
    lease: Duration,
) -> Result<Vec<PgRow>, StoreError> {
    sqlx::query(CLAIM)
        .bind(node)
        .bind(i64::from(limit))
        .bind(lease.min(MAX_DELAY).as_secs_f64())
        .fetch_all(pool)
        .await
        .map_err(db)
}

/// When the next row becomes due, on this node's clock.
pub(super) async fn next_due_at(pool: &PgPool) -> Result<Option<DateTime<Utc>>, StoreError> {
    let before = Utc::now();
    let (due, db_now): (Option<DateTime<Utc>>, DateTime<Utc>) =
        sqlx::query_as(NEXT_DUE).fetch_one(pool).await.map_err(db)?;
    let after = Utc::now();
    // A node whose clock runs ahead of the database's would see a row as due while the
    // claim (on the database's clock) finds nothing, and wake again and again. The
    // database read its clock between `before` and `after`: inside that window the two
    // clocks agree as far as can be told; outside it, the due time is moved by the
    // larger estimate of the gap, so the node never wakes before the row is due.
    let slack = chrono::Duration::milliseconds(1);
    let agree = db_now + slack >= before && db_now - slack <= after;
    Ok(due.map(|due| if agree { due } else { due + (after - db_now) }))
}
