//! The outbox on PostgreSQL: every asynchronous event is a row here until a run of it
//! commits; several nodes claim from it at once.
//!
//! What must stay true:
//! - a finished event's row is deleted in the same transaction as its storage effects and
//!   its invocation record, and only while `node` still holds its lease: that is what makes
//!   storage effects exactly-once per event;
//! - claims use `FOR UPDATE SKIP LOCKED` and move `available_at` to the end of the lease,
//!   so two nodes never claim one row and an expired lease makes the row due again;
//! - a batch is one transaction with a fixed number of multi-row statements (UNNEST), plus
//!   a savepoint only for events with KV or blob writes: one such event whose writes fail
//!   is retried on its own and never aborts the rest of the batch;
//! - the apps of a batch are locked (`FOR KEY SHARE`) first, so an app deleted meanwhile
//!   waits for the commit or is already gone, never a deadlock or a failed FK halfway;
//! - a transaction that inserts rows also runs `pg_notify('picloud_outbox')`; each node's
//!   listener task turns those into the local wake-up. Nothing polls.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use shared::store::{App, EventCommit, EventOutcome, ObjectStore, OutboxRepository, TriggerSpec};
use shared::{
    AppName, BlobWrite, DeadLetter, DeadLetterId, Effects, Emit, Event, EventId, EventKind,
    InvocationRecord, InvocationStatus, ScriptName, StoreError, TriggerId,
};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgListener, PgPool, PgRow};
use tokio::sync::Notify;
use uuid::Uuid;

use super::invocations::insert_records;
use crate::error::db;
use crate::{decode, now};

/// Max attempts of rows no trigger routes: `invoke_async`, email, parked queue messages.
pub(super) const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// The channel every node listens on; the payload is empty (it only says "look").
pub(super) const CHANNEL: &str = "picloud_outbox";
/// Runs inside a transaction that inserted rows; delivered when it commits.
pub(super) const NOTIFY: &str = "SELECT pg_notify('picloud_outbox', '')";
/// Longest `queue::send` delay kept as asked; longer ones are cut to this.
const MAX_DELAY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// When a run's effects could not be committed, the event is tried again after this.
const EFFECTS_RETRY: TimeDelta = TimeDelta::seconds(10);
/// What the owner reads when a run's effects could not be committed.
const EFFECTS_FAILED: &str = "the run's storage writes could not be committed";
/// The listener's reconnect backoff.
const LISTEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(10);

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
               o.attempt, o.max_attempts, o.scheduled_at, o.created_at";
/// A claimed row that does not decode becomes a dead letter, its payload kept as text.
const DEAD_LETTER_UNREADABLE: &str = "WITH gone AS (
         DELETE FROM outbox WHERE id = $1 AND lease_owner = $2
         RETURNING app, kind, script, trigger_id, source, payload, attempt, id)
     INSERT INTO dead_letters (id, app, kind, script, trigger_id, source, payload, attempts,
         error, event_id, created_at)
     SELECT $3, app, kind, script, trigger_id, source, to_jsonb(payload::text), attempt, $4, id,
            now()
     FROM gone";
const LOCK_APPS: &str = "SELECT name FROM apps WHERE name = ANY($1) ORDER BY name FOR KEY SHARE";
/// The app, only if it is still the one created at `$2` (not deleted and made again).
const LOCK_APP_IS: &str = "SELECT name FROM apps WHERE name = $1 AND created_at = $2 FOR KEY SHARE";
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
         attempt, max_attempts, parked, available_at, scheduled_at, created_at, last_error)
     VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, false, $10, $11, $12, $13)";
const INSERT_ROWS: &str = "INSERT INTO outbox (id, app, kind, script, trigger_id, source, payload,
         attempt, max_attempts, parked, available_at, scheduled_at, created_at)
     SELECT t.id, t.app, t.kind, t.script, t.trigger_id, t.source, t.payload::jsonb, 1,
            t.max_attempts, t.parked, t.available_at, t.scheduled_at, $12
     FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[],
                 $7::text[], $8::int4[], $9::bool[], $10::timestamptz[], $11::timestamptz[])
          AS t(id, app, kind, script, trigger_id, source, payload, max_attempts, parked,
               available_at, scheduled_at)";
