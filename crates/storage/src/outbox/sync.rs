//! Sync runs' effects (HTTP requests, tools): one run in a transaction of its own, or a
//! group of runs in one transaction (group commit), each run's part all or nothing.
//!
//! A group first looks its runs' apps up, in name order (on PostgreSQL each lookup locks
//! the app's row until the commit); a run whose app is gone fails alone with
//! `NotFound("app")`. When the other runs have no blob writes and their KV writes merge
//! (`repo::kv::merge`), all of them are tried in one savepoint with the merged writes
//! applied last, as the events' group commit does (on SQLite, runs that only set and
//! delete keys need no savepoint: none of their parts can fail alone); otherwise, or when that savepoint fails,
//! each run gets a savepoint of its own, so a run whose part fails (an increment of a
//! non-integer, a key it no longer holds) fails alone and the others commit. A run alone
//! needs no savepoint: its error abandons the transaction.
use chrono::{DateTime, Utc};
use shared::store::KeyAnswer;
use shared::{AppName, Effects, StoreError};

use super::{OutboxSql, Plan, apply_writes};
use crate::error::db;
use crate::repo::idempotency::answer;
use crate::repo::kv::{Merged, MergedKv, apply_merged, merge};
use crate::sql::sql;

/// One run's effects.
pub(crate) struct Run<'a> {
    pub(crate) app: &'a AppName,
    /// Only to the app created then (`apply_to`); `None`: whichever app has the name now.
    pub(crate) created_at: Option<DateTime<Utc>>,
    pub(crate) effects: &'a Effects,
    /// Stored as its key's answer with the effects.
    pub(crate) answer: Option<&'a KeyAnswer<'a>>,
}

/// What the runs that went in did, for after the commit.
#[derive(Default)]
pub(crate) struct Applied {
    /// Objects no longer referenced once the transaction commits.
    pub(crate) stale: Vec<String>,
    /// Outbox rows inserted.
    pub(crate) inserted: u64,
    /// Realtime events inserted: per app, its newest id.
    pub(crate) published: Vec<(AppName, u64)>,
}

