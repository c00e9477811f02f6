//! The outbox on SQLite: its statements, and a batch committed one event at a time.
//!
//! SQLite has one writer, so a claim is a single `UPDATE ... RETURNING` under the write
//! lock, and a batch is one write transaction. A batch without blob writes is first tried
//! whole inside one savepoint: its done events' rows deleted in one statement, its KV
//! writes merged (`repo::kv::merge`) and applied after every event's part, the rows its
//! events emitted and its records inserted in multi-row statements. If its writes cannot be
//! merged or fail, or a done event's lease was lost, the savepoint rolls back and the batch
//! is committed one event at a time, each event with KV or blob writes inside its own
//! savepoint: one event whose writes cannot be applied is rolled back alone and committed
//! again as a failed attempt, and an event whose lease was lost is skipped alone.
use std::time::Duration;

use chrono::{DateTime, Utc};
use shared::store::{EventCommit, EventOutcome};
use shared::{LeaseToken, StoreError};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{Pool, Sqlite};

use super::{MultiRow, begin_write, chunked, parse_ts, ts, values};
use crate::error::db;
use crate::outbox::{
    Batch, Letter, NewRow, OutboxSql, Plan, after, apply_writes, effects_failed, failed_record,
    json, new_objects,
};
use crate::repo::invocations::InvocationsSql;
use crate::repo::kv::{apply_merged, merge};
use crate::sql::sql;

/// A row is due when `available_at` has passed and it has no live lease. A claim walks
/// `outbox_due` in due order, steps over the rows under a live lease (the events in flight)
/// and stamps its lease without touching `available_at`, so no index entry moves; an expired
/// lease is taken over at the row's own due time, before every row that became due after
/// it. A row still leased when claimed again had a run that never finished (its process
/// stopped or hung): that run counts as an attempt.
///
/// The limit is `+?4`, an expression, not a bare `?4`: SQLite plans a bare bound LIMIT with
/// its value, so it would prepare the statement again every time the limit is bound.
const CLAIM: &str = "UPDATE outbox SET
         attempt = attempt + (CASE WHEN lease_owner IS NULL THEN 0 ELSE 1 END),
         lease_owner = ?1, lease_token = ?5, lease_expires_at = ?2
     WHERE rowid IN (
         SELECT rowid FROM outbox
         WHERE parked = 0 AND available_at <= ?3
           AND (lease_owner IS NULL OR lease_expires_at <= ?3)
         ORDER BY available_at LIMIT +?4)
     RETURNING id, app, kind, script, trigger_id, source, payload, attempt, max_attempts,
               scheduled_at, created_at,
               trace_context";
/// Retrying, releasing and deleting touch a row only under the token of the claim that ran it.
const RETRY_HELD: &str = "UPDATE outbox SET attempt = attempt + 1, available_at = ?1,
         last_error = ?2, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
     WHERE id = ?3 AND lease_owner = ?4 AND lease_token = ?5";
/// Puts back a row that did not run; its attempt counter does not move.
const RELEASE_HELD: &str = "UPDATE outbox SET available_at = ?1, lease_owner = NULL,
         lease_token = NULL, lease_expires_at = NULL
     WHERE id = ?2 AND lease_owner = ?3 AND lease_token = ?4";
/// n rows, at attempt 1, in one statement (`super::chunked`).
static INSERT_ROWS: MultiRow = MultiRow::new(|rows| {
    format!(
        "INSERT INTO outbox (id, app, kind, script, trigger_id, source, payload, attempt,
             max_attempts, parked, available_at, scheduled_at, created_at, trace_context)
         VALUES {}",
        values("(?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)", rows)
    )
});
/// (node, {"id": "token", ..}): the finished rows of a merged batch, each held by `node`
/// under the token of the claim that ran it, in one statement.
const DELETE_FINISHED: &str = "DELETE FROM outbox
     WHERE lease_owner = ?1 AND (id, lease_token) IN (SELECT key, value FROM json_each(?2))";
