//! One batch in one transaction: the apps locked, the held rows deleted, retried or
//! released in one statement each, then each event's effects (in a savepoint when it has
//! KV or blob writes), dead letters, new rows and records.
use std::borrow::Cow;
use std::collections::HashSet;

use chrono::{DateTime, Utc};
use shared::store::{EventCommit, EventOutcome};
use shared::{Event, InvocationRecord, StoreError};
use sqlx::Postgres;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use crate::error::db;
use crate::outbox::{
    Batch, EFFECTS_FAILED, Plan, apply_writes, failed_record, json, new_objects,
    retry_failed_effects_at,
};
use crate::repo::invocations::InvocationsSql;

const LOCK_APPS: &str = "SELECT name FROM apps WHERE name = ANY($1) ORDER BY name FOR KEY SHARE";
const DELETE_HELD: &str = "DELETE FROM outbox WHERE id = ANY($1) AND lease_owner = $2 RETURNING id";
const RETRY_HELD: &str = "UPDATE outbox o SET attempt = o.attempt + 1, available_at = t.at,
         last_error = t.error, lease_owner = NULL, lease_expires_at = NULL
     FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[]) AS t(id, at, error)
     WHERE o.id = t.id AND o.lease_owner = $4
     RETURNING o.id";
/// Puts back rows that did not run; their attempt counters do not move.
const RELEASE_HELD: &str = "UPDATE outbox o SET available_at = t.at, lease_owner = NULL,
         lease_expires_at = NULL
     FROM UNNEST($1::uuid[], $2::timestamptz[]) AS t(id, at)
     WHERE o.id = t.id AND o.lease_owner = $3
     RETURNING o.id";
/// Puts back a row whose run's effects could not commit, as its next attempt.
const REINSERT: &str = "INSERT INTO outbox (id, app, kind, script, trigger_id, source, payload,
         attempt, max_attempts, parked, available_at, scheduled_at, created_at, last_error,
         trace_context)
     VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, false, $10, $11, $12, $13, $14)";

/// Everything one batch commits, on the caller's transaction.
pub(super) async fn commit_batch(
    conn: &mut PgConnection,
    node: &str,
    batch: &[EventCommit],
    now: DateTime<Utc>,
    acc: &mut Batch,
) -> Result<(), StoreError> {
    let mut apps: Vec<&str> = batch.iter().map(|c| c.event.app.as_str()).collect();
    apps.sort_unstable();
    apps.dedup();
    sqlx::query(LOCK_APPS)
        .bind(&apps)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let held = hold(conn, node, batch).await?;

    let mut plan = Plan::default();
    let mut records: Vec<Cow<'_, InvocationRecord>> = Vec::new();
    for c in batch {
        if !held.contains(&c.event.id.0) {
            acc.skipped.push(c.event.id);
            if let EventOutcome::Done { effects } = &c.outcome {
                acc.orphans.extend(new_objects(effects));
            }
            continue;
        }
        let mut record = c.record.as_ref().map(Cow::Borrowed);
        match &c.outcome {
            EventOutcome::Done { effects } if effects.kv.is_empty() && effects.blobs.is_empty() => {
                let (app, emitted) = (&c.event.app, &effects.emitted);
                let trace = effects.trace.as_deref();
                plan.emits::<Postgres>(conn, app, emitted, trace, now)
                    .await?;
            }
            EventOutcome::Done { effects } => {
                let mark = plan.mark();
                let mut sp = sqlx::Connection::begin(&mut *conn).await.map_err(db)?;
                let applied = async {
                    let stale = apply_writes::<Postgres>(&mut sp, &c.event.app, effects).await?;
                    let (app, emitted) = (&c.event.app, &effects.emitted);
                    let trace = effects.trace.as_deref();
                    plan.emits::<Postgres>(&mut sp, app, emitted, trace, now)
                        .await?;
                    Ok::<_, StoreError>(stale)
                }
                .await;
                match applied {
                    Ok(stale) => {
                        sp.commit().await.map_err(db)?;
                        acc.stale.extend(stale);
                    }
                    Err(e) => {
                        sp.rollback().await.map_err(db)?;
                        tracing::warn!(event = %c.event.id, error = ?e, "an event's effects could not be committed");
                        plan.truncate(mark);
                        acc.orphans.extend(new_objects(effects));
                        record = failed_record(c.record.as_ref()).map(Cow::Owned);
                        match retry_failed_effects_at(&c.event, now) {
                            Some(at) => reinsert(conn, &c.event, at, EFFECTS_FAILED).await?,
                            None => {
                                let (event, error) = (&c.event, EFFECTS_FAILED);
                                plan.dead_letter::<Postgres>(conn, event, error, now)
                                    .await?;
                            }
                        }
                    }
                }
            }
            EventOutcome::Retry { .. } | EventOutcome::Release { .. } => {}
            EventOutcome::Dead { error } => {
                plan.dead_letter::<Postgres>(conn, &c.event, error, now)
                    .await?;
            }
        }
        records.extend(record);
    }
    acc.inserted += plan.insert::<Postgres>(conn, now).await?;
    acc.realtime.extend(plan.published());
    let records: Vec<&InvocationRecord> = records.iter().map(AsRef::as_ref).collect();
    Postgres::insert_records(conn, &records).await
}

