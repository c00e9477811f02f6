//! One batch in one transaction: the apps locked and the finished rows deleted in one
//! statement, the retried and released rows in one statement each, then each event's
//! effects, dead letters, new rows and records. When the held events have no blob writes
//! and their KV writes merge (`repo::kv::merge`), everything after the hold is tried at
//! once with the merged KV writes applied last, in one statement (`postgres::kv`), so a
//! hot key's row is locked only until the commit, and once per batch. A savepoint guards
//! that try only when there are KV writes (without them, going event by event runs the
//! same statements, so a failure would fail it the same way); it is never released (the
//! commit takes it along). Otherwise, or when the try fails, each event with KV or blob
//! writes gets its own savepoint.
use std::borrow::Cow;
use std::collections::HashSet;

use chrono::{DateTime, Utc};
use shared::store::{EventCommit, EventOutcome};
use shared::{Event, InvocationRecord, StoreError};
use sqlx::Postgres;
use sqlx::postgres::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::db;
use crate::outbox::{
    Batch, EFFECTS_FAILED, Plan, apply_writes, failed_record, json, new_objects,
    retry_failed_effects_at,
};
use crate::postgres::invocations::bind_records;
use crate::postgres::kv::{MergedArrays, apply_merged};
use crate::repo::invocations::InvocationsSql;
use crate::repo::kv::merge;

const LOCK_APPS: &str = "SELECT name FROM apps WHERE name = ANY($1) ORDER BY name FOR KEY SHARE";
/// `LOCK_APPS` ($4) and the deletion of the finished rows in one statement: the apps'
/// count is a one-time filter of the delete, so they are locked before any row goes.
/// Each statement touches a row only under the token of the claim that ran it.
const LOCK_AND_DELETE_HELD: &str = "WITH locked AS (
         SELECT name FROM apps WHERE name = ANY($4) ORDER BY name FOR KEY SHARE)
     DELETE FROM outbox o USING UNNEST($1::uuid[], $2::uuid[]) AS t(id, token)
     WHERE (SELECT COUNT(*) FROM locked) >= 0
       AND o.id = t.id AND o.lease_token = t.token AND o.lease_owner = $3
     RETURNING o.id";
/// Taken by a try that can fall back to event by event; rolled back to when it fails.
const SAVEPOINT: &str = "SAVEPOINT merged";
const ROLLBACK_TO_SAVEPOINT: &str = "ROLLBACK TO SAVEPOINT merged";
const RETRY_HELD: &str = "UPDATE outbox o SET attempt = o.attempt + 1, available_at = t.at,
         last_error = t.error, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
     FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::uuid[]) AS t(id, at, error, token)
     WHERE o.id = t.id AND o.lease_token = t.token AND o.lease_owner = $5
     RETURNING o.id";
/// Puts back rows that did not run; their attempt counters do not move.
const RELEASE_HELD: &str = "UPDATE outbox o SET available_at = t.at, lease_owner = NULL,
         lease_token = NULL, lease_expires_at = NULL
     FROM UNNEST($1::uuid[], $2::timestamptz[], $3::uuid[]) AS t(id, at, token)
     WHERE o.id = t.id AND o.lease_token = t.token AND o.lease_owner = $4
     RETURNING o.id";
/// Puts back a row whose run's effects could not commit, as its next attempt.
const REINSERT: &str = "INSERT INTO outbox (id, app, kind, script, trigger_id, source, payload,
         attempt, max_attempts, parked, available_at, scheduled_at, created_at, last_error,
         trace_context)
     VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, false, $10, $11, $12, $13, $14)";

