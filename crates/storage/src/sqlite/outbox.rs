//! The outbox on SQLite: every asynchronous event is a row here until a run of it commits.
//!
//! What must stay true:
//! - a finished event's row is deleted in the same transaction as its storage effects and
//!   its invocation record, and only while `node` still holds its lease: that is what makes
//!   storage effects exactly-once per event;
//! - emitted events become rows inside the transaction that commits the run's writes,
//!   routed by the app's triggers as they are at that moment;
//! - each event with KV or blob writes runs inside its own savepoint, so one event whose
//!   writes cannot be applied is retried on its own and never aborts the rest of the batch;
//! - a claim moves `available_at` to the end of the lease, so a leased row is not due and
//!   an expired lease makes it due again; SQLite has one writer, so a claim is a single
//!   `UPDATE ... RETURNING` under `BEGIN IMMEDIATE`.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use shared::store::{App, EventCommit, EventOutcome, ObjectStore, OutboxRepository, TriggerSpec};
use shared::{
    AppName, BlobWrite, DeadLetter, DeadLetterId, Effects, Emit, Event, EventId, EventKind,
    ScriptName, StoreError, TriggerId,
};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};
use tokio::sync::Notify;

use super::invocations::insert_record;
use super::{begin_write, parse_ts, ts};
use crate::error::db;
use crate::{decode, now};

/// Max attempts of rows no trigger routes: `invoke_async`, email, parked queue messages.
pub(super) const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Longest `queue::send` delay kept as asked; longer ones are cut to this.
const MAX_DELAY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// When a run's effects could not be committed, the event is tried again after this.
const EFFECTS_RETRY: TimeDelta = TimeDelta::seconds(10);
/// What the owner reads when a run's effects could not be committed.
const EFFECTS_FAILED: &str = "the run's storage writes could not be committed";

/// A row still leased when claimed again had a run that never finished (its process
/// stopped or hung): that run counts as an attempt.
const CLAIM: &str = "UPDATE outbox SET
         attempt = attempt + (CASE WHEN lease_owner IS NULL THEN 0 ELSE 1 END), lease_owner = ?1, lease_expires_at = ?2, available_at = ?2
     WHERE id IN (SELECT id FROM outbox WHERE parked = 0 AND available_at <= ?3
                  ORDER BY available_at LIMIT ?4)
     RETURNING id, app, kind, script, trigger_id, source, payload, attempt, max_attempts,
               scheduled_at, created_at";
const DELETE_HELD: &str = "DELETE FROM outbox WHERE id = ? AND lease_owner = ?";
const RETRY_HELD: &str = "UPDATE outbox SET attempt = attempt + 1, available_at = ?1,
         last_error = ?2, lease_owner = NULL, lease_expires_at = NULL
     WHERE id = ?3 AND lease_owner = ?4";
/// Puts back a row that did not run; its attempt counter does not move.
const RELEASE_HELD: &str = "UPDATE outbox SET available_at = ?1, lease_owner = NULL,
         lease_expires_at = NULL
     WHERE id = ?2 AND lease_owner = ?3";
const APP_EXISTS: &str = "SELECT 1 FROM apps WHERE name = ?";
/// The app, only if it is still the one created at `?2` (not deleted and made again).
const APP_IS: &str = "SELECT 1 FROM apps WHERE name = ?1 AND created_at = ?2";
const INSERT_ROW: &str = "INSERT INTO outbox (id, app, kind, script, trigger_id, source, payload,
         attempt, max_attempts, parked, available_at, scheduled_at, created_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?)";
const TOPIC_SUBSCRIBERS: &str = "SELECT id, script, max_attempts FROM triggers
     WHERE app = ?1 AND kind = 'topic' AND json_extract(config, '$.topic') = ?2
     ORDER BY created_at, id";
const QUEUE_CONSUMER: &str =
    "SELECT id, script, max_attempts FROM triggers WHERE app = ?1 AND unique_key = ?2";
const DEAD_LETTER_TRIGGERS: &str = "SELECT id, script, max_attempts FROM triggers
     WHERE app = ?1 AND kind = 'dead_letter' ORDER BY created_at, id";