const INSERT_DEAD_LETTERS: &str = "INSERT INTO dead_letters (id, app, kind, script, trigger_id,
         source, payload, attempts, error, event_id, created_at)
     SELECT t.id, t.app, t.kind, t.script, t.trigger_id, t.source, t.payload::jsonb,
            t.attempts, t.error, t.event_id, $11
     FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[],
                 $7::text[], $8::int4[], $9::text[], $10::uuid[])
          AS t(id, app, kind, script, trigger_id, source, payload, attempts, error, event_id)";
const TOPIC_SUBSCRIBERS: &str = "SELECT id, script, max_attempts FROM triggers
     WHERE app = $1 AND kind = 'topic' AND config::jsonb ->> 'topic' = $2
     ORDER BY created_at, id";
const QUEUE_CONSUMER: &str =
    "SELECT id, script, max_attempts FROM triggers WHERE app = $1 AND unique_key = $2";
const DEAD_LETTER_TRIGGERS: &str = "SELECT id, script, max_attempts FROM triggers
     WHERE app = $1 AND kind = 'dead_letter' ORDER BY created_at, id";
const INSERT_KEY: &str = "INSERT INTO idempotency_keys (app, queue, key, created_at)
     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
/// The database's own clock with the due time: claims compare against the database's
/// `now()`, so the wait is measured on that clock and moved onto this node's.
const NEXT_DUE: &str =
    "SELECT MIN(available_at) AS due, now() AS db_now FROM outbox WHERE NOT parked";
const PENDING: &str = "SELECT COUNT(*) FROM outbox WHERE app = $1";

/// A stored event kind that is none of the known ones: a corrupt row.
#[derive(Debug, thiserror::Error)]
#[error("unknown event kind in a stored row")]
pub(super) struct CorruptKind;

pub(super) struct PgOutbox {
    pool: PgPool,
    /// Where blob bytes live: objects a commit unreferenced are removed after it.
    objects: Arc<dyn ObjectStore>,
    /// Shared with triggers and dead letters: woken after every local commit that inserted
    /// rows, and by the listener task for every NOTIFY.
    inserted: Arc<Notify>,
    /// Set once the listener task runs (started by the first `inserted()`).
    listening: OnceLock<()>,
}

impl PgOutbox {
    pub(super) fn new(pool: PgPool, objects: Arc<dyn ObjectStore>, inserted: Arc<Notify>) -> Self {
        Self {
            pool,
            objects,
            inserted,
            listening: OnceLock::new(),
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
            let mut tx = self.pool.begin().await.map_err(db)?;
            let found: Vec<String> = match created_at {
                None => sqlx::query_scalar::<_, String>(LOCK_APPS).bind(vec![app.as_str()]),
                Some(at) => sqlx::query_scalar::<_, String>(LOCK_APP_IS)
                    .bind(app.as_str())
                    .bind(at),
            }
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
            if found.is_empty() {
                return Err(StoreError::NotFound("app"));
            }
            let stale = apply_writes(&mut tx, app, effects).await?;
            let mut rows = Rows::default();
            resolve_emits(
                &mut tx,
                &mut Routes::default(),
                &mut rows,
                app,
                &effects.emitted,
                now,
            )
            .await?;
            let inserted = rows.insert(&mut tx, now).await?;
            tx.commit().await.map_err(db)?;
            Ok((stale, inserted))
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

    fn start_listener(&self) {
        self.listening.get_or_init(|| {
            tokio::spawn(listen(self.pool.clone(), self.inserted.clone()));
        });
    }
}

/// Forward `picloud_outbox` notifications to `inserted` until the pool closes, reconnecting
/// with backoff. Every (re)connect also wakes once: notifications sent while the
/// connection was down are lost, so the dispatcher must look.
async fn listen(pool: PgPool, inserted: Arc<Notify>) {
    let mut backoff = LISTEN_BACKOFF_MIN;
    loop {
        if pool.is_closed() {
            return;
        }
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = ?e, "the outbox listener cannot connect");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = ?e, "the outbox listener cannot listen");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
            continue;
        }
        inserted.notify_one();
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => {
                    backoff = LISTEN_BACKOFF_MIN;
                    inserted.notify_one();
                }
                // The connection dropped; `try_recv` reconnects on the next call.
                Ok(None) => inserted.notify_one(),
                Err(e) => {
                    if pool.is_closed() {
                        return;
                    }
                    tracing::warn!(error = ?e, "the outbox listener lost its connection");
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
    }
}