/// Delete, retry or release the batch's rows this node still holds, one statement each;
/// returns the ids it held.
async fn hold(
    conn: &mut PgConnection,
    node: &str,
    batch: &[EventCommit],
) -> Result<HashSet<Uuid>, StoreError> {
    let mut finished = Vec::new();
    let mut retry = (Vec::new(), Vec::new(), Vec::new());
    let mut release = (Vec::new(), Vec::new());
    for c in batch {
        match &c.outcome {
            EventOutcome::Retry { at, error } => {
                retry.0.push(c.event.id.0);
                retry.1.push(*at);
                retry.2.push(error.as_str());
            }
            EventOutcome::Release { at } => {
                release.0.push(c.event.id.0);
                release.1.push(*at);
            }
            EventOutcome::Done { .. } | EventOutcome::Dead { .. } => finished.push(c.event.id.0),
        }
    }
    let mut held: HashSet<Uuid> = HashSet::with_capacity(batch.len());
    if !finished.is_empty() {
        let ids: Vec<Uuid> = sqlx::query_scalar(DELETE_HELD)
            .bind(finished)
            .bind(node)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        held.extend(ids);
    }
    if !release.0.is_empty() {
        let ids: Vec<Uuid> = sqlx::query_scalar(RELEASE_HELD)
            .bind(release.0)
            .bind(release.1)
            .bind(node)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        held.extend(ids);
    }
    if !retry.0.is_empty() {
        let ids: Vec<Uuid> = sqlx::query_scalar(RETRY_HELD)
            .bind(retry.0)
            .bind(retry.1)
            .bind(retry.2)
            .bind(node)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        held.extend(ids);
    }
    Ok(held)
}

/// Put back an event whose effects could not commit (its row is already deleted), as its
/// next attempt, due at `at`.
async fn reinsert(
    conn: &mut PgConnection,
    event: &Event,
    at: DateTime<Utc>,
    error: &str,
) -> Result<(), StoreError> {
    sqlx::query(REINSERT)
        .bind(event.id.0)
        .bind(event.app.as_str())
        .bind(event.kind.as_str())
        .bind(event.script.as_ref().map(|s| s.as_str()))
        .bind(event.trigger.map(|t| t.0))
        .bind(event.source.as_deref())
        .bind(json(&event.payload)?)
        .bind(i32::try_from(event.attempt.saturating_add(1)).unwrap_or(i32::MAX))
        .bind(i32::try_from(event.max_attempts).unwrap_or(i32::MAX))
        .bind(at)
        .bind(event.scheduled_at)
        .bind(event.created_at)
        .bind(error)
        .bind(event.trace.as_deref())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}