const INSERT_KEY: &str = "INSERT INTO idempotency_keys (app, queue, key, created_at)
     VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING";
const INSERT_DEAD_LETTER: &str = "INSERT INTO dead_letters
         (id, app, kind, script, trigger_id, source, payload, attempts, error, event_id,
          created_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
/// A claimed row that does not decode becomes a dead letter, its payload kept as text.
const DEAD_LETTER_UNREADABLE: &str = "INSERT INTO dead_letters
         (id, app, kind, script, trigger_id, source, payload, attempts, error, event_id,
          created_at)
     SELECT ?1, app, kind, script, trigger_id, source, json_quote(payload), attempt, ?2, id, ?3
     FROM outbox WHERE id = ?4 AND lease_owner = ?5";
const NEXT_DUE: &str = "SELECT MIN(available_at) FROM outbox WHERE parked = 0";
const PENDING: &str = "SELECT COUNT(*) FROM outbox WHERE app = ?";

/// A stored event kind that is none of the known ones: a corrupt row.
#[derive(Debug, thiserror::Error)]
#[error("unknown event kind in a stored row")]
pub(super) struct CorruptKind;

pub(super) struct SqliteOutbox {
    pool: SqlitePool,
    /// Where blob bytes live: objects a commit unreferenced are removed after it.
    objects: Arc<dyn ObjectStore>,
    /// Shared with triggers and dead letters: woken after every commit that inserted rows.
    inserted: Arc<Notify>,
}

impl SqliteOutbox {
    pub(super) fn new(
        pool: SqlitePool,
        objects: Arc<dyn ObjectStore>,
        inserted: Arc<Notify>,
    ) -> Self {
        Self {
            pool,
            objects,
            inserted,
        }
    }

    /// `apply`, and with `created_at` only to the app created then.
    async fn apply_as_of(
        &self,
        app: &AppName,
        created_at: Option<DateTime<Utc>>,
        effects: &Effects,
    ) -> Result<(), StoreError> {
        let now = now();
        let result = async {
            let mut tx = begin_write(&self.pool).await?;
            let found = match created_at {
                None => sqlx::query(APP_EXISTS).bind(app.as_str()),
                Some(at) => sqlx::query(APP_IS).bind(app.as_str()).bind(ts(at)),
            };
            found
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                .ok_or(StoreError::NotFound("app"))?;
            let applied = apply_effects(&mut tx, app, effects, now).await?;
            tx.commit().await.map_err(db)?;
            Ok::<_, StoreError>(applied)
        }
        .await;
        match result {
            Ok((stale, inserted)) => {
                if inserted > 0 {
                    self.inserted.notify_one();
                }
                self.remove_objects(&stale).await;
                Ok(())
            }
            Err(e) => {
                self.remove_objects(&new_objects(effects).collect::<Vec<_>>())
                    .await;
                Err(e)
            }
        }
    }

    /// Remove objects, logging (not failing) on error: an orphaned object wastes space,
    /// it never breaks a blob.
    async fn remove_objects(&self, keys: &[String]) {
        for key in keys {
            if let Err(e) = self.objects.delete(key).await {
                tracing::warn!(error = ?e, "an unreferenced blob object could not be removed");
            }
        }
    }
}

/// One outbox row to insert.
pub(super) struct NewRow {
    pub(super) kind: EventKind,
    pub(super) script: Option<String>,
    pub(super) trigger: Option<TriggerId>,
    pub(super) source: Option<String>,
    /// The payload as JSON text.
    pub(super) payload: String,
    pub(super) max_attempts: u32,
    pub(super) parked: bool,
    pub(super) available_at: DateTime<Utc>,
    pub(super) scheduled_at: DateTime<Utc>,
}

/// Insert one row (attempt 1) inside the caller's transaction; returns its id.
pub(super) async fn insert_row(
    conn: &mut SqliteConnection,
    app: &AppName,
    row: &NewRow,
    now: DateTime<Utc>,
) -> Result<EventId, StoreError> {
    let id = EventId::new();
    sqlx::query(INSERT_ROW)
        .bind(id.to_string())
        .bind(app.as_str())
        .bind(row.kind.as_str())
        .bind(row.script.as_deref())
        .bind(row.trigger.map(|t| t.to_string()))
        .bind(row.source.as_deref())
        .bind(row.payload.as_str())
        .bind(i64::from(row.max_attempts))
        .bind(i64::from(row.parked))
        .bind(ts(row.available_at))
        .bind(ts(row.scheduled_at))
        .bind(ts(now))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(id)
}

/// A trigger an event is routed to.
struct Route {
    trigger: TriggerId,
    script: String,
    max_attempts: u32,
}

async fn routes(
    conn: &mut SqliteConnection,
    sql: &'static str,
    app: &AppName,
    key: Option<&str>,
) -> Result<Vec<Route>, StoreError> {
    let mut query = sqlx::query(sql).bind(app.as_str());
    if let Some(key) = key {
        query = query.bind(key);
    }
    let rows = query.fetch_all(&mut *conn).await.map_err(db)?;
    rows.iter()
        .map(|row| {
            let id: &str = row.try_get("id").map_err(db)?;
            let max_attempts: i64 = row.try_get("max_attempts").map_err(db)?;
            Ok(Route {
                trigger: id.parse().map_err(StoreError::backend)?,
                script: row.try_get("script").map_err(db)?,
                max_attempts: u32::try_from(max_attempts).map_err(StoreError::backend)?,
            })
        })
        .collect()
}

fn json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(StoreError::backend)
}