const INSERT_DEAD_LETTER: &str = "INSERT INTO dead_letters
         (id, app, kind, script, trigger_id, source, payload, attempts, error, event_id,
          created_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
/// The first row without a lease, or a leased row's lease end if sooner. Only leased rows
/// due before that first free row can be sooner (a lease ends after its row was due), so
/// both parts walk `outbox_due` no further than the rows in flight.
const NEXT_DUE: &str = "WITH free AS (
         SELECT available_at AS at FROM outbox WHERE parked = 0 AND lease_owner IS NULL
         ORDER BY available_at LIMIT 1)
     SELECT MIN(due) FROM (
         SELECT at AS due FROM free
         UNION ALL
         SELECT MAX(available_at, COALESCE(lease_expires_at, available_at)) FROM outbox
         WHERE parked = 0 AND lease_owner IS NOT NULL
           AND available_at <= COALESCE((SELECT at FROM free), '9999-12-31'))";

impl OutboxSql for Sqlite {
    const LOCK_APP: &'static str = "SELECT 1 FROM apps WHERE name = ?";
    const LOCK_APP_IS: &'static str = "SELECT 1 FROM apps WHERE name = ?1 AND created_at = ?2";
    const TOPIC_SUBSCRIBERS: &'static str = "SELECT id, script, max_attempts FROM triggers
     WHERE app = ?1 AND kind = 'topic' AND json_extract(config, '$.topic') = ?2
     ORDER BY created_at, id";
    const QUEUE_CONSUMER: &'static str =
        "SELECT id, script, max_attempts FROM triggers WHERE app = ?1 AND unique_key = ?2";
    const DEAD_LETTER_TRIGGERS: &'static str = "SELECT id, script, max_attempts FROM triggers
     WHERE app = ?1 AND kind = 'dead_letter' ORDER BY created_at, id";
    const INSERT_KEY: &'static str = "INSERT INTO idempotency_keys (app, queue, key, created_at)
     VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING";
    const DELETE_HELD: &'static str =
        "DELETE FROM outbox WHERE id = ? AND lease_owner = ? AND lease_token = ?";
    const PENDING: &'static str = "SELECT COUNT(*) AS n FROM outbox WHERE app = ?";
    const TOPIC_EXPOSED: &'static str =
        "SELECT 1 FROM realtime_topics WHERE app = ?1 AND topic = ?2";
    const TAKE_REALTIME_IDS: &'static str =
        "INSERT INTO realtime_apps (app, last_id) VALUES (?1, ?2)
     ON CONFLICT (app) DO UPDATE SET last_id = last_id + excluded.last_id
     RETURNING last_id";
    const INSERT_REALTIME: &'static str =
        "INSERT INTO realtime_events (app, id, topic, payload, created_at)
     VALUES (?1, ?2, ?3, ?4, ?5)";

    async fn claim(
        pool: &Pool<Sqlite>,
        node: &str,
        token: LeaseToken,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<SqliteRow>, StoreError> {
        let now = crate::now();
        let mut tx = begin_write(pool).await?;
        let rows = sqlx::query(CLAIM)
            .bind(node)
            .bind(ts(after(now, lease)))
            .bind(ts(now))
            .bind(i64::from(limit))
            .bind(token.0.to_string())
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(rows)
    }

    async fn commit_batch<'a>(
        conn: &'a mut SqliteConnection,
        node: &'a str,
        batch: &'a [EventCommit],
        now: DateTime<Utc>,
        acc: &'a mut Batch,
    ) -> Result<(), StoreError> {
        if let Some(merged) = commit_merged(conn, node, batch, now).await? {
            acc.skipped.extend(merged.skipped);
            acc.stale.extend(merged.stale);
            acc.orphans.extend(merged.orphans);
            acc.inserted += merged.inserted;
            acc.realtime.extend(merged.realtime);
            return Ok(());
        }
        let mut commit = Commit {
            node,
            now,
            plan: Plan::default(),
            acc,
        };
        for c in batch {
            commit.one(conn, c).await?;
        }
        Ok(())
    }

