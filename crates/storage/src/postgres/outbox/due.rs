//! Which rows are due: claiming them, and when the next one will be. Both go by the
//! database's clock, which every node shares.
use std::time::Duration;

use chrono::{DateTime, Utc};
use shared::{LeaseToken, StoreError};
use sqlx::postgres::{PgPool, PgRow};

use crate::error::db;
use crate::outbox::MAX_DELAY;

/// A row still leased when claimed again had a run that never finished (its process
/// stopped or hung): that run counts as an attempt.
///
/// Rows whose lease ran out come first (`rescued`, through the small `outbox_leased`
/// index), then the others by due time: a dead node's claims are taken over as soon as
/// their leases end, not behind a backlog that became due after them.
const CLAIM: &str = "WITH rescued AS (
         SELECT id FROM outbox
         WHERE lease_owner IS NOT NULL AND NOT parked AND available_at <= now()
         ORDER BY available_at LIMIT $2 FOR UPDATE SKIP LOCKED),
     due AS (
         SELECT id FROM outbox
         WHERE NOT parked AND available_at <= now() AND id NOT IN (SELECT id FROM rescued)
         ORDER BY available_at LIMIT ($2 - (SELECT COUNT(*) FROM rescued))
         FOR UPDATE SKIP LOCKED),
     picked AS (SELECT id FROM rescued UNION ALL SELECT id FROM due)
     UPDATE outbox o SET lease_owner = $1, lease_token = $4,
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

/// Lease up to `limit` due rows to `node` under `token`; two nodes never get the same row.
pub(super) async fn claim(
    pool: &PgPool,
    node: &str,
    token: LeaseToken,
    limit: u32,
    lease: Duration,
) -> Result<Vec<PgRow>, StoreError> {
    sqlx::query(CLAIM)
        .bind(node)
        .bind(i64::from(limit))
        .bind(lease.min(MAX_DELAY).as_secs_f64())
        .bind(token.0)
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