/// Turn a run's emitted events into rows, in order; returns how many rows went in.
pub(super) async fn insert_emits(
    conn: &mut SqliteConnection,
    app: &AppName,
    emits: &[Emit],
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut inserted = 0;
    for emit in emits {
        match emit {
            Emit::Publish { topic, payload } => {
                let payload = json(payload)?;
                for route in routes(conn, TOPIC_SUBSCRIBERS, app, Some(topic.as_str())).await? {
                    let row = NewRow {
                        kind: EventKind::Topic,
                        script: Some(route.script),
                        trigger: Some(route.trigger),
                        source: Some(topic.to_string()),
                        payload: payload.clone(),
                        max_attempts: route.max_attempts,
                        parked: false,
                        available_at: now,
                        scheduled_at: now,
                    };
                    insert_row(conn, app, &row, now).await?;
                    inserted += 1;
                }
            }
            Emit::Send {
                queue,
                payload,
                delay,
                idempotency_key,
            } => {
                if let Some(key) = idempotency_key {
                    let fresh = sqlx::query(INSERT_KEY)
                        .bind(app.as_str())
                        .bind(queue.as_str())
                        .bind(key.as_str())
                        .bind(ts(now))
                        .execute(&mut *conn)
                        .await
                        .map_err(db)?;
                    if fresh.rows_affected() == 0 {
                        continue;
                    }
                }
                let due = delay.map_or(now, |d| after(now, d));
                let unique = TriggerSpec::Queue {
                    queue: queue.clone(),
                }
                .unique_key();
                let consumer = routes(conn, QUEUE_CONSUMER, app, unique.as_deref())
                    .await?
                    .pop();
                let row = NewRow {
                    kind: EventKind::Queue,
                    parked: consumer.is_none(),
                    max_attempts: consumer
                        .as_ref()
                        .map_or(DEFAULT_MAX_ATTEMPTS, |c| c.max_attempts),
                    trigger: consumer.as_ref().map(|c| c.trigger),
                    script: consumer.map(|c| c.script),
                    source: Some(queue.to_string()),
                    payload: json(payload)?,
                    available_at: due,
                    scheduled_at: due,
                };
                insert_row(conn, app, &row, now).await?;
                inserted += 1;
            }
            Emit::InvokeAsync { script, payload } => {
                let row = NewRow {
                    kind: EventKind::Invoke,
                    script: Some(script.to_string()),
                    trigger: None,
                    source: None,
                    payload: json(payload)?,
                    max_attempts: DEFAULT_MAX_ATTEMPTS,
                    parked: false,
                    available_at: now,
                    scheduled_at: now,
                };
                insert_row(conn, app, &row, now).await?;
                inserted += 1;
            }
            Emit::Email { message } => {
                let row = NewRow {
                    kind: EventKind::Email,
                    script: None,
                    trigger: None,
                    source: None,
                    payload: json(message)?,
                    max_attempts: DEFAULT_MAX_ATTEMPTS,
                    parked: false,
                    available_at: now,
                    scheduled_at: now,
                };
                insert_row(conn, app, &row, now).await?;
                inserted += 1;
            }
        }
    }
    Ok(inserted)
}