    async fn insert(
        conn: &mut SqliteConnection,
        rows: &[NewRow],
        letters: &[Letter],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        for Letter { letter, trigger } in letters {
            sqlx::query(INSERT_DEAD_LETTER)
                .bind(letter.id.to_string())
                .bind(letter.app.as_str())
                .bind(letter.kind.as_str())
                .bind(letter.script.as_ref().map(|s| s.as_str()))
                .bind(trigger.map(|t| t.to_string()))
                .bind(letter.source.as_deref())
                .bind(json(&letter.payload)?)
                .bind(i64::from(letter.attempts))
                .bind(letter.error.as_str())
                .bind(letter.event_id.to_string())
                .bind(ts(now))
                .execute(&mut *conn)
                .await
                .map_err(db)?;
        }
        let created_at = ts(now);
        for (shape, chunk) in chunked(rows) {
            let mut query = sqlx::query(INSERT_ROWS.sql(shape));
            for row in chunk {
                query = query
                    .bind(row.id.to_string())
                    .bind(row.app.as_str())
                    .bind(row.kind.as_str())
                    .bind(row.script.as_deref())
                    .bind(row.trigger.map(|t| t.to_string()))
                    .bind(row.source.as_deref())
                    .bind(row.payload.as_str())
                    .bind(i64::from(row.max_attempts))
                    .bind(row.parked)
                    .bind(ts(row.available_at))
                    .bind(ts(row.scheduled_at))
                    .bind(created_at.as_str())
                    .bind(row.trace.as_deref());
            }
            query.execute(&mut *conn).await.map_err(db)?;
        }
        Ok(rows.len() as u64)
    }

    async fn next_due_at(pool: &Pool<Sqlite>) -> Result<Option<DateTime<Utc>>, StoreError> {
        let (raw,): (Option<String>,) =
            sqlx::query_as(NEXT_DUE).fetch_one(pool).await.map_err(db)?;
        raw.as_deref().map(parse_ts).transpose()
    }
}

/// The whole batch inside one savepoint: the done events' rows deleted in one statement,
/// every event's part without its KV writes, the rows its events emitted and the records
/// in multi-row statements, then the done events' KV writes merged. `None`, with nothing
/// done, when the batch has blob writes, its KV writes cannot be merged, a done event's
/// row is no longer held (a lease was lost: the event-by-event commit skips just that
/// event), or anything fails: the caller then commits it one event at a time (which meets
/// the same error again if it was not about one event's writes or lease).
async fn commit_merged(
    conn: &mut SqliteConnection,
    node: &str,
    batch: &[EventCommit],
    now: DateTime<Utc>,
) -> Result<Option<Batch>, StoreError> {
    fn done(c: &EventCommit) -> Option<&shared::Effects> {
        match &c.outcome {
            EventOutcome::Done { effects } => Some(effects),
            _ => None,
        }
    }
    if batch.iter().filter_map(done).any(|e| !e.blobs.is_empty())
        || merge(
            batch
                .iter()
                .filter_map(|c| Some((&c.event.app, &done(c)?.kv[..]))),
        )
        .is_none()
    {
        return Ok(None);
    }
    let mut acc = Batch::default();
    let mut sp = sqlx::Connection::begin(&mut *conn).await.map_err(db)?;
    let result = async {
        delete_finished(&mut sp, node, batch).await?;
        let mut commit = Commit {
            node,
            now,
            plan: Plan::default(),
            acc: &mut acc,
        };
        let mut writes = Vec::new();
        let mut records = Vec::new();
        for c in batch {
            match commit.part(&mut sp, c, Writes::Deferred).await? {
                Part::Held { .. } => {
                    records.extend(c.record.as_ref());
                    if let Some(effects) = done(c) {
                        writes.push((&c.event.app, &effects.kv[..]));
                    }
                }
                Part::Lost => commit.acc.skipped.push(c.event.id),
            }
        }
        commit.acc.inserted += commit.plan.insert::<Sqlite>(&mut sp, now).await?;
        commit.acc.realtime.extend(commit.plan.published());
        Sqlite::insert_records(&mut sp, &records).await?;
        let merged = merge(writes).ok_or(StoreError::Conflict("kv merge"))?;
        apply_merged::<Sqlite>(&mut sp, &merged).await
    }
    .await;
    match result {
        Ok(()) => {
            sp.commit().await.map_err(db)?;
            Ok(Some(acc))
        }
        Err(error) => {
            sp.rollback().await.map_err(db)?;
            tracing::debug!(error = ?error, "a merged batch rolled back; committing it event by event");
            Ok(None)
        }
    }
}

