//! The outbox, once for both backends: every asynchronous event is a row here until a run
//! of it commits.
//!
//! What must stay true:
//! - a finished event's row is deleted in the same transaction as its storage effects and
//!   its invocation record, and only while the run's claim still holds the row: the row's
//!   lease token is the one that claim stamped on it (`Event::lease`). That is what makes
//!   storage effects exactly-once per event: a run whose row was claimed again after its
//!   lease ran out (by any node, its own node id included) commits nothing;
//! - emitted events become rows inside the transaction that commits the run's writes,
//!   routed by the app's triggers as they are at that moment (`plan`): a topic reaches
//!   every subscriber, a queue message its consumer or, without one, waits parked; a
//!   repeated idempotency key sends nothing;
//! - a sync run's answer to an HTTP idempotency key is stored in the transaction that
//!   commits its effects (`apply_answered`), or neither is committed;
//! - sync runs committed together (`apply_group`, `sync`) share one transaction, and each
//!   run's part is still all or nothing: one that cannot be committed fails alone;
//! - a publish on a topic exposed to browsers also becomes a realtime event in the same
//!   transaction, its id taken from the app's counter (`plan`), and is announced on the
//!   bus only after the commit;
//! - a dead event leaves a dead letter and, unless it is itself a dead-letter event (the
//!   recursion stop), one `dead_letter` event per dead-letter trigger of its app;
//! - one event whose KV or blob writes cannot be applied is retried on its own, or dead at
//!   its last attempt (`effects`), and never aborts the rest of its batch;
//! - a claim stamps each row it takes with a fresh lease token and the end of the lease, so
//!   a leased row is not due and an expired lease makes it due again (both backends leave
//!   `available_at` and read `lease_expires_at`, so claims move no index entry); a
//!   claimed row that does not decode becomes a dead letter that can be read and says
//!   why (`row`), and never stalls the claim.
//!
//! The rules live here. A backend supplies its statements and the four things it does its
//! own way (`OutboxSql`): claiming, committing a batch, inserting planned rows, and telling
//! when the next row is due.
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use shared::bus::{Channel, Heard, NotificationBus};
use shared::store::{App, EventCommit, KeyAnswer, ObjectStore, OutboxRepository, SyncCommit};
use shared::{AppName, Effects, Event, EventId, LeaseToken, StoreError};
use sqlx::Pool;
use tokio::sync::Notify;

use crate::error::db;
use crate::now;
use crate::repo::{
    blobs::BlobsSql, idempotency::IdempotencySql, invocations::InvocationsSql, kv::KvSql,
};
use crate::sql::{Cols, Db, sql};

mod effects; // a run's KV and blob writes; when they fail; the objects they leave
mod plan; // emitted events and dead letters become rows: routing, fan-out, parking, keys
mod row; // a claimed row back into an event, or what of it a dead letter keeps
mod sync; // sync runs' effects: alone, or a group in one transaction

pub(crate) use effects::{
    Batch, EFFECTS_FAILED, apply_writes, effects_failed, failed_record, new_objects,
    retry_failed_effects_at,
};
pub(crate) use plan::{Letter, NewRow, Plan};
pub(crate) use row::CorruptKind;
#[cfg(feature = "conformance")]
pub(crate) use row::UNREADABLE_EVENT;

/// Max attempts of rows no trigger routes: `invoke_async`, email, parked queue messages.
pub(crate) const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Longest `queue::send` delay (and lease) kept as asked; longer ones are cut to this.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `now + delay`, with absurd delays cut to `MAX_DELAY`.
pub(crate) fn after(now: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    let delay = TimeDelta::from_std(delay.min(MAX_DELAY)).unwrap_or(TimeDelta::zero());
    now.checked_add_signed(delay).unwrap_or(now)
}

/// A value as the JSON text the outbox and dead-letter columns take.
pub(crate) fn json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(StoreError::backend)
}

/// The same error again, for each run of a group whose transaction failed as a whole (the
/// backend's detail as text: it is only logged).
fn again(error: &StoreError) -> StoreError {
    match error {
        StoreError::NotFound(what) => StoreError::NotFound(what),
        StoreError::Conflict(what) => StoreError::Conflict(what),
        StoreError::Busy => StoreError::Busy,
        StoreError::Backend(source) => StoreError::Backend(source.to_string().into()),
    }
}