/// Outbox rows to insert, column by column (one UNNEST statement).
#[derive(Default)]
pub(super) struct Rows {
    ids: Vec<Uuid>,
    apps: Vec<String>,
    kinds: Vec<&'static str>,
    scripts: Vec<Option<String>>,
    triggers: Vec<Option<Uuid>>,
    sources: Vec<Option<String>>,
    payloads: Vec<String>,
    max_attempts: Vec<i32>,
    parked: Vec<bool>,
    available_at: Vec<DateTime<Utc>>,
    scheduled_at: Vec<DateTime<Utc>>,
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

impl Rows {
    /// Queue a row (attempt 1) for `app`; returns its id.
    pub(super) fn push(&mut self, app: &AppName, row: NewRow) -> EventId {
        let id = EventId::new();
        self.ids.push(id.0);
        self.apps.push(app.to_string());
        self.kinds.push(row.kind.as_str());
        self.scripts.push(row.script);
        self.triggers.push(row.trigger.map(|t| t.0));
        self.sources.push(row.source);
        self.payloads.push(row.payload);
        self.max_attempts
            .push(i32::try_from(row.max_attempts).unwrap_or(i32::MAX));
        self.parked.push(row.parked);
        self.available_at.push(row.available_at);
        self.scheduled_at.push(row.scheduled_at);
        id
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn truncate(&mut self, len: usize) {
        self.ids.truncate(len);
        self.apps.truncate(len);
        self.kinds.truncate(len);
        self.scripts.truncate(len);
        self.triggers.truncate(len);
        self.sources.truncate(len);
        self.payloads.truncate(len);
        self.max_attempts.truncate(len);
        self.parked.truncate(len);
        self.available_at.truncate(len);
        self.scheduled_at.truncate(len);
    }

    /// Insert every queued row in one statement, and NOTIFY the other nodes if any.
    pub(super) async fn insert(
        self,
        conn: &mut PgConnection,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let n = self.len();
        if n == 0 {
            return Ok(0);
        }
        sqlx::query(INSERT_ROWS)
            .bind(self.ids)
            .bind(self.apps)
            .bind(self.kinds)
            .bind(self.scripts)
            .bind(self.triggers)
            .bind(self.sources)
            .bind(self.payloads)
            .bind(self.max_attempts)
            .bind(self.parked)
            .bind(self.available_at)
            .bind(self.scheduled_at)
            .bind(now)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        sqlx::query(NOTIFY).execute(&mut *conn).await.map_err(db)?;
        Ok(n)
    }
}

/// A trigger an event is routed to.
#[derive(Clone)]
struct Route {
    trigger: TriggerId,
    script: String,
    max_attempts: u32,
}

/// Trigger lookups of one transaction, cached per (query, app, key): a batch of events
/// publishing to one topic asks once.
#[derive(Default)]
struct Routes(HashMap<(&'static str, String, String), Vec<Route>>);

impl Routes {
    async fn get(
        &mut self,
        conn: &mut PgConnection,
        sql: &'static str,
        app: &AppName,
        key: Option<&str>,
    ) -> Result<Vec<Route>, StoreError> {
        let cache_key = (sql, app.to_string(), key.unwrap_or_default().to_owned());
        if let Some(found) = self.0.get(&cache_key) {
            return Ok(found.clone());
        }
        let mut query = sqlx::query(sql).bind(app.as_str());
        if let Some(key) = key {
            query = query.bind(key);
        }
        let rows = query.fetch_all(&mut *conn).await.map_err(db)?;
        let found = rows
            .iter()
            .map(|row| {
                let max_attempts: i32 = row.try_get("max_attempts").map_err(db)?;
                Ok(Route {
                    trigger: TriggerId(row.try_get::<Uuid, _>("id").map_err(db)?),
                    script: row.try_get("script").map_err(db)?,
                    max_attempts: u32::try_from(max_attempts).map_err(StoreError::backend)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.0.insert(cache_key, found.clone());
        Ok(found)
    }
}

fn json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(StoreError::backend)
}

/// `now + delay`, with absurd delays cut to `MAX_DELAY`.
fn after(now: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    let delay = TimeDelta::from_std(delay.min(MAX_DELAY)).unwrap_or(TimeDelta::zero());
    now.checked_add_signed(delay).unwrap_or(now)
}

/// Turn a run's emitted events into rows (queued in `rows`), in order. Idempotency keys
/// are inserted right away, so a key repeated later in the same batch sends nothing.
async fn resolve_emits(
    conn: &mut PgConnection,
    routes: &mut Routes,
    rows: &mut Rows,
    app: &AppName,
    emits: &[Emit],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    for emit in emits {
        match emit {
            Emit::Publish { topic, payload } => {
                let subscribers = routes
                    .get(conn, TOPIC_SUBSCRIBERS, app, Some(topic.as_str()))
                    .await?;
                if subscribers.is_empty() {
                    continue;
                }
                let payload = json(payload)?;
                for route in subscribers {
                    rows.push(
                        app,
                        NewRow {
                            kind: EventKind::Topic,
                            script: Some(route.script),
                            trigger: Some(route.trigger),
                            source: Some(topic.to_string()),
                            payload: payload.clone(),
                            max_attempts: route.max_attempts,
                            parked: false,
                            available_at: now,
                            scheduled_at: now,
                        },
                    );
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
                        .bind(now)
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
                let consumer = routes
                    .get(conn, QUEUE_CONSUMER, app, unique.as_deref())
                    .await?
                    .pop();
                rows.push(
                    app,
                    NewRow {
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
                    },
                );
            }
            Emit::InvokeAsync { script, payload } => {
                rows.push(
                    app,
                    NewRow {
                        kind: EventKind::Invoke,
                        script: Some(script.to_string()),
                        trigger: None,
                        source: None,
                        payload: json(payload)?,
                        max_attempts: DEFAULT_MAX_ATTEMPTS,
                        parked: false,
                        available_at: now,
                        scheduled_at: now,
                    },
                );
            }
            Emit::Email { message } => {
                rows.push(
                    app,
                    NewRow {
                        kind: EventKind::Email,
                        script: None,
                        trigger: None,
                        source: None,
                        payload: json(message)?,
                        max_attempts: DEFAULT_MAX_ATTEMPTS,
                        parked: false,
                        available_at: now,
                        scheduled_at: now,
                    },
                );
            }
        }
    }
    Ok(())
}

/// Dead letters to insert, column by column, with their fan-out queued in `rows`.
#[derive(Default)]
struct Letters {
    ids: Vec<Uuid>,
    apps: Vec<String>,
    kinds: Vec<&'static str>,
    scripts: Vec<Option<String>>,
    triggers: Vec<Option<Uuid>>,
    sources: Vec<Option<String>>,
    payloads: Vec<String>,
    attempts: Vec<i32>,
    errors: Vec<String>,
    event_ids: Vec<Uuid>,
}

impl Letters {
    /// Queue the dead letter of `event` and, unless it is itself a dead-letter event
    /// (recursion stop), one `dead_letter` event per `dead_letter` trigger of the app.
    async fn push(
        &mut self,
        conn: &mut PgConnection,
        routes: &mut Routes,
        rows: &mut Rows,
        event: &Event,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
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
        self.ids.push(letter.id.0);
        self.apps.push(letter.app.to_string());
        self.kinds.push(letter.kind.as_str());
        self.scripts
            .push(letter.script.as_ref().map(ScriptName::to_string));
        self.triggers.push(event.trigger.map(|t| t.0));
        self.sources.push(letter.source.clone());
        self.payloads.push(json(&letter.payload)?);
        self.attempts
            .push(i32::try_from(letter.attempts).unwrap_or(i32::MAX));
        self.errors.push(letter.error.clone());
        self.event_ids.push(letter.event_id.0);
        if event.kind == EventKind::DeadLetter {
            return Ok(());
        }
        let handlers = routes
            .get(conn, DEAD_LETTER_TRIGGERS, &event.app, None)
            .await?;
        if handlers.is_empty() {
            return Ok(());
        }
        let payload = json(&letter)?;
        for route in handlers {
            rows.push(
                &event.app,
                NewRow {
                    kind: EventKind::DeadLetter,
                    script: Some(route.script),
                    trigger: Some(route.trigger),
                    source: None,
                    payload: payload.clone(),
                    max_attempts: route.max_attempts,
                    parked: false,
                    available_at: now,
                    scheduled_at: now,
                },
            );
        }
        Ok(())
    }

    async fn insert(self, conn: &mut PgConnection, now: DateTime<Utc>) -> Result<(), StoreError> {
        if self.ids.is_empty() {
            return Ok(());
        }
        sqlx::query(INSERT_DEAD_LETTERS)
            .bind(self.ids)
            .bind(self.apps)
            .bind(self.kinds)
            .bind(self.scripts)
            .bind(self.triggers)
            .bind(self.sources)
            .bind(self.payloads)
            .bind(self.attempts)
            .bind(self.errors)
            .bind(self.event_ids)
            .bind(now)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        Ok(())
    }
}

/// Apply KV and blob writes; returns the object keys no longer referenced.
async fn apply_writes(
    conn: &mut PgConnection,
    app: &AppName,
    effects: &Effects,
) -> Result<Vec<String>, StoreError> {
    if !effects.kv.is_empty() {
        super::kv::apply_kv(conn, app, &effects.kv).await?;
    }
    if effects.blobs.is_empty() {
        return Ok(Vec::new());
    }
    super::blobs::apply_blobs(conn, app, &effects.blobs).await
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

/// What a whole batch did, for after the transaction.
#[derive(Default)]
struct Batch {
    skipped: Vec<EventId>,
    /// Objects no longer referenced once the transaction commits.
    stale: Vec<String>,
    /// New objects of events whose effects were not applied.
    orphans: Vec<String>,
    inserted: usize,
}

/// Everything one batch commits, in one transaction.
async fn commit_batch(
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

    let finished: Vec<Uuid> = batch
        .iter()
        .filter(|c| {
            !matches!(
                c.outcome,
                EventOutcome::Retry { .. } | EventOutcome::Release { .. }
            )
        })
        .map(|c| c.event.id.0)
        .collect();
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
            _ => {}
        }
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

    let mut routes = Routes::default();
    let mut rows = Rows::default();
    let mut letters = Letters::default();
    let mut records: Vec<InvocationRecord> = Vec::new();
    for c in batch {
        if !held.contains(&c.event.id.0) {
            acc.skipped.push(c.event.id);
            if let EventOutcome::Done { effects } = &c.outcome {
                acc.orphans.extend(new_objects(effects));
            }
            continue;
        }
        let mut record = c.record.clone();
        match &c.outcome {
            EventOutcome::Done { effects } if effects.kv.is_empty() && effects.blobs.is_empty() => {
                resolve_emits(
                    conn,
                    &mut routes,
                    &mut rows,
                    &c.event.app,
                    &effects.emitted,
                    now,
                )
                .await?;
            }
            EventOutcome::Done { effects } => {
                let mark = rows.len();
                let mut sp = sqlx::Connection::begin(&mut *conn).await.map_err(db)?;
                let applied = async {
                    let stale = apply_writes(&mut sp, &c.event.app, effects).await?;
                    resolve_emits(
                        &mut sp,
                        &mut routes,
                        &mut rows,
                        &c.event.app,
                        &effects.emitted,
                        now,
                    )
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
                        rows.truncate(mark);
                        acc.orphans.extend(new_objects(effects));
                        record = record.map(|mut r| {
                            r.status = InvocationStatus::Error;
                            r.error = Some(EFFECTS_FAILED.to_owned());
                            r
                        });
                        if c.event.attempt >= c.event.max_attempts {
                            letters
                                .push(conn, &mut routes, &mut rows, &c.event, EFFECTS_FAILED, now)
                                .await?;
                        } else {
                            reinsert(conn, &c.event, now).await?;
                        }
                    }
                }
            }
            EventOutcome::Retry { .. } | EventOutcome::Release { .. } => {}
            EventOutcome::Dead { error } => {
                letters
                    .push(conn, &mut routes, &mut rows, &c.event, error, now)
                    .await?;
            }
        }
        records.extend(record);
    }
    letters.insert(conn, now).await?;
    acc.inserted += rows.insert(conn, now).await?;
    insert_records(conn, &records).await
}

/// Put back an event whose effects could not commit, as its next attempt.
async fn reinsert(
    conn: &mut PgConnection,
    event: &Event,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(REINSERT)
        .bind(event.id.0)
        .bind(event.app.as_str())
        .bind(event.kind.as_str())
        .bind(event.script.as_ref().map(ScriptName::as_str))
        .bind(event.trigger.map(|t| t.0))
        .bind(event.source.as_deref())
        .bind(json(&event.payload)?)
        .bind(i32::try_from(event.attempt.saturating_add(1)).unwrap_or(i32::MAX))
        .bind(i32::try_from(event.max_attempts).unwrap_or(i32::MAX))
        .bind(now + EFFECTS_RETRY)
        .bind(event.scheduled_at)
        .bind(event.created_at)
        .bind(EFFECTS_FAILED)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

fn row_to_event(row: &PgRow) -> Result<Event, StoreError> {
    let kind: &str = row.try_get("kind").map_err(db)?;
    let script: Option<&str> = row.try_get("script").map_err(db)?;
    let payload: &str = row.try_get("payload").map_err(db)?;
    let attempt: i32 = row.try_get("attempt").map_err(db)?;
    let max_attempts: i32 = row.try_get("max_attempts").map_err(db)?;
    Ok(Event {
        id: EventId(row.try_get::<Uuid, _>("id").map_err(db)?),
        app: decode(row.try_get("app").map_err(db)?, AppName::parse)?,
        kind: EventKind::parse(kind).ok_or_else(|| StoreError::backend(CorruptKind))?,
        script: script.map(|s| decode(s, ScriptName::parse)).transpose()?,
        trigger: row
            .try_get::<Option<Uuid>, _>("trigger_id")
            .map_err(db)?
            .map(TriggerId),
        source: row.try_get("source").map_err(db)?,
        payload: serde_json::from_str(payload).map_err(StoreError::backend)?,
        attempt: u32::try_from(attempt).map_err(StoreError::backend)?,
        max_attempts: u32::try_from(max_attempts).map_err(StoreError::backend)?,
        scheduled_at: row.try_get("scheduled_at").map_err(db)?,
        created_at: row.try_get("created_at").map_err(db)?,
    })
}

#[async_trait]
impl OutboxRepository for PgOutbox {
    async fn claim_due(
        &self,
        node: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(CLAIM)
            .bind(node)
            .bind(i64::from(limit))
            .bind(lease.min(MAX_DELAY).as_secs_f64())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        // One row that does not decode must not stall every claim: it becomes a dead
        // letter, the others run.
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            match row_to_event(row) {
                Ok(event) => events.push(event),
                Err(error) => {
                    tracing::error!(%error, "an outbox row that does not decode is dead-lettered");
                    let id: Uuid = row.try_get("id").map_err(db)?;
                    // Best effort: failing here must not fail the claim of the good rows;
                    // the row is claimed (and dead-lettered) again after its lease.
                    if let Err(error) = sqlx::query(DEAD_LETTER_UNREADABLE)
                        .bind(id)
                        .bind(node)
                        .bind(DeadLetterId::new().0)
                        .bind(crate::UNREADABLE_EVENT)
                        .execute(&self.pool)
                        .await
                    {
                        tracing::error!(error = ?error, "could not dead-letter an unreadable outbox row");
                    }
                }
            }
        }
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
            let mut tx = self.pool.begin().await.map_err(db)?;
            commit_batch(&mut tx, node, &batch, now, &mut acc).await?;
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
        let before = Utc::now();
        let (due, db_now): (Option<DateTime<Utc>>, DateTime<Utc>) = sqlx::query_as(NEXT_DUE)
            .fetch_one(&self.pool)
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

    async fn inserted(&self) {
        self.start_listener();
        self.inserted.notified().await;
    }

    async fn pending(&self, app: &AppName) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(PENDING)
            .bind(app.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use shared::{AppName, Effects, Emit, ScriptName};
    use sqlx::Connection;

    const WAIT: Duration = Duration::from_secs(5);

    /// A node whose clock runs 3 s ahead of the database (the database's `now()` is shadowed
    /// by one 3 s behind): a row it inserts "now" is due in 3 s on the claim's clock, and
    /// `next_due_at` says so on the node's clock, so the dispatcher sleeps instead of waking
    /// every few milliseconds to a claim that finds nothing.
    #[tokio::test]
    async fn next_due_at_is_measured_on_the_database_clock() {
        let db = crate::testing::skewed_postgres_store(3).await;
        let store = &db.store;
        let app = AppName::parse("shop").expect("name");
        let script = ScriptName::parse("w").expect("name");
        store.apps.create(&app).await.expect("app");
        store
            .scripts
            .deploy(&app, &script, "1")
            .await
            .expect("deploy");
        store
            .outbox
            .apply(
                &app,
                &Effects {
                    emitted: vec![Emit::InvokeAsync {
                        script,
                        payload: json!(1),
                    }],
                    ..Effects::default()
                },
            )
            .await
            .expect("apply");
        let claimed = store
            .outbox
            .claim_due("node", 10, Duration::from_secs(60))
            .await
            .expect("claim");
        assert!(claimed.is_empty(), "not due yet on the database's clock");
        let due = store
            .outbox
            .next_due_at()
            .await
            .expect("next due")
            .expect("a row");
        let wait = due - chrono::Utc::now();
        assert!(
            wait > chrono::Duration::seconds(2) && wait <= chrono::Duration::seconds(3),
            "due in {wait} on this node's clock"
        );
        db.close().await;
    }

    #[tokio::test]
    async fn an_insert_on_one_node_wakes_another_node_through_notify() {
        let url = crate::testing::fresh_postgres_url().await;
        let a = crate::connect(&url).await.expect("node a");
        let b = crate::connect(&url).await.expect("node b");
        // The first call starts b's listener, which wakes once when it is listening.
        tokio::time::timeout(WAIT, b.outbox.inserted())
            .await
            .expect("b's listener is up");
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.outbox.inserted().await })
        };
        let app = AppName::parse("shop").expect("name");
        let script = ScriptName::parse("w").expect("name");
        a.apps.create(&app).await.expect("app");
        a.scripts.deploy(&app, &script, "1").await.expect("deploy");
        a.outbox
            .apply(
                &app,
                &Effects {
                    emitted: vec![Emit::InvokeAsync {
                        script,
                        payload: json!(1),
                    }],
                    ..Effects::default()
                },
            )
            .await
            .expect("apply");
        tokio::time::timeout(WAIT, waiter)
            .await
            .expect("b woke on a's insert")
            .expect("waiter");
        assert_eq!(b.outbox.pending(&app).await.expect("pending"), 1);

        a.health.close().await;
        tokio::time::timeout(WAIT, b.health.close())
            .await
            .expect("closing the pool ends the listener");
        let schema = url.rsplit_once("search_path%3D").map(|(_, s)| s.to_owned());
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
        if let Some(schema) = schema {
            // The schema name is ours (a fixed prefix and hex digits), never input.
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&mut conn)
                .await
                .expect("drop the test schema");
        }
        conn.close().await.ok();
    }
}