/// `now + delay`, with absurd delays cut to `MAX_DELAY`.
fn after(now: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    let delay = TimeDelta::from_std(delay.min(MAX_DELAY)).unwrap_or(TimeDelta::zero());
    now.checked_add_signed(delay).unwrap_or(now)
}

/// Insert the dead letter of `event` and, unless it is itself a dead-letter event
/// (recursion stop), one `dead_letter` event per `dead_letter` trigger of the app.
/// Returns how many outbox rows went in.
async fn insert_dead_letter(
    conn: &mut SqliteConnection,
    event: &Event,
    error: &str,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let letter = DeadLetter {
        id: DeadLetterId::new(),
        app: event.app.clone(),
        kind: event.kind,
        script: event.script.clone(),
        source: event.source.clone(),
        payload: event.payload.clone(),
        attempts: event.attempt,
        error: error.to_owned(),
        event_id: event.id,
        created_at: now,
    };
    sqlx::query(INSERT_DEAD_LETTER)
        .bind(letter.id.to_string())
        .bind(letter.app.as_str())
        .bind(letter.kind.as_str())
        .bind(letter.script.as_ref().map(ScriptName::as_str))
        .bind(event.trigger.map(|t| t.to_string()))
        .bind(letter.source.as_deref())
        .bind(json(&letter.payload)?)
        .bind(i64::from(letter.attempts))
        .bind(letter.error.as_str())
        .bind(letter.event_id.to_string())
        .bind(ts(now))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    if event.kind == EventKind::DeadLetter {
        return Ok(0);
    }
    let payload = json(&letter)?;
    let mut inserted = 0;
    for route in routes(conn, DEAD_LETTER_TRIGGERS, &event.app, None).await? {
        let row = NewRow {
            kind: EventKind::DeadLetter,
            script: Some(route.script),
            trigger: Some(route.trigger),
            source: None,
            payload: payload.clone(),
            max_attempts: route.max_attempts,
            parked: false,
            available_at: now,
            scheduled_at: now,
        };
        insert_row(conn, &event.app, &row, now).await?;
        inserted += 1;
    }
    Ok(inserted)
}

/// Apply a run's effects on `conn`: KV, blobs, then emitted events. Returns the object
/// keys no longer referenced and how many outbox rows went in.
async fn apply_effects(
    conn: &mut SqliteConnection,
    app: &AppName,
    effects: &Effects,
    now: DateTime<Utc>,
) -> Result<(Vec<String>, u64), StoreError> {
    if !effects.kv.is_empty() {
        super::kv::apply_kv(conn, app, &effects.kv).await?;
    }
    let stale = if effects.blobs.is_empty() {
        Vec::new()
    } else {
        super::blobs::apply_blobs(conn, app, &effects.blobs).await?
    };
    let inserted = insert_emits(conn, app, &effects.emitted, now).await?;
    Ok((stale, inserted))
}

/// The objects the `Put` writes of `effects` point at (already stored, not yet named).
fn new_objects(effects: &Effects) -> impl Iterator<Item = String> + '_ {
    effects.blobs.iter().filter_map(|w| match w {
        BlobWrite::Put { object, .. } => Some(object.clone()),
        BlobWrite::Delete { .. } => None,
    })
}