/// The outbox's statements, with their arguments in placeholder order, and what a backend
/// does its own way.
pub(crate) trait OutboxSql: KvSql + BlobsSql + InvocationsSql + IdempotencySql {
    /// (app): a row while the app exists, kept from deletion until the commit.
    const LOCK_APP: &'static str;
    /// (app, created_at): the same, only for the app created then (not one deleted and
    /// made again under its name).
    const LOCK_APP_IS: &'static str;
    /// (app, topic) -> id, script, max_attempts of its subscribers, oldest first.
    const TOPIC_SUBSCRIBERS: &'static str;
    /// (app, unique_key) -> id, script, max_attempts of the queue's consumer.
    const QUEUE_CONSUMER: &'static str;
    /// (app) -> id, script, max_attempts of its dead-letter triggers, oldest first.
    const DEAD_LETTER_TRIGGERS: &'static str;
    /// (app, queue, key, created_at): remember an idempotency key; no row if it was there.
    const INSERT_KEY: &'static str;
    /// (id, node, token): delete a row `node` holds under the claim `token`.
    const DELETE_HELD: &'static str;
    /// (app) -> n: the app's rows.
    const PENDING: &'static str;
    /// (app, topic) -> a row when the topic is exposed to browsers.
    const TOPIC_EXPOSED: &'static str;
    /// (app, n) -> last_id: move the app's last realtime id on by n (creating its row),
    /// keeping the row locked until the transaction ends.
    const TAKE_REALTIME_IDS: &'static str;
    /// (app, id, topic, payload, created_at)
    const INSERT_REALTIME: &'static str;