/// Apply `runs` on the caller's transaction: one result per run. The transaction is to be
/// committed when any run's result is `Ok`, and abandoned otherwise (a run alone is not in
/// a savepoint). `Err`: the transaction failed as a whole.
pub(crate) async fn apply<DB: OutboxSql>(
    conn: &mut DB::Connection,
    runs: &[Run<'_>],
    now: DateTime<Utc>,
    applied: &mut Applied,
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut results = lock_apps::<DB>(conn, runs).await?;
    let live: Vec<usize> = (0..runs.len()).filter(|&i| results[i].is_ok()).collect();
    if live.len() > 1 && merged::<DB>(conn, runs, &live, now, applied).await? {
        return Ok(results);
    }
    let mut plan = Plan::default();
    if let [run] = runs {
        if results[0].is_ok() {
            results[0] = one::<DB>(conn, run, &mut plan, now, applied).await;
        }
        return Ok(results);
    }
    for i in live {
        let mark = plan.mark();
        let mut sp = sqlx::Connection::begin(&mut *conn).await.map_err(db)?;
        let mut part = Applied::default();
        match one::<DB>(&mut *sp, &runs[i], &mut plan, now, &mut part).await {
            Ok(()) => {
                sp.commit().await.map_err(db)?;
                applied.stale.extend(part.stale);
                applied.inserted += part.inserted;
                applied.published.extend(part.published);
            }
            Err(error) => {
                sp.rollback().await.map_err(db)?;
                plan.truncate(mark);
                // Ids of realtime events the savepoint took back are not announced.
                plan.published();
                results[i] = Err(error);
            }
        }
    }
    Ok(results)
}

/// Look up (and on PostgreSQL lock) each run's app, in name order so that two groups never
/// wait on each other; `NotFound("app")` for a run whose app is gone.
async fn lock_apps<DB: OutboxSql>(
    conn: &mut DB::Connection,
    runs: &[Run<'_>],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by_key(|&i| (runs[i].app.as_str(), runs[i].created_at));
    let mut results: Vec<Result<(), StoreError>> = runs.iter().map(|_| Ok(())).collect();
    let mut last: Option<(&str, Option<DateTime<Utc>>, bool)> = None;
    for i in order {
        let (app, created_at) = (runs[i].app.as_str(), runs[i].created_at);
        let found = match last {
            Some((a, at, found)) if a == app && at == created_at => found,
            _ => {
                let query = match created_at {
                    None => sql::<DB>(DB::LOCK_APP).bind(app),
                    Some(at) => sql::<DB>(DB::LOCK_APP_IS).bind(app).bind(at),
                };
                let found = query
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db)?
                    .is_some();
                last = Some((app, created_at, found));
                found
            }
        };
        if !found {
            results[i] = Err(StoreError::NotFound("app"));
        }
    }
    Ok(results)
}

/// The `live` runs in one savepoint, their KV writes merged and applied last. `false`, with
/// nothing done, when a run has blob writes, the writes do not merge, or anything fails:
/// the caller then goes run by run (and meets the error again in the run it belongs to).
async fn merged<DB: OutboxSql>(
    conn: &mut DB::Connection,
    runs: &[Run<'_>],
    live: &[usize],
    now: DateTime<Utc>,
    applied: &mut Applied,
) -> Result<bool, StoreError> {
    if live.iter().any(|&i| !runs[i].effects.blobs.is_empty()) {
        return Ok(false);
    }
    let Some(writes) = merge(live.iter().map(|&i| (runs[i].app, &runs[i].effects.kv[..]))) else {
        return Ok(false);
    };
    if DB::BACKEND == "sqlite" && only_sets_and_deletes(runs, live, &writes) {
        // SQLite has one writer: nothing else writes meanwhile, and the runs' apps were
        // found in this transaction, so no run's part can fail alone; an error is the
        // transaction's (every run fails, as each would in a savepoint of its own).
        apply_merged::<DB>(conn, &writes).await?;
        return Ok(true);
    }
    let mut plan = Plan::default();
    let mut sp = sqlx::Connection::begin(&mut *conn).await.map_err(db)?;
    let result = async {
        for &i in live {
            let Run {
                app,
                effects,
                answer: key,
                ..
            } = &runs[i];
            let trace = effects.trace.as_deref();
            plan.emits::<DB>(&mut *sp, app, &effects.emitted, trace, now)
                .await?;
            if let Some(key) = key {
                answer::<DB>(&mut *sp, key).await?;
            }
        }
        let inserted = plan.insert::<DB>(&mut *sp, now).await?;
        apply_merged::<DB>(&mut *sp, &writes).await?;
        Ok::<_, StoreError>(inserted)
    }
    .await;
    match result {
        Ok(inserted) => {
            sp.commit().await.map_err(db)?;
            applied.inserted += inserted;
            applied.published.extend(plan.published());
            Ok(true)
        }
        Err(error) => {
            sp.rollback().await.map_err(db)?;
            tracing::debug!(error = ?error, "a merged group rolled back; committing it run by run");
            Ok(false)
        }
    }
}

/// Whether the `live` runs only set and delete keys: no increments (which can meet a
/// non-integer), no emitted events, no keys' answers (which can find their key gone).
fn only_sets_and_deletes(runs: &[Run<'_>], live: &[usize], writes: &MergedKv<'_>) -> bool {
    live.iter()
        .all(|&i| runs[i].answer.is_none() && runs[i].effects.emitted.is_empty())
        && writes
            .keys()
            .iter()
            .all(|(_, _, write)| matches!(write, Merged::Last(_)))
}

/// One run's part: its KV and blob writes, its emitted events, its key's answer.
async fn one<DB: OutboxSql>(
    conn: &mut DB::Connection,
    run: &Run<'_>,
    plan: &mut Plan,
    now: DateTime<Utc>,
    applied: &mut Applied,
) -> Result<(), StoreError> {
    let stale = apply_writes::<DB>(conn, run.app, run.effects).await?;
    let trace = run.effects.trace.as_deref();
    plan.emits::<DB>(conn, run.app, &run.effects.emitted, trace, now)
        .await?;
    let inserted = plan.insert::<DB>(conn, now).await?;
    if let Some(key) = run.answer {
        answer::<DB>(conn, key).await?;
    }
    applied.stale.extend(stale);
    applied.inserted += inserted;
    applied.published.extend(plan.published());
    Ok(())
}
