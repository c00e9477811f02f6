//! Emitted events and dead letters become rows: the routing rules, run inside the
//! transaction that commits them, so they see the app's triggers as they are at that
//! moment. Planning only reads (triggers) and remembers idempotency keys; the rows and
//! letters are inserted afterwards by the backend, in as few statements as it likes.
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use shared::store::TriggerSpec;
use shared::{
    AppName, DeadLetter, DeadLetterId, Emit, Event, EventId, EventKind, StoreError, TriggerId,
};

use super::{DEFAULT_MAX_ATTEMPTS, OutboxSql, after, json};
use crate::error::db;
use crate::sql::{Cols, sql};

/// One outbox row to insert, at attempt 1.
pub(crate) struct NewRow {
    pub(crate) id: EventId,
    pub(crate) app: AppName,
    pub(crate) kind: EventKind,
    pub(crate) script: Option<String>,
    pub(crate) trigger: Option<TriggerId>,
    pub(crate) source: Option<String>,
    /// The payload as JSON text.
    pub(crate) payload: String,
    pub(crate) max_attempts: u32,
    /// A queue message without a consumer: not claimable until one is created.
    pub(crate) parked: bool,
    pub(crate) available_at: DateTime<Utc>,
    pub(crate) scheduled_at: DateTime<Utc>,
    /// The `traceparent` of the span that emitted it (`Event::trace`).
    pub(crate) trace: Option<String>,
}

impl NewRow {
    /// The event of cron trigger `trigger` (stored `config`), due now: for the fire of
    /// `Some(slot)`, scheduled at its slot; for `None`, a manual run ("run now") whose slot
    /// is now and whose payload says `"manual": true`. `None` when the config is not cron.
    pub(crate) fn cron(
        app: AppName,
        trigger: TriggerId,
        script: String,
        config: &str,
        max_attempts: i64,
        fire: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<Self>, StoreError> {
        let slot = fire.unwrap_or(now);
        let TriggerSpec::Cron { schedule, timezone } =
            serde_json::from_str(config).map_err(StoreError::backend)?
        else {
            return Ok(None);
        };
        let mut payload =
            serde_json::json!({ "slot": slot, "schedule": schedule, "timezone": timezone });
        if fire.is_none() {
            payload["manual"] = true.into();
        }
        Ok(Some(Self {
            id: EventId::new(),
            app,
            kind: EventKind::Cron,
            script: Some(script),
            trigger: Some(trigger),
            source: Some(schedule),
            payload: payload.to_string(),
            max_attempts: u32::try_from(max_attempts).map_err(StoreError::backend)?,
            parked: false,
            available_at: now,
            scheduled_at: slot,
            trace: None,
        }))
    }

    /// A row due now, for `route`'s trigger.
    fn routed(
        app: &AppName,
        kind: EventKind,
        route: Route,
        payload: String,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: EventId::new(),
            app: app.clone(),
            kind,
            script: Some(route.script),
            trigger: Some(route.trigger),
            source: None,
            payload,
            max_attempts: route.max_attempts,
            parked: false,
            available_at: now,
            scheduled_at: now,
            trace: None,
        }
    }

    /// A row due now that no trigger routes (default max attempts).
    fn unrouted(
        app: &AppName,
        kind: EventKind,
        script: Option<String>,
        payload: String,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: EventId::new(),
            app: app.clone(),
            kind,
            script,
            trigger: None,
            source: None,
            payload,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            parked: false,
            available_at: now,
            scheduled_at: now,
            trace: None,
        }
    }
}

/// A dead letter to insert, with the trigger its event came through.
pub(crate) struct Letter {
    pub(crate) letter: DeadLetter,
    pub(crate) trigger: Option<TriggerId>,
}

/// A publish on an exposed topic: an event for the app's realtime replay buffer.
pub(crate) struct RealtimeRow {
    app: AppName,
    topic: String,
    /// The payload as JSON text.
    payload: String,
}

/// What a transaction will insert once its rules have run, and the trigger lookups it
/// made to route them.
#[derive(Default)]
pub(crate) struct Plan {
    rows: Vec<NewRow>,
    letters: Vec<Letter>,
    realtime: Vec<RealtimeRow>,
    routes: Routes,
    /// Whether (app, topic) is exposed, as this transaction saw it.
    exposed: HashMap<(String, String), bool>,
    /// Each app's newest realtime id inserted so far: what to announce after the commit.
    published: Vec<(AppName, u64)>,
}

impl Plan {
    /// A plan of one row.
    pub(crate) fn row(row: NewRow) -> Self {
        Self {
            rows: vec![row],
            ..Self::default()
        }
    }

    /// A plan of one dead letter (and no fan-out).
    pub(crate) fn letter(letter: Letter) -> Self {
        Self {
            letters: vec![letter],
            ..Self::default()
        }
    }