    /// Lease up to `limit` due rows to `node` for `lease`, stamping each with `token`; the
    /// claimed rows, with the columns `row::row_to_event` reads.
    fn claim(
        pool: &Pool<Self>,
        node: &str,
        token: LeaseToken,
        limit: u32,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<Self::Row>, StoreError>> + Send;

    /// Every part of `batch`, on the caller's transaction; what it did goes into `acc`. A
    /// part is done only if its row is still held by `node` under the part's
    /// `event.lease`; an event without a lease is never held.
    fn commit_batch<'a>(
        conn: &'a mut Self::Connection,
        node: &'a str,
        batch: &'a [EventCommit],
        now: DateTime<Utc>,
        acc: &'a mut Batch,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a;

    /// Commit `batch` in one statement, without a transaction of ours, when it is simple
    /// enough (PostgreSQL: every event done under its claim, no blob writes, no emitted
    /// events, KV writes that merge); `false`, with nothing of it done, otherwise or when
    /// that fails, and the caller commits the batch in a transaction (`commit_batch`).
    /// SQLite: never (its commit is local; a transaction costs no round trips).
    fn commit_at_once<'a>(
        pool: &'a Pool<Self>,
        node: &'a str,
        batch: &'a [EventCommit],
    ) -> impl Future<Output = bool> + Send + 'a {
        let _ = (pool, node, batch);
        std::future::ready(false)
    }

    /// Insert planned rows and dead letters (`Plan::insert`); returns how many rows went in.
    fn insert(
        conn: &mut Self::Connection,
        rows: &[NewRow],
        letters: &[Letter],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// When the next row becomes due, on this node's clock.
    fn next_due_at(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>, StoreError>> + Send;
}

pub(crate) struct Outbox<DB: Db> {
    pool: Pool<DB>,
    /// Where blob bytes live: objects a commit unreferenced are removed after it.
    objects: Arc<dyn ObjectStore>,
    /// Shared with triggers and dead letters: woken after every local commit that inserted
    /// rows, and for other nodes' inserts (outbox notices on the bus) once listening.
    inserted: Arc<Notify>,
    /// The one notification bus: other nodes' inserts arrive as `Channel::Outbox` notices.
    bus: Arc<dyn NotificationBus>,
    /// Set once the bus is heard (on the first `inserted()`).
    listening: OnceLock<()>,
    /// SQLite has one writer: the outbox's write transactions (a run's effects and what
    /// it emits, claims, group commits) take turns here, first come first served, rather
    /// than meet at SQLite's lock, whose busy handler sleeps 1, 2, 5, 10, 15... ms between
    /// tries: the tail of publish -> handler start. `None` on PostgreSQL (row locks).
    writes: Option<tokio::sync::Mutex<()>>,
}

impl<DB: OutboxSql> Outbox<DB> {
    pub(crate) fn new(
        pool: Pool<DB>,
        objects: Arc<dyn ObjectStore>,
        inserted: Arc<Notify>,
        bus: Arc<dyn NotificationBus>,
    ) -> Self {
        Self {
            pool,
            objects,
            inserted,
            bus,
            listening: OnceLock::new(),
            writes: (DB::BACKEND == "sqlite").then(|| tokio::sync::Mutex::new(())),
        }
    }

    /// This outbox's turn to write (SQLite), held until the transaction ends.
    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.writes {
            Some(writes) => Some(writes.lock().await),
            None => None,
        }
    }

    /// Commit sync runs' effects in one transaction (`sync`); one result per run. After
    /// the commit: wake the dispatcher, announce realtime events, remove the objects the
    /// runs unreferenced; the new objects of runs that did not commit are removed.
    async fn apply_runs(&self, runs: &[sync::Run<'_>]) -> Vec<Result<(), StoreError>> {
        let now = now();
        let mut applied = sync::Applied::default();
        let turn = self.write_turn().await;
        let outcome = async {
            let mut tx = DB::begin_write(&self.pool).await?;
            let results = sync::apply::<DB>(&mut tx, runs, now, &mut applied).await?;
            if results.iter().any(Result::is_ok) {
                tx.commit().await.map_err(db)?;
            }
            Ok::<_, StoreError>(results)
        }
        .await;
        drop(turn);
        let results = match outcome {
            Ok(results) => results,
            Err(error) => {
                let copies: Vec<_> = runs.iter().skip(1).map(|_| again(&error)).collect();
                std::iter::once(error).chain(copies).map(Err).collect()
            }
        };
        if results.iter().any(Result::is_ok) {
            if applied.inserted > 0 {
                self.inserted.notify_one();
            }
            self.announce(&applied.published).await;
            self.remove_objects(&applied.stale).await;
        }
        let orphans: Vec<String> = runs
            .iter()
            .zip(&results)
            .filter(|(_, result)| result.is_err())
            .flat_map(|(run, _)| new_objects(run.effects))
            .collect();
        self.remove_objects(&orphans).await;
        results
    }

    /// One run's effects, in a transaction of its own.
    async fn apply_one(&self, run: sync::Run<'_>) -> Result<(), StoreError> {
        self.apply_runs(&[run]).await.pop().unwrap_or(Ok(()))
    }

    /// Turn a claimed row that does not decode into a dead letter that can be read. Best
    /// effort: failing here must not fail the claim of the good rows; the row is claimed
    /// (and dead-lettered) again after its lease.
    async fn dead_letter_unreadable(&self, row: &DB::Row, node: &str, token: LeaseToken) {
        let result = async {
            let (id, letter) = row::salvage(row, now())?;
            let _turn = self.write_turn().await;
            let mut tx = DB::begin_write(&self.pool).await?;
            let deleted = sql::<DB>(DB::DELETE_HELD)
                .bind(id.0)
                .bind(node)
                .bind(token.0)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            if deleted == 1 {
                Plan::letter(letter).insert::<DB>(&mut tx, now()).await?;
            }
            tx.commit().await.map_err(db)
        }
        .await;
        if let Err(error) = result {
            tracing::error!(error = ?error, "could not dead-letter an unreadable outbox row");
        }
    }

    /// Tell every node's streams that realtime events were committed: `<app> <newest id>`
    /// per app. A lost notice delays nothing for long: the next one, or a `Missed`, makes
    /// the streams read everything after what they have.
    async fn announce(&self, published: &[(AppName, u64)]) {
        for (app, last) in published {
            let notice = format!("{app} {last}");
            if let Err(error) = self.bus.notify(Channel::Realtime, &notice).await {
                tracing::warn!(error = ?error, "a realtime notice could not be sent");
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

#[async_trait]
impl<DB: OutboxSql> OutboxRepository for Outbox<DB> {
    async fn claim_due(
        &self,
        node: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<Event>, StoreError> {
        // Fresh for every claim: only this claim's runs can finish the rows it takes.
        let token = LeaseToken::new();
        let turn = self.write_turn().await;
        let rows = DB::claim(&self.pool, node, token, limit, lease).await;
        drop(turn);
        let rows = rows?;
        // One row that does not decode must not stall every claim: it becomes a dead
        // letter, the others run.
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            match row::row_to_event(row) {
                Ok(event) => events.push(Event {
                    lease: Some(token),
                    ..event
                }),
                Err(error) => {
                    tracing::error!(%error, "an outbox row that does not decode is dead-lettered");
                    self.dead_letter_unreadable(row, node, token).await;
                }
            }
        }
        events.sort_by_key(|e| (e.scheduled_at, e.id));
        Ok(events)
    }

    async fn commit(&self, node: &str, batch: &[EventCommit]) -> Result<Vec<EventId>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let now = now();
        let mut acc = Batch::default();
        let turn = self.write_turn().await;
        let mut result = Ok(());
        // A connection found lost is tried again once: every row is held under its claim's
        // token, so a commit whose answer was lost after it committed holds nothing the
        // second time (its events come back as not held), and nothing is done twice.
        // `uncertain`: an attempt met a lost connection, so it may have committed with
        // only its answer lost; its new blob objects may then be referenced, and its
        // inserted events wait to be claimed.
        let mut uncertain = false;
        for _attempt in 0..2 {
            acc = Batch::default();
            result = async {
                if DB::commit_at_once(&self.pool, node, batch).await {
                    // Every event held and done: nothing inserted, announced or removed.
                    return Ok(());
                }
                let mut tx = DB::begin_write(&self.pool).await?;
                DB::commit_batch(&mut tx, node, batch, now, &mut acc).await?;
                tx.commit().await.map_err(db)
            }
            .await;
            match &result {
                Err(e) if crate::error::is_lost_connection(e) => {
                    uncertain = true;
                    tracing::warn!(error = ?e, "a batch met a lost database connection; trying it again");
                }
                _ => break,
            }
        }
        drop(turn);
        // After an uncertain attempt, new objects stay where they may be referenced: a
        // leaked object, never a blob row without its object.
        if let Err(e) = result {
            if !uncertain {
                self.remove_objects(&effects::batch_new_objects(batch))
                    .await;
            }
            return Err(e);
        }
        if acc.inserted > 0 || uncertain {
            self.inserted.notify_one();
        }
        self.announce(&acc.realtime).await;
        self.remove_objects(&acc.stale).await;
        if !uncertain {
            self.remove_objects(&acc.orphans).await;
        }
        Ok(acc.skipped)
    }

    async fn apply(&self, app: &AppName, effects: &Effects) -> Result<(), StoreError> {
        self.apply_one(sync::Run {
            app,
            created_at: None,
            effects,
            answer: None,
        })
        .await
    }

    async fn apply_to(&self, app: &App, effects: &Effects) -> Result<(), StoreError> {
        self.apply_one(sync::Run {
            app: &app.name,
            created_at: Some(app.created_at),
            effects,
            answer: None,
        })
        .await
    }

    async fn apply_answered(
        &self,
        app: &App,
        effects: &Effects,
        answer: &KeyAnswer<'_>,
    ) -> Result<(), StoreError> {
        self.apply_one(sync::Run {
            app: &app.name,
            created_at: Some(app.created_at),
            effects,
            answer: Some(answer),
        })
        .await
    }

    async fn apply_group(&self, group: &[SyncCommit<'_>]) -> Vec<Result<(), StoreError>> {
        let runs: Vec<sync::Run<'_>> = group
            .iter()
            .map(|c| sync::Run {
                app: &c.app.name,
                created_at: Some(c.app.created_at),
                effects: c.effects,
                answer: c.answer,
            })
            .collect();
        self.apply_runs(&runs).await
    }

    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        DB::next_due_at(&self.pool).await
    }

    async fn inserted(&self) {
        self.listening.get_or_init(|| {
            // Another node's insert, or notices that may have been lost: look.
            let mut heard = self.bus.subscribe();
            let inserted = self.inserted.clone();
            tokio::spawn(async move {
                while let Some(heard) = heard.recv().await {
                    if matches!(
                        heard,
                        Heard::Missed
                            | Heard::Notice {
                                channel: Channel::Outbox,
                                ..
                            }
                    ) {
                        inserted.notify_one();
                    }
                }
            });
        });
        self.inserted.notified().await;
    }

    async fn pending(&self, app: &AppName) -> Result<u64, StoreError> {
        sql::<DB>(DB::PENDING)
            .bind(app.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(db)?
            .count("n")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use shared::{AppName, Effects, Emit, EventKind, ScriptName};
    use sqlx::{Pool, Postgres, Sqlite};

    use super::OutboxSql;
    use crate::sql::sql;
    use crate::testing::TestUrl;

    #[tokio::test]
    async fn a_row_whose_kind_or_script_cannot_be_read_becomes_a_readable_dead_letter_on_sqlite() {
        let db = TestUrl::sqlite();
        a_row_whose_kind_or_script_cannot_be_read_becomes_a_readable_dead_letter::<Sqlite>(&db.url)
            .await;
        db.close().await;
    }

    #[tokio::test]
    async fn a_row_whose_kind_or_script_cannot_be_read_becomes_a_readable_dead_letter_on_postgres()
    {
        let db = TestUrl::postgres().await;
        a_row_whose_kind_or_script_cannot_be_read_becomes_a_readable_dead_letter::<Postgres>(
            &db.url,
        )
        .await;
        db.close().await;
    }

    /// Such a row used to be dead-lettered column for column, which made a dead letter the
    /// list could not decode either: the app's whole list failed.
    async fn a_row_whose_kind_or_script_cannot_be_read_becomes_a_readable_dead_letter<
        DB: OutboxSql,
    >(
        url: &str,
    ) {
        let store = crate::connect(url).await.expect("connect");
        let pool = Pool::<DB>::connect(url).await.expect("pool");
        let app = AppName::parse("shop").expect("app");
        store.apps.create(&app).await.expect("app");
        let invoke = |script: &str, n: i32| Emit::InvokeAsync {
            script: ScriptName::parse(script).expect("script"),
            payload: json!(n),
        };
        let emitted = vec![invoke("a", 1), invoke("b", 2), invoke("c", 3)];
        let effects = Effects {
            emitted,
            ..Effects::default()
        };
        store.outbox.apply(&app, &effects).await.expect("apply");
        // What a newer version, or a damaged database, could leave behind.
        for corrupt in [
            "UPDATE outbox SET kind = 'webhook' WHERE script = 'a'",
            "UPDATE outbox SET script = 'Not A Name' WHERE script = 'b'",
        ] {
            sql::<DB>(corrupt)
                .execute(&pool)
                .await
                .expect("corrupt a row");
        }

        let events = store
            .outbox
            .claim_due("n1", 10, Duration::from_secs(60))
            .await
            .expect("the claim does not fail");
        assert_eq!(events.len(), 1, "the readable row runs");
        assert_eq!(events[0].payload, json!(3));
        let mut letters = store
            .dead_letters
            .list(&app, None, 10)
            .await
            .expect("the dead letters can be read");
        letters.sort_by_key(|l| l.payload.as_i64());
        assert_eq!(letters.len(), 2);
        let (kind, script) = (&letters[0], &letters[1]);

        assert_eq!(kind.payload, json!(1), "what could be read is kept");
        assert_eq!(kind.kind, EventKind::Invoke);
        assert_eq!(
            kind.script, None,
            "an unknown kind keeps no script: a replay runs nothing"
        );
        assert!(
            kind.error.contains("\"webhook\" is unknown"),
            "{}",
            kind.error
        );

        assert_eq!(script.payload, json!(2));
        assert_eq!(script.kind, EventKind::Invoke);
        assert_eq!(script.script, None);
        assert!(
            script.error.contains("\"Not A Name\" is not valid"),
            "{}",
            script.error
        );
        assert_eq!(script.attempts, 1);

        let fetched = store.dead_letters.get(&app, kind.id).await.expect("get");
        assert_eq!(fetched.as_ref(), Some(kind));
        assert_eq!(store.outbox.pending(&app).await.expect("pending"), 1);
        pool.close().await;
        store.health.close().await;
    }
}