fn batch_new_objects(batch: &[EventCommit]) -> Vec<String> {
    batch
        .iter()
        .filter_map(|c| match &c.outcome {
            EventOutcome::Done { effects } => Some(new_objects(effects)),
            _ => None,
        })
        .flatten()
        .collect()
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

/// What a whole batch did, for after the transaction.
#[derive(Default)]
struct Batch {
    skipped: Vec<EventId>,
    /// Objects no longer referenced once the transaction commits.
    stale: Vec<String>,
    /// New objects of events whose effects were not applied.
    orphans: Vec<String>,
    inserted: u64,
}

async fn part(
    conn: &mut SqliteConnection,
    node: &str,
    c: &EventCommit,
    now: DateTime<Utc>,
) -> Result<Part, StoreError> {
    let id = c.event.id.to_string();
    let mut held = (Vec::new(), 0);
    match &c.outcome {
        EventOutcome::Done { effects } => {
            if !delete_held(conn, &id, node).await? {
                return Ok(Part::Lost);
            }
            if !effects.is_empty() {
                held = apply_effects(conn, &c.event.app, effects, now).await?;
            }
        }
        EventOutcome::Retry { at, error } => {
            let done = sqlx::query(RETRY_HELD)
                .bind(ts(*at))
                .bind(error.as_str())
                .bind(&id)
                .bind(node)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            if done.rows_affected() == 0 {
                return Ok(Part::Lost);
            }
        }
        EventOutcome::Release { at } => {
            let done = sqlx::query(RELEASE_HELD)
                .bind(ts(*at))
                .bind(&id)
                .bind(node)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            if done.rows_affected() == 0 {
                return Ok(Part::Lost);
            }
        }
        EventOutcome::Dead { error } => {
            if !delete_held(conn, &id, node).await? {
                return Ok(Part::Lost);
            }
            held.1 = insert_dead_letter(conn, &c.event, error, now).await?;
        }
    }
    if let Some(record) = &c.record {
        insert_record(conn, record).await?;
    }
    Ok(Part::Held {
        stale: held.0,
        inserted: held.1,
    })
}

async fn delete_held(
    conn: &mut SqliteConnection,
    id: &str,
    node: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(DELETE_HELD)
        .bind(id)
        .bind(node)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(done.rows_affected() == 1)
}

/// Run one event's part inside a savepoint of `conn`'s transaction.
async fn savepoint_part(
    conn: &mut SqliteConnection,
    node: &str,
    c: &EventCommit,
    now: DateTime<Utc>,
) -> Result<Part, StoreError> {
    let mut sp = sqlx::Connection::begin(&mut *conn).await.map_err(db)?;
    match part(&mut sp, node, c, now).await {
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
            Err(e)
        }
    }
}

/// The same event, counted as a failed attempt because its effects could not commit.
fn effects_failed(c: &EventCommit, now: DateTime<Utc>) -> EventCommit {
    let outcome = if c.event.attempt >= c.event.max_attempts {
        EventOutcome::Dead {
            error: EFFECTS_FAILED.to_owned(),
        }
    } else {
        EventOutcome::Retry {
            at: now + EFFECTS_RETRY,
            error: EFFECTS_FAILED.to_owned(),
        }
    };
    let record = c.record.clone().map(|mut r| {
        r.status = shared::InvocationStatus::Error;
        r.error = Some(EFFECTS_FAILED.to_owned());
        r
    });
    EventCommit {
        event: c.event.clone(),
        outcome,
        record,
    }
}

async fn commit_one(
    conn: &mut SqliteConnection,
    node: &str,
    c: &EventCommit,
    now: DateTime<Utc>,
    acc: &mut Batch,
) -> Result<(), StoreError> {
    // Only KV and blob writes can fail for one event alone; everything else is plain inserts.
    let fallible = matches!(&c.outcome, EventOutcome::Done { effects }
        if !effects.kv.is_empty() || !effects.blobs.is_empty());
    let attempt = if fallible {
        savepoint_part(conn, node, c, now).await
    } else {
        part(conn, node, c, now).await
    };
    let (result, applied) = match attempt {
        Err(e) if fallible => {
            tracing::warn!(event = %c.event.id, error = ?e, "an event's effects could not be committed");
            let fallback = savepoint_part(conn, node, &effects_failed(c, now), now).await?;
            (fallback, false)
        }
        other => (other?, true),
    };
    let held = match result {
        Part::Held { stale, inserted } => {
            acc.stale.extend(stale);
            acc.inserted += inserted;
            true
        }
        Part::Lost => {
            acc.skipped.push(c.event.id);
            false
        }
    };
    if !(held && applied)
        && let EventOutcome::Done { effects } = &c.outcome
    {
        acc.orphans.extend(new_objects(effects));
    }
    Ok(())
}