/// A whole batch in ONE statement, in a transaction of its own (no BEGIN, SAVEPOINT or
/// COMMIT round trips): the apps locked, the rows deleted under their claims, then, only
/// when every row was held, the merged KV writes (`postgres::kv`'s `APPLY_MERGED`, gated on
/// the delete) and the records. The final row says whether it went to plan; when a row was
/// not held or an increment was not applied it casts its explanation to a number, which
/// fails the statement, and so undoes all of it: the caller then commits the batch in a
/// transaction, as before. The gates on `all_held` also make the writes wait for the
/// delete, which waits for the apps' locks, so the locking order is the transaction's.
///
/// ($1 ids, $2 tokens, $3 node, $4 apps, $5 rows, $6-$11 `MergedArrays`, $12 the writes'
/// time, $13 increments, $14-$28 the records' columns, as `INSERT_BATCH`.)
const COMMIT_AT_ONCE: &str = r#"WITH locked AS (
         SELECT name FROM apps WHERE name = ANY($4) ORDER BY name FOR KEY SHARE),
     held AS (
         DELETE FROM outbox o USING UNNEST($1::uuid[], $2::uuid[]) AS t(id, token)
         WHERE (SELECT COUNT(*) FROM locked) >= 0
           AND o.id = t.id AND o.lease_token = t.token AND o.lease_owner = $3
         RETURNING o.id),
     all_held AS (SELECT COUNT(*) = $5 AS ok, COUNT(*) AS n FROM held),
     w (app, key, op, value, expires_at, by) AS (
         SELECT * FROM UNNEST($6::text[], $7::text[], $8::text[], $9::text[],
                              $10::timestamptz[], $11::int8[])
         WHERE (SELECT ok FROM all_held)),
     purged AS (
         DELETE FROM kv WHERE kv.app = ANY($6) AND kv.expires_at IS NOT NULL
             AND kv.expires_at <= $12
             AND NOT EXISTS (SELECT 1 FROM w WHERE w.app = kv.app AND w.key = kv.key)
             AND (SELECT ok FROM all_held)),
     deleted AS (
         DELETE FROM kv USING w WHERE w.op = 'd' AND kv.app = w.app AND kv.key = w.key),
     stored AS (
         INSERT INTO kv (app, key, value, updated_at, expires_at)
         SELECT w.app, w.key, w.value::jsonb, $12, w.expires_at FROM w WHERE w.op = 's'
         ON CONFLICT (app, key) DO UPDATE SET
             value = excluded.value, updated_at = excluded.updated_at,
             expires_at = excluded.expires_at),
     incremented AS (
         INSERT INTO kv (app, key, value, updated_at, expires_at)
         SELECT w.app, w.key, to_jsonb(w.by), $12, NULL FROM w WHERE w.op = 'i'
         ON CONFLICT (app, key) DO UPDATE SET
             value = CASE WHEN kv.expires_at IS NOT NULL AND kv.expires_at <= $12
                          THEN excluded.value
                          ELSE to_jsonb((kv.value #>> '{}')::int8
                                        + (excluded.value #>> '{}')::int8) END,
             updated_at = $12,
             expires_at = CASE WHEN kv.expires_at IS NOT NULL AND kv.expires_at <= $12
                               THEN NULL ELSE kv.expires_at END
         WHERE (kv.expires_at IS NOT NULL AND kv.expires_at <= $12)
            OR CASE WHEN jsonb_typeof(kv.value) <> 'number' THEN false
                    WHEN (kv.value #>> '{}') !~ '^-?[0-9]+$' THEN false
                    ELSE (kv.value #>> '{}')::numeric + (excluded.value #>> '{}')::numeric
                         BETWEEN -9223372036854775808 AND 9223372036854775807 END
         RETURNING 1),
     recorded AS (
         INSERT INTO invocations
             (id, app, script, version, "trigger", status, started_at, duration_ms,
              http_status, summary, logs, error, request_id, attempt, trace_id)
         SELECT t.id, t.app, t.script, t.version, t.trig, t.status, t.started_at,
                t.duration_ms, t.http_status, t.summary, t.logs::jsonb, t.error,
                t.request_id, t.attempt, t.trace_id
         FROM UNNEST($14::uuid[], $15::text[], $16::text[], $17::int8[], $18::text[],
                     $19::text[], $20::timestamptz[], $21::int8[], $22::int4[], $23::text[],
                     $24::text[], $25::text[], $26::text[], $27::int4[], $28::text[])
              AS t(id, app, script, version, trig, status, started_at, duration_ms,
                   http_status, summary, logs, error, request_id, attempt, trace_id)
         WHERE EXISTS (SELECT 1 FROM apps a WHERE a.name = t.app)
           AND (SELECT ok FROM all_held)
         ON CONFLICT (id) DO NOTHING)
 SELECT CASE WHEN (SELECT ok FROM all_held) AND (SELECT COUNT(*) FROM incremented) = $13
             THEN 0
             ELSE CAST('not committed at once: ' || (SELECT n FROM all_held) || ' of '
                       || $5 || ' rows held, ' || (SELECT COUNT(*) FROM incremented)
                       || ' of ' || $13 || ' increments' AS int8) END AS done"#;

/// Commits `batch` with `COMMIT_AT_ONCE` when every event finished (`Done`) under a claim
/// with no blob writes and no emitted events, and its KV writes merge (`repo::kv::merge`).
/// `false` when it does not qualify or the statement failed (nothing of it stays): the
/// caller commits the batch in a transaction. A statement whose answer was lost (its
/// connection broke) may have committed: the transaction then holds none of its rows, and
/// reports them as not held, so nothing is done twice.
pub(super) async fn commit_at_once(pool: &PgPool, node: &str, batch: &[EventCommit]) -> bool {
    let mut ids = Vec::with_capacity(batch.len());
    let mut tokens = Vec::with_capacity(batch.len());
    let mut writes = Vec::with_capacity(batch.len());
    for c in batch {
        let (Some(token), EventOutcome::Done { effects }) = (c.event.lease, &c.outcome) else {
            return false;
        };
        if !effects.blobs.is_empty() || !effects.emitted.is_empty() {
            return false;
        }
        ids.push(c.event.id.0);
        tokens.push(token.0);
        writes.push((&c.event.app, &effects.kv[..]));
    }
    let Some(merged) = merge(writes) else {
        return false;
    };
    let result = async {
        let arrays = MergedArrays::new(&merged)?;
        let (at, increments) = (arrays.at, arrays.increments);
        let records: Vec<&InvocationRecord> =
            batch.iter().filter_map(|c| c.record.as_ref()).collect();
        let mut apps: Vec<&str> = batch.iter().map(|c| c.event.app.as_str()).collect();
        apps.sort_unstable();
        apps.dedup();
        let rows = i64::try_from(batch.len()).unwrap_or(i64::MAX);
        let query = sqlx::query(COMMIT_AT_ONCE)
            .bind(ids)
            .bind(tokens)
            .bind(node)
            .bind(apps)
            .bind(rows);
        let query = arrays.bind(query).bind(at).bind(increments);
        bind_records(query, &records)?
            .execute(pool)
            .await
            .map_err(db)
    }
    .await;
    match result {
        Ok(_) => true,
        Err(error) => {
            tracing::debug!(error = ?error, "a batch was not committed at once; committing it in a transaction");
            false
        }
    }
}

/// Everything one batch commits, on the caller's transaction.
pub(super) async fn commit_batch(
    conn: &mut PgConnection,
    node: &str,
    batch: &[EventCommit],
    now: DateTime<Utc>,
    acc: &mut Batch,
) -> Result<(), StoreError> {
    let held = hold(conn, node, batch).await?;
    if let Some(merged) = commit_merged(conn, batch, &held, now).await? {
        acc.skipped.extend(merged.skipped);
        acc.orphans.extend(merged.orphans);
        acc.inserted += merged.inserted;
        acc.realtime.extend(merged.realtime);
        return Ok(());
    }
    per_event(conn, batch, &held, now, acc).await
}

/// Everything after the hold at once, the held events' KV writes merged and applied last.
/// `None`, with nothing done, when a held event has blob writes, the writes cannot be
/// merged, or anything fails while there are KV writes: the caller then goes event by
/// event. Without KV writes a failure is the batch's error, as event by event.
async fn commit_merged(
    conn: &mut PgConnection,
    batch: &[EventCommit],
    held: &HashSet<Uuid>,
    now: DateTime<Utc>,
) -> Result<Option<Batch>, StoreError> {
    fn done<'a>(c: &'a EventCommit, held: &HashSet<Uuid>) -> Option<&'a shared::Effects> {
        match &c.outcome {
            EventOutcome::Done { effects } if held.contains(&c.event.id.0) => Some(effects),
            _ => None,
        }
    }
    if batch
        .iter()
        .filter_map(|c| done(c, held))
        .any(|e| !e.blobs.is_empty())
    {
        return Ok(None);
    }
    let Some(merged) = merge(
        batch
            .iter()
            .filter_map(|c| Some((&c.event.app, &done(c, held)?.kv[..]))),
    ) else {
        return Ok(None);
    };
    let mut acc = Batch::default();
    let savepoint = !merged.is_empty();
    if savepoint {
        sqlx::query(SAVEPOINT)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    let sp = &mut *conn;
    let result = async {
        let mut plan = Plan::default();
        let mut records: Vec<&InvocationRecord> = Vec::new();
        for c in batch {
            if !held.contains(&c.event.id.0) {
                acc.skipped.push(c.event.id);
                if let EventOutcome::Done { effects } = &c.outcome {
                    acc.orphans.extend(new_objects(effects));
                }
                continue;
            }
            match &c.outcome {
                EventOutcome::Done { effects } => {
                    let (app, emitted) = (&c.event.app, &effects.emitted);
                    let trace = effects.trace.as_deref();
                    plan.emits::<Postgres>(sp, app, emitted, trace, now).await?;
                }
                EventOutcome::Retry { .. } | EventOutcome::Release { .. } => {}
                EventOutcome::Dead { error } => {
                    plan.dead_letter::<Postgres>(sp, &c.event, error, now)
                        .await?;
                }
            }
            records.extend(c.record.as_ref());
        }
        acc.inserted += plan.insert::<Postgres>(sp, now).await?;
        acc.realtime.extend(plan.published());
        Postgres::insert_records(sp, &records).await?;
        apply_merged(sp, &merged).await
    }
    .await;
    match result {
        Ok(()) => Ok(Some(acc)),
        Err(error) if savepoint => {
            sqlx::query(ROLLBACK_TO_SAVEPOINT)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            tracing::debug!(error = ?error, "a merged batch rolled back; committing it event by event");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Everything after the hold, each event with KV or blob writes in its own savepoint.
async fn per_event(
    conn: &mut PgConnection,
    batch: &[EventCommit],
    held: &HashSet<Uuid>,
    now: DateTime<Utc>,
    acc: &mut Batch,
) -> Result<(), StoreError> {
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

/// Lock the batch's apps, then delete, retry or release the batch's rows this node still
/// holds under each event's claim, one statement each (the lock goes with the delete);
/// returns the ids it held. An event without a claim's token holds nothing.
async fn hold(
    conn: &mut PgConnection,
    node: &str,
    batch: &[EventCommit],
) -> Result<HashSet<Uuid>, StoreError> {
    let mut finished = (Vec::new(), Vec::new());
    let mut retry = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut release = (Vec::new(), Vec::new(), Vec::new());
    for c in batch {
        let Some(token) = c.event.lease else {
            continue;
        };
        match &c.outcome {
            EventOutcome::Retry { at, error } => {
                retry.0.push(c.event.id.0);
                retry.1.push(*at);
                retry.2.push(error.as_str());
                retry.3.push(token.0);
            }
            EventOutcome::Release { at } => {
                release.0.push(c.event.id.0);
                release.1.push(*at);
                release.2.push(token.0);
            }
            EventOutcome::Done { .. } | EventOutcome::Dead { .. } => {
                finished.0.push(c.event.id.0);
                finished.1.push(token.0);
            }
        }
    }
    let mut apps: Vec<&str> = batch.iter().map(|c| c.event.app.as_str()).collect();
    apps.sort_unstable();
    apps.dedup();
    let mut held: HashSet<Uuid> = HashSet::with_capacity(batch.len());
    if finished.0.is_empty() {
        sqlx::query(LOCK_APPS)
            .bind(&apps)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    } else {
        let ids: Vec<Uuid> = sqlx::query_scalar(LOCK_AND_DELETE_HELD)
            .bind(finished.0)
            .bind(finished.1)
            .bind(node)
            .bind(&apps)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        held.extend(ids);
    }
    if !release.0.is_empty() {
        let ids: Vec<Uuid> = sqlx::query_scalar(RELEASE_HELD)
            .bind(release.0)
            .bind(release.1)
            .bind(release.2)
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
            .bind(retry.3)
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
