//! The outbox on SQLite: its statements, and a batch committed one event at a time.
//!
//! SQLite has one writer, so a claim is a single `UPDATE ... RETURNING` under the write
//! lock, and a batch is one write transaction in which each event with KV or blob writes
//! runs inside its own savepoint: one event whose writes cannot be applied is rolled back
//! alone and committed again as a failed attempt.
use std::time::Duration;

use chrono::{DateTime, Utc};
use shared::StoreError;
use shared::store::{EventCommit, EventOutcome};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{Pool, Sqlite};

use super::{begin_write, parse_ts, ts};
use crate::error::db;
use crate::outbox::{
    Batch, Letter, NewRow, OutboxSql, Plan, after, apply_writes, effects_failed, failed_record,
    json, new_objects,
};
use crate::repo::invocations::InvocationsSql;
use crate::sql::sql;

/// A row still leased when claimed again had a run that never finished (its process
/// stopped or hung): that run counts as an attempt.
const CLAIM: &str = "UPDATE outbox SET
         attempt = attempt + (CASE WHEN lease_owner IS NULL THEN 0 ELSE 1 END),
         lease_owner = ?1, lease_expires_at = ?2, available_at = ?2
     WHERE id IN (SELECT id FROM outbox WHERE parked = 0 AND available_at <= ?3
                  ORDER BY available_at LIMIT ?4)
     RETURNING id, app, kind, script, trigger_id, source, payload, attempt, max_attempts,
               scheduled_at, created_at,
               trace_context";
const RETRY_HELD: &str = "UPDATE outbox SET attempt = attempt + 1, available_at = ?1,
         last_error = ?2, lease_owner = NULL, lease_expires_at = NULL
     WHERE id = ?3 AND lease_owner = ?4";
/// Puts back a row that did not run; its attempt counter does not move.
const RELEASE_HELD: &str = "UPDATE outbox SET available_at = ?1, lease_owner = NULL,
         lease_expires_at = NULL
     WHERE id = ?2 AND lease_owner = ?3";
const INSERT_ROW: &str = "INSERT INTO outbox (id, app, kind, script, trigger_id, source, payload,
         attempt, max_attempts, parked, available_at, scheduled_at, created_at, trace_context)
     VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)";
const INSERT_DEAD_LETTER: &str = "INSERT INTO dead_letters
         (id, app, kind, script, trigger_id, source, payload, attempts, error, event_id,
          created_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const NEXT_DUE: &str = "SELECT MIN(available_at) FROM outbox WHERE parked = 0";

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
    const DELETE_HELD: &'static str = "DELETE FROM outbox WHERE id = ? AND lease_owner = ?";
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
        for row in rows {
            sqlx::query(INSERT_ROW)
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
                .bind(ts(now))
                .bind(row.trace.as_deref())
                .execute(&mut *conn)
                .await
                .map_err(db)?;
        }
        Ok(rows.len() as u64)
    }

    async fn next_due_at(pool: &Pool<Sqlite>) -> Result<Option<DateTime<Utc>>, StoreError> {
        let (raw,): (Option<String>,) =
            sqlx::query_as(NEXT_DUE).fetch_one(pool).await.map_err(db)?;
        raw.as_deref().map(parse_ts).transpose()
    }
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
            self.part(conn, c).await
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
        match self.part(&mut sp, c).await {
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

    /// One event's part: its outcome, its effects or dead letter, its record.
    async fn part(
        &mut self,
        conn: &mut SqliteConnection,
        c: &EventCommit,
    ) -> Result<Part, StoreError> {
        let (id, node, now) = (c.event.id.0, self.node, self.now);
        let mut stale = Vec::new();
        let held = match &c.outcome {
            EventOutcome::Done { effects } => {
                let held = delete_held(conn, id, node).await?;
                if held && !effects.is_empty() {
                    stale = apply_writes::<Sqlite>(conn, &c.event.app, effects).await?;
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
                    .execute(&mut *conn)
                    .await
                    .map_err(db)?;
                done.rows_affected() > 0
            }
            EventOutcome::Dead { error } => {
                let held = delete_held(conn, id, node).await?;
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
        let inserted = self.plan.insert::<Sqlite>(conn, now).await?;
        if let Some(record) = &c.record {
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
) -> Result<bool, StoreError> {
    let deleted = sql::<Sqlite>(Sqlite::DELETE_HELD)
        .bind(id)
        .bind(node)
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(deleted == 1)
}