fn row_to_event(row: &SqliteRow) -> Result<Event, StoreError> {
    let id: &str = row.try_get("id").map_err(db)?;
    let kind: &str = row.try_get("kind").map_err(db)?;
    let script: Option<&str> = row.try_get("script").map_err(db)?;
    let trigger: Option<&str> = row.try_get("trigger_id").map_err(db)?;
    let payload: &str = row.try_get("payload").map_err(db)?;
    let attempt: i64 = row.try_get("attempt").map_err(db)?;
    let max_attempts: i64 = row.try_get("max_attempts").map_err(db)?;
    Ok(Event {
        id: id.parse().map_err(StoreError::backend)?,
        app: decode(row.try_get("app").map_err(db)?, AppName::parse)?,
        kind: EventKind::parse(kind).ok_or_else(|| StoreError::backend(CorruptKind))?,
        script: script.map(|s| decode(s, ScriptName::parse)).transpose()?,
        trigger: trigger
            .map(str::parse::<TriggerId>)
            .transpose()
            .map_err(StoreError::backend)?,
        source: row.try_get("source").map_err(db)?,
        payload: serde_json::from_str(payload).map_err(StoreError::backend)?,
        attempt: u32::try_from(attempt).map_err(StoreError::backend)?,
        max_attempts: u32::try_from(max_attempts).map_err(StoreError::backend)?,
        scheduled_at: parse_ts(row.try_get("scheduled_at").map_err(db)?)?,
        created_at: parse_ts(row.try_get("created_at").map_err(db)?)?,
    })
}

#[async_trait]
impl OutboxRepository for SqliteOutbox {
    async fn claim_due(
        &self,
        node: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<Event>, StoreError> {
        let now = now();
        let expires = after(now, lease);
        let mut tx = begin_write(&self.pool).await?;
        let rows = sqlx::query(CLAIM)
            .bind(node)
            .bind(ts(expires))
            .bind(ts(now))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        // One row that does not decode must not stall every claim: it becomes a dead
        // letter (in this transaction), the others run.
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            match row_to_event(row) {
                Ok(event) => events.push(event),
                Err(error) => {
                    tracing::error!(%error, "an outbox row that does not decode is dead-lettered");
                    let id: &str = row.try_get("id").map_err(db)?;
                    sqlx::query(DEAD_LETTER_UNREADABLE)
                        .bind(DeadLetterId::new().to_string())
                        .bind(crate::UNREADABLE_EVENT)
                        .bind(ts(now))
                        .bind(id)
                        .bind(node)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                    delete_held(&mut tx, id, node).await?;
                }
            }
        }
        tx.commit().await.map_err(db)?;
        events.sort_by_key(|e| (e.scheduled_at, e.id));
        Ok(events)
    }

    async fn commit(
        &self,
        node: &str,
        batch: Vec<EventCommit>,
    ) -> Result<Vec<EventId>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let now = now();
        let mut acc = Batch::default();
        let result = async {
            let mut tx = begin_write(&self.pool).await?;
            for c in &batch {
                commit_one(&mut tx, node, c, now, &mut acc).await?;
            }
            tx.commit().await.map_err(db)
        }
        .await;
        if let Err(e) = result {
            self.remove_objects(&batch_new_objects(&batch)).await;
            return Err(e);
        }
        if acc.inserted > 0 {
            self.inserted.notify_one();
        }
        self.remove_objects(&acc.stale).await;
        self.remove_objects(&acc.orphans).await;
        Ok(acc.skipped)
    }

    async fn apply(&self, app: &AppName, effects: &Effects) -> Result<(), StoreError> {
        self.apply_as_of(app, None, effects).await
    }

    async fn apply_to(&self, app: &App, effects: &Effects) -> Result<(), StoreError> {
        self.apply_as_of(&app.name, Some(app.created_at), effects)
            .await
    }

    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let (raw,): (Option<String>,) = sqlx::query_as(NEXT_DUE)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        raw.as_deref().map(parse_ts).transpose()
    }

    async fn inserted(&self) {
        self.inserted.notified().await;
    }

    async fn pending(&self, app: &AppName) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as(PENDING)
            .bind(app.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