/// Delete the rows of the batch's done events in one statement, each only while `node`
/// holds it under its event's lease; `Conflict` unless every one was still held (then the
/// caller rolls back and commits the batch event by event, which skips the lost ones).
/// Events without a lease are left to their parts (which find them lost).
async fn delete_finished(
    conn: &mut SqliteConnection,
    node: &str,
    batch: &[EventCommit],
) -> Result<(), StoreError> {
    let finished: Vec<_> = batch
        .iter()
        .filter(|c| matches!(c.outcome, EventOutcome::Done { .. }))
        .filter_map(|c| Some((c.event.id.to_string(), c.event.lease?.0.to_string())))
        .collect();
    if finished.is_empty() {
        return Ok(());
    }
    // An event twice in the batch would be one key: fewer rows deleted than expected.
    let expected = finished.len();
    let held: serde_json::Map<String, serde_json::Value> = finished
        .into_iter()
        .map(|(id, token)| (id, token.into()))
        .collect();
    let deleted = sqlx::query(DELETE_FINISHED)
        .bind(node)
        .bind(json(&held)?)
        .execute(&mut *conn)
        .await
        .map_err(db)?
        .rows_affected();
    if usize::try_from(deleted).ok() == Some(expected) {
        Ok(())
    } else {
        Err(StoreError::Conflict("a lease was lost"))
    }
}

/// Whether a part applies all of its event, or leaves some of it to its merged batch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writes {
    Apply,
    /// The batch has deleted the done events' rows (`delete_finished`: all held) and
    /// inserts the emitted rows, applies the KV writes and inserts the records itself.
    Deferred,
}

/// A batch being committed, one event at a time.
struct Commit<'a> {
    node: &'a str,
    now: DateTime<Utc>,
    /// Emptied at the end of every event's part; keeps the batch's trigger lookups.
    plan: Plan,
    acc: &'a mut Batch,
}

/// What one event's part of a commit did.
enum Part {
    Held {
        stale: Vec<String>,
        inserted: u64,
    },
    /// The row is gone or leased to another node (or its app was deleted): nothing done.
    Lost,
}

