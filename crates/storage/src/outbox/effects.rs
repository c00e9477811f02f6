//! A run's storage effects: applying its KV and blob writes, the rule for when they cannot
//! be committed, and the blob objects a commit leaves behind to remove.
use chrono::{DateTime, TimeDelta, Utc};
use shared::store::{EventCommit, EventOutcome};
use shared::{
    AppName, BlobWrite, Effects, Event, EventId, InvocationRecord, InvocationStatus, StoreError,
};

use super::OutboxSql;

/// When a run's effects could not be committed, the event is tried again after this.
const EFFECTS_RETRY: TimeDelta = TimeDelta::seconds(10);
/// What the owner reads when a run's effects could not be committed.
pub(crate) const EFFECTS_FAILED: &str = "the run's storage writes could not be committed";

/// Apply KV and blob writes on `conn`; returns the object keys no longer referenced.
pub(crate) async fn apply_writes<DB: OutboxSql>(
    conn: &mut DB::Connection,
    app: &AppName,
    effects: &Effects,
) -> Result<Vec<String>, StoreError> {
    crate::repo::kv::apply_kv::<DB>(conn, app, &effects.kv).await?;
    crate::repo::blobs::apply_blobs::<DB>(conn, app, &effects.blobs).await
}

/// When an event whose run's effects could not be committed is tried again: it counts as
/// a failed attempt, so `None` (dead) at its last attempt.
pub(crate) fn retry_failed_effects_at(event: &Event, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (event.attempt < event.max_attempts).then(|| now + EFFECTS_RETRY)
}

/// `retry_failed_effects_at` as the event's outcome.
pub(crate) fn effects_failed(event: &Event, now: DateTime<Utc>) -> EventOutcome {
    let error = EFFECTS_FAILED.to_owned();
    match retry_failed_effects_at(event, now) {
        Some(at) => EventOutcome::Retry { at, error },
        None => EventOutcome::Dead { error },
    }
}

/// The run's record, once its effects could not be committed.
pub(crate) fn failed_record(record: Option<&InvocationRecord>) -> Option<InvocationRecord> {
    record.cloned().map(|mut r| {
        r.status = InvocationStatus::Error;
        r.error = Some(EFFECTS_FAILED.to_owned());
        r
    })
}

/// The objects the `Put` writes of `effects` point at (already stored, not yet named).
pub(crate) fn new_objects(effects: &Effects) -> impl Iterator<Item = String> + '_ {
    effects.blobs.iter().filter_map(|w| match w {
        BlobWrite::Put { object, .. } => Some(object.clone()),
        BlobWrite::Delete { .. } => None,
    })
}

/// Every new object of a batch: all orphans when its transaction fails.
pub(crate) fn batch_new_objects(batch: &[EventCommit]) -> Vec<String> {
    batch
        .iter()
        .filter_map(|c| match &c.outcome {
            EventOutcome::Done { effects } => Some(new_objects(effects)),
            _ => None,
        })
        .flatten()
        .collect()
}

/// What a whole batch did, for after its transaction.
#[derive(Default)]
pub(crate) struct Batch {
    /// Events whose lease was lost: nothing of theirs was done.
    pub(crate) skipped: Vec<EventId>,
    /// Objects no longer referenced once the transaction commits.
    pub(crate) stale: Vec<String>,
    /// New objects of events whose effects were not applied.
    pub(crate) orphans: Vec<String>,
    /// Outbox rows inserted.
    pub(crate) inserted: u64,
    /// Realtime events inserted: per app, its newest id (announced after the commit).
    pub(crate) realtime: Vec<(shared::AppName, u64)>,
}
