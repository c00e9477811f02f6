use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{App, KeyAnswer, StoreError};
use crate::event::{Effects, Event};
use crate::ids::{AppName, EventId};
use crate::invocation::InvocationRecord;

/// How one claimed event ended. Committed with `OutboxRepository::commit`.
#[derive(Debug, Clone)]
pub struct EventCommit {
    pub event: Event,
    pub outcome: EventOutcome,
    /// The run's invocation record (written in the same transaction).
    pub record: Option<InvocationRecord>,
}

#[derive(Debug, Clone)]
pub enum EventOutcome {
    /// Delete the row and apply the run's effects.
    Done { effects: Effects },
    /// Keep the row: `attempt + 1`, due again at `at`, lease released, `error` kept as last error.
    Retry { at: DateTime<Utc>, error: String },
    /// The event did not run (the executor was at capacity): put the row back, due at
    /// `at`, lease released, its attempt counter unchanged. Carries no record.
    Release { at: DateTime<Utc> },
    /// Delete the row and insert a dead letter with `error` and the attempts made. Unless
    /// the event is itself of kind `dead_letter` (recursion stop), also insert one
    /// `dead_letter` event per `dead_letter` trigger of the app, whose payload is the dead
    /// letter as JSON (`DeadLetter` serialized).
    Dead { error: String },
}

/// One sync run's effects in a group commit (`OutboxRepository::apply_group`): what
/// `apply_to` commits, with `answer` what `apply_answered` commits.
#[derive(Debug, Clone, Copy)]
pub struct SyncCommit<'a> {
    pub app: &'a App,
    pub effects: &'a Effects,
    pub answer: Option<&'a KeyAnswer<'a>>,
}

#[async_trait]
pub trait OutboxRepository: Send + Sync {
    /// Claim up to `limit` due rows (available_at <= now, no live lease), oldest due first;
    /// a row whose lease ran out never waits behind rows that became due after it
    /// (PostgreSQL takes such rows first, SQLite at their own due time). They are leased
    /// to `node` for `lease`, each stamped with this claim's fresh token (`Event::lease`).
    /// PostgreSQL: `FOR UPDATE SKIP LOCKED`, so two nodes never claim the same row; an
    /// expired lease can be claimed again by anyone.
    async fn claim_due(
        &self,
        node: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<Event>, StoreError>;

    /// Commit a batch of finished events in ONE transaction (group commit). Each event's
    /// part is all-or-nothing and happens only if its row is still held by `node` under
    /// the event's lease token (a row claimed again since, by any node, is not); the ids
    /// of events whose lease was lost (and so were skipped) are returned.
    async fn commit(&self, node: &str, batch: &[EventCommit]) -> Result<Vec<EventId>, StoreError>;

    /// Apply a sync run's effects (KV, blobs, emitted events) in one transaction, to
    /// whichever app has the name now (tests and tools; a run commits with `apply_to`).
    ///
    /// # Errors
    /// `NotFound("app")` when the app was deleted meanwhile.
    async fn apply(&self, app: &AppName, effects: &Effects) -> Result<(), StoreError>;

    /// Apply a sync run's effects like `apply`, only to the app the run was routed to:
    /// `app.created_at` tells it from an app deleted and created again under the same name
    /// meanwhile, which gets none of them.
    ///
    /// # Errors
    /// `NotFound("app")` when that app was deleted meanwhile (even if another has its name).
    async fn apply_to(&self, app: &App, effects: &Effects) -> Result<(), StoreError>;

    /// `apply_to`, and in the same transaction store `answer` as its key's answer (even
    /// when `effects` is empty): the effects and the answer a replay sends are committed
    /// together or not at all.
    ///
    /// # Errors
    /// As `apply_to`; `Conflict("idempotency key")` when the run no longer holds its key
    /// (it expired and another request took it): then nothing is committed.
    async fn apply_answered(
        &self,
        app: &App,
        effects: &Effects,
        answer: &KeyAnswer<'_>,
    ) -> Result<(), StoreError>;

    /// Several sync runs' effects in ONE transaction (group commit), each run's part all or
    /// nothing: a run whose part cannot be committed (its app is gone, an increment meets a
    /// non-integer, its key is no longer held) gets the error `apply_to` or
    /// `apply_answered` would have given it, and the others commit. One result per run, in
    /// order; an `Ok` is committed when this returns.
    async fn apply_group(&self, group: &[SyncCommit<'_>]) -> Vec<Result<(), StoreError>>;

    /// When the next row becomes due: `None` when the outbox has no claimable row. A row
    /// under a live lease counts as due when its lease expires.
    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Resolves when rows may have been inserted since the last call: on this node at
    /// once; on PostgreSQL also when another node inserted (LISTEN/NOTIFY). Never polls.
    /// Spurious wake-ups are allowed; a wake-up that happened before the call is kept.
    async fn inserted(&self);

    /// Rows in the outbox for `app` (all states), for tests and metrics.
    async fn pending(&self, app: &AppName) -> Result<u64, StoreError>;
}