    /// Where the plan stands, to go back to with `truncate` when a savepoint rolls back.
    pub(crate) fn mark(&self) -> (usize, usize, usize) {
        (self.rows.len(), self.letters.len(), self.realtime.len())
    }

    pub(crate) fn truncate(&mut self, (rows, letters, realtime): (usize, usize, usize)) {
        self.rows.truncate(rows);
        self.letters.truncate(letters);
        self.realtime.truncate(realtime);
    }

    /// The realtime events inserted so far, per app its newest id, to announce on the bus
    /// once the transaction has committed (a hint: subscribers read the rows).
    pub(crate) fn published(&mut self) -> Vec<(AppName, u64)> {
        std::mem::take(&mut self.published)
    }

    /// Insert the planned rows and letters (`OutboxSql::insert`) and forget them; the
    /// lookups are kept for the rest of the transaction. Returns how many rows went in.
    pub(crate) async fn insert<DB: OutboxSql>(
        &mut self,
        conn: &mut DB::Connection,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let inserted = DB::insert(conn, &self.rows, &self.letters, now).await?;
        self.rows.clear();
        self.letters.clear();
        self.insert_realtime::<DB>(conn, now).await?;
        Ok(inserted)
    }

    /// Give the planned realtime events their ids and insert them. Ids are taken from the
    /// app's `realtime_apps` row, which the update keeps locked until the transaction ends
    /// (PostgreSQL; SQLite has one writer): a later transaction's ids wait for this one's
    /// commit, so ids become visible in order. Apps are taken in name order, so two
    /// transactions never wait on each other's rows.
    async fn insert_realtime<DB: OutboxSql>(
        &mut self,
        conn: &mut DB::Connection,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if self.realtime.is_empty() {
            return Ok(());
        }
        let mut rows = std::mem::take(&mut self.realtime);
        // Stable: an app's events keep their order.
        rows.sort_by(|a, b| a.app.as_str().cmp(b.app.as_str()));
        for group in rows.chunk_by(|a, b| a.app == b.app) {
            let app = &group[0].app;
            let n = i64::try_from(group.len()).map_err(StoreError::backend)?;
            let last = sql::<DB>(DB::TAKE_REALTIME_IDS)
                .bind(app.as_str())
                .bind(n)
                .fetch_one(&mut *conn)
                .await
                .map_err(db)?
                .int("last_id")?;
            for (id, row) in (last - n + 1..).zip(group) {
                sql::<DB>(DB::INSERT_REALTIME)
                    .bind(app.as_str())
                    .bind(id)
                    .bind(row.topic.as_str())
                    .bind(row.payload.as_str())
                    .bind(now)
                    .execute(&mut *conn)
                    .await
                    .map_err(db)?;
            }
            let last = u64::try_from(last).map_err(StoreError::backend)?;
            match self.published.iter_mut().find(|(a, _)| a == app) {
                Some((_, newest)) => *newest = (*newest).max(last),
                None => self.published.push((app.clone(), last)),
            }
        }
        Ok(())
    }

    /// Whether `topic` is exposed to browsers, once per transaction.
    async fn is_exposed<DB: OutboxSql>(
        &mut self,
        conn: &mut DB::Connection,
        app: &AppName,
        topic: &str,
    ) -> Result<bool, StoreError> {
        let key = (app.to_string(), topic.to_owned());
        if let Some(found) = self.exposed.get(&key) {
            return Ok(*found);
        }
        let found = sql::<DB>(DB::TOPIC_EXPOSED)
            .bind(app.as_str())
            .bind(topic)
            .fetch_optional(conn)
            .await
            .map_err(db)?
            .is_some();
        self.exposed.insert(key, found);
        Ok(found)
    }

    /// Plan a run's emitted events as rows, in order. Idempotency keys are remembered right
    /// away, so a key repeated later in the same batch sends nothing.
    pub(crate) async fn emits<DB: OutboxSql>(
        &mut self,
        conn: &mut DB::Connection,
        app: &AppName,
        emits: &[Emit],
        trace: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let first = self.rows.len();
        self.plan_emits::<DB>(conn, app, emits, now).await?;
        if let Some(trace) = trace {
            for row in &mut self.rows[first..] {
                row.trace = Some(trace.to_owned());
            }
        }
        Ok(())
    }

