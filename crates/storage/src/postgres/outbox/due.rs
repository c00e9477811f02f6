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
/// A claim stamps the lease (owner, token, expiry) and leaves `available_at` alone (as on
/// SQLite since its migration 0017): a row is due when `available_at` has passed and it
/// has no live lease. None of the columns it writes is in an index, so with the room the
/// table's fillfactor leaves on each page (migration 0018) the new version stays on its
/// page as a heap-only tuple: a claim adds no index entry, and the row keeps its place in
/// `outbox_due`. Claims walk `outbox_due` in due order and step over the rows in flight
/// (at most the events the nodes hold), so an expired lease is taken over at its own due
/// time, ahead of every row that became due after it.
pub(super) const CLAIM: &str = "WITH picked AS (
         SELECT id FROM outbox
         WHERE NOT parked AND available_at <= now()
           AND (lease_owner IS NULL OR lease_expires_at <= now())
         ORDER BY available_at LIMIT $2
         FOR UPDATE SKIP LOCKED)
     UPDATE outbox o SET lease_owner = $1, lease_token = $4,
         attempt = o.attempt + (CASE WHEN o.lease_owner IS NULL THEN 0 ELSE 1 END),
         lease_expires_at = now() + make_interval(secs => $3)
     FROM picked WHERE o.id = picked.id
     RETURNING o.id, o.app, o.kind, o.script, o.trigger_id, o.source, o.payload::text AS payload,
               o.attempt, o.max_attempts, o.scheduled_at, o.created_at,
               o.trace_context";
/// The database's own clock with the due time: claims compare against the database's
/// `now()`, so the wait is measured on that clock and moved onto this node's. The first
/// row without a lease, or a leased row before it whose lease ends sooner (only rows in
/// flight are leased, so that part reads few rows).
const NEXT_DUE: &str = "WITH free AS (
         SELECT available_at AS at FROM outbox WHERE NOT parked AND lease_owner IS NULL
         ORDER BY available_at LIMIT 1)
     SELECT LEAST((SELECT at FROM free),
             (SELECT MIN(GREATEST(available_at, lease_expires_at)) FROM outbox
              WHERE NOT parked AND lease_owner IS NOT NULL
                AND available_at <= COALESCE((SELECT at FROM free), 'infinity'))) AS due,
            now() AS db_now";

/// Lease up to `limit` due rows to `node` under `token`; two nodes never get the same row.
///
/// Planned on every call (an unnamed statement, not a cached plan): the table is never
/// analyzed where autovacuum is off, and a plan cached while it held a few rows (a server
/// starts its claims on an empty outbox) reads every row of a long backlog on each claim,
/// as a seq scan under a hash join (docs/benchmarks.md, "PostgreSQL backlog").
pub(super) async fn claim(
    pool: &PgPool,
    node: &str,
    token: LeaseToken,
    limit: u32,
    lease: Duration,
) -> Result<Vec<PgRow>, StoreError> {
    sqlx::query(CLAIM)
        .persistent(false)
        .bind(node)
        .bind(i64::from(limit))
        .bind(lease.min(MAX_DELAY).as_secs_f64())
        .bind(token.0)
        .fetch_all(pool)
        .await
        .map_err(db)
}

/// When the next row becomes due, on this node's clock. Planned on every call, as `claim`.
pub(super) async fn next_due_at(pool: &PgPool) -> Result<Option<DateTime<Utc>>, StoreError> {
    let before = Utc::now();
    let (due, db_now): (Option<DateTime<Utc>>, DateTime<Utc>) = sqlx::query_as(NEXT_DUE)
        .persistent(false)
        .fetch_one(pool)
        .await
        .map_err(db)?;
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