impl Commit<'_> {
    async fn one(
        &mut self,
        conn: &mut SqliteConnection,
        c: &EventCommit,
    ) -> Result<(), StoreError> {
        // Only KV and blob writes can fail for one event alone; everything else is plain
        // inserts.
        let fallible = matches!(&c.outcome, EventOutcome::Done { effects }
            if !effects.kv.is_empty() || !effects.blobs.is_empty());
        let attempt = if fallible {
            self.savepoint_part(conn, c).await
        } else {
            self.part(conn, c, Writes::Apply).await
        };
        let (result, applied) = match attempt {
            Err(e) if fallible => {
                tracing::warn!(event = %c.event.id, error = ?e, "an event's effects could not be committed");
                let failed = EventCommit {
                    event: c.event.clone(),
                    outcome: effects_failed(&c.event, self.now),
                    record: failed_record(c.record.as_ref()),
                };
                (self.savepoint_part(conn, &failed).await?, false)
            }
            other => (other?, true),
        };
        let held = match result {
            Part::Held { stale, inserted } => {
                self.acc.stale.extend(stale);
                self.acc.inserted += inserted;
                true
            }
            Part::Lost => {
                self.acc.skipped.push(c.event.id);
                false
            }
        };
        if !(held && applied)
            && let EventOutcome::Done { effects } = &c.outcome
        {
            self.acc.orphans.extend(new_objects(effects));
        }
        Ok(())
    }

    /// Run one event's part inside a savepoint of `conn`'s transaction.
    async fn savepoint_part(
        &mut self,
        conn: &mut SqliteConnection,
        c: &EventCommit,
    ) -> Result<Part, StoreError> {
        let mark = self.plan.mark();
        let mut sp = sqlx::Connection::begin(&mut *conn).await.map_err(db)?;
        match self.part(&mut sp, c, Writes::Apply).await {
            Ok(Part::Held { stale, inserted }) => {
                sp.commit().await.map_err(db)?;
                Ok(Part::Held { stale, inserted })
            }
            Ok(Part::Lost) => {
                sp.rollback().await.map_err(db)?;
                Ok(Part::Lost)
            }
            Err(e) => {
                sp.rollback().await.map_err(db)?;
                self.plan.truncate(mark);
                Err(e)
            }
        }
    }

    /// One event's part: its outcome, its effects or dead letter, its record (with
    /// `Writes::Deferred`: not what its batch does, see there).
    async fn part(
        &mut self,
        conn: &mut SqliteConnection,
        c: &EventCommit,
        writes: Writes,
    ) -> Result<Part, StoreError> {
        let (id, node, now) = (c.event.id.0, self.node, self.now);
        // Not from a claim: it holds no row.
        let Some(token) = c.event.lease else {
            return Ok(Part::Lost);
        };
        let mut stale = Vec::new();
        let held = match &c.outcome {
            EventOutcome::Done { effects } => {
                let held = writes == Writes::Deferred || delete_held(conn, id, node, token).await?;
                if held && !effects.is_empty() {
                    if writes == Writes::Apply {
                        stale = apply_writes::<Sqlite>(conn, &c.event.app, effects).await?;
                    }
                    let (app, emitted) = (&c.event.app, &effects.emitted);
                    let trace = effects.trace.as_deref();
                    self.plan
                        .emits::<Sqlite>(conn, app, emitted, trace, now)
                        .await?;
                }
                held
            }
            EventOutcome::Retry { at, error } => {
                let done = sqlx::query(RETRY_HELD)
                    .bind(ts(*at))
                    .bind(error.as_str())
                    .bind(id.to_string())
                    .bind(node)
                    .bind(token.0.to_string())
                    .execute(&mut *conn)
                    .await
                    .map_err(db)?;
                done.rows_affected() > 0
            }
            EventOutcome::Release { at } => {
                let done = sqlx::query(RELEASE_HELD)
                    .bind(ts(*at))
                    .bind(id.to_string())
                    .bind(node)
                    .bind(token.0.to_string())
                    .execute(&mut *conn)
                    .await
                    .map_err(db)?;
                done.rows_affected() > 0
            }
            EventOutcome::Dead { error } => {
                let held = delete_held(conn, id, node, token).await?;
                if held {
                    self.plan
                        .dead_letter::<Sqlite>(conn, &c.event, error, now)
                        .await?;
                }
                held
            }
        };
        if !held {
            return Ok(Part::Lost);
        }
        if writes == Writes::Deferred {
            return Ok(Part::Held { stale, inserted: 0 });
        }
        let inserted = self.plan.insert::<Sqlite>(conn, now).await?;
        if let Some(record) = c.record.as_ref() {
            Sqlite::insert_records(conn, &[record]).await?;
        }
        // A hint only: if the savepoint rolls back, subscribers find nothing new.
        self.acc.realtime.extend(self.plan.published());
        Ok(Part::Held { stale, inserted })
    }
}

async fn delete_held(
    conn: &mut SqliteConnection,
    id: uuid::Uuid,
    node: &str,
    token: LeaseToken,
) -> Result<bool, StoreError> {
    let deleted = sql::<Sqlite>(Sqlite::DELETE_HELD)
        .bind(id)
        .bind(node)
        .bind(token.0)
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(deleted == 1)
}