    async fn plan_emits<DB: OutboxSql>(
        &mut self,
        conn: &mut DB::Connection,
        app: &AppName,
        emits: &[Emit],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for emit in emits {
            match emit {
                Emit::Publish { topic, payload } => {
                    let subscribers = self
                        .routes
                        .get::<DB>(conn, DB::TOPIC_SUBSCRIBERS, app, Some(topic.as_str()))
                        .await?;
                    let exposed = self.is_exposed::<DB>(conn, app, topic.as_str()).await?;
                    if subscribers.is_empty() && !exposed {
                        continue;
                    }
                    let payload = json(payload)?;
                    if exposed {
                        self.realtime.push(RealtimeRow {
                            app: app.clone(),
                            topic: topic.to_string(),
                            payload: payload.clone(),
                        });
                    }
                    for route in subscribers {
                        let mut row =
                            NewRow::routed(app, EventKind::Topic, route, payload.clone(), now);
                        row.source = Some(topic.to_string());
                        self.rows.push(row);
                    }
                }
                Emit::Send {
                    queue,
                    payload,
                    delay,
                    idempotency_key,
                } => {
                    if let Some(key) = idempotency_key {
                        let fresh = sql::<DB>(DB::INSERT_KEY)
                            .bind(app.as_str())
                            .bind(queue.as_str())
                            .bind(key.as_str())
                            .bind(now)
                            .execute(&mut *conn)
                            .await
                            .map_err(db)?;
                        if fresh == 0 {
                            continue;
                        }
                    }
                    let unique = TriggerSpec::Queue {
                        queue: queue.clone(),
                    }
                    .unique_key();
                    let consumer = self
                        .routes
                        .get::<DB>(conn, DB::QUEUE_CONSUMER, app, unique.as_deref())
                        .await?
                        .pop();
                    let payload = json(payload)?;
                    // Without a consumer the message waits, parked, until one is created.
                    let mut row = match consumer {
                        Some(route) => NewRow::routed(app, EventKind::Queue, route, payload, now),
                        None => NewRow {
                            parked: true,
                            ..NewRow::unrouted(app, EventKind::Queue, None, payload, now)
                        },
                    };
                    row.source = Some(queue.to_string());
                    let due = delay.map_or(now, |d| after(now, d));
                    (row.available_at, row.scheduled_at) = (due, due);
                    self.rows.push(row);
                }
                Emit::InvokeAsync { script, payload } => {
                    let script = Some(script.to_string());
                    self.rows.push(NewRow::unrouted(
                        app,
                        EventKind::Invoke,
                        script,
                        json(payload)?,
                        now,
                    ));
                }
                Emit::Email { message } => {
                    self.rows.push(NewRow::unrouted(
                        app,
                        EventKind::Email,
                        None,
                        json(message)?,
                        now,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Plan the dead letter of `event` and, unless it is itself a dead-letter event (the
    /// recursion stop), one `dead_letter` event per dead-letter trigger of its app, whose
    /// payload is the dead letter.
    pub(crate) async fn dead_letter<DB: OutboxSql>(
        &mut self,
        conn: &mut DB::Connection,
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
        if event.kind != EventKind::DeadLetter {
            let handlers = self
                .routes
                .get::<DB>(conn, DB::DEAD_LETTER_TRIGGERS, &event.app, None)
                .await?;
            if !handlers.is_empty() {
                let payload = json(&letter)?;
                for route in handlers {
                    let mut row = NewRow::routed(
                        &event.app,
                        EventKind::DeadLetter,
                        route,
                        payload.clone(),
                        now,
                    );
                    // Its handler joins the trace of the event that died.
                    row.trace.clone_from(&event.trace);
                    self.rows.push(row);
                }
            }
        }
        self.letters.push(Letter {
            letter,
            trigger: event.trigger,
        });
        Ok(())
    }
}

/// A trigger an event is routed to.
#[derive(Clone)]
struct Route {
    trigger: TriggerId,
    script: String,
    max_attempts: u32,
}

/// Trigger lookups of one transaction, cached per (statement, app, key): a batch of events
/// publishing to one topic asks once. A commit never changes triggers, so the cache stays
/// true for the whole transaction.
#[derive(Default)]
struct Routes(HashMap<(&'static str, String, String), Vec<Route>>);

impl Routes {
    async fn get<DB: OutboxSql>(
        &mut self,
        conn: &mut DB::Connection,
        statement: &'static str,
        app: &AppName,
        key: Option<&str>,
    ) -> Result<Vec<Route>, StoreError> {
        let cache_key = (
            statement,
            app.to_string(),
            key.unwrap_or_default().to_owned(),
        );
        if let Some(found) = self.0.get(&cache_key) {
            return Ok(found.clone());
        }
        let mut query = sql::<DB>(statement).bind(app.as_str());
        if let Some(key) = key {
            query = query.bind(key);
        }
        let rows = query.fetch_all(conn).await.map_err(db)?;
        let found = rows
            .iter()
            .map(|row| {
                Ok(Route {
                    trigger: TriggerId(row.uuid("id")?),
                    script: row.string("script")?,
                    max_attempts: row.attempts("max_attempts")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.0.insert(cache_key, found.clone());
        Ok(found)
    }
}
