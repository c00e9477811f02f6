//! The scheduler that fires cron triggers on time.
//!
//! What must stay true:
//! - A wake costs what is due, not what exists: each trigger's next fire sits in one
//!   min-queue, a wake pops the due ones only and sleeps until the earliest remaining one.
//!   A trigger's next fire is computed when it is loaded and after it fired, never again
//!   for the others. A schedule without a next fire never enters the queue.
//! - The scheduler never ticks: it sleeps until the earliest next fire, a catalog change
//!   (Triggers or App: only that app's triggers are read again) or shutdown.
//! - A slot is fired through `TriggerRepository::fire_cron`, which moves `last_fired_at`
//!   and inserts the outbox event in one guarded transaction: two schedulers on one
//!   database never both fire a slot.
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use shared::store::{Trigger, TriggerSpec};
use shared::{AppName, CatalogChange, CatalogListener, Store, StoreError, TriggerId};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::schedule::Schedule;

/// How long to wait after the store failed before trying again (doubles up to the cap).
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(60);

/// Fires cron triggers on time. Start it with `start`; subscribe it to the catalog so a
/// trigger created or deleted reaches it at once.
pub struct CronScheduler {
    shared: Arc<Shared>,
    done: CancellationToken,
}

/// What the catalog listener and the scheduler's task share.
struct Shared {
    wake: Notify,
    /// Every trigger must be read again (changes may have been missed).
    reload_all: std::sync::atomic::AtomicBool,
    /// Apps whose triggers changed since the task last read them.
    changed: Mutex<HashSet<AppName>>,
    wakes: AtomicU64,
    evaluations: AtomicU64,
}

/// How much work the scheduler did: a wake is one pass of its loop, an evaluation one
/// next-fire computation for one trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CronCounts {
    pub wakes: u64,
    pub evaluations: u64,
}

impl CronScheduler {
    /// Spawn the scheduler on the current runtime; it runs until `shutdown` is cancelled.
    pub fn start(store: Store, shutdown: CancellationToken) -> Arc<CronScheduler> {
        let scheduler = Arc::new(CronScheduler {
            shared: Arc::new(Shared {
                wake: Notify::new(),
                reload_all: std::sync::atomic::AtomicBool::new(false),
                changed: Mutex::new(HashSet::new()),
                wakes: AtomicU64::new(0),
                evaluations: AtomicU64::new(0),
            }),
            done: CancellationToken::new(),
        });
        let shared = scheduler.shared.clone();
        let done = scheduler.done.clone();
        tokio::spawn(async move {
            run(store, shared, shutdown).await;
            done.cancel();
        });
        scheduler
    }

    /// Resolves once the scheduler's task has ended (after shutdown).
    pub async fn stopped(&self) {
        self.done.cancelled().await;
    }

    /// Read `app`'s triggers again now (what a catalog change does).
    pub fn reload(&self, app: AppName) {
        self.shared
            .changed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(app);
        self.shared.wake.notify_one();
    }

    /// The work done so far.
    pub fn counts(&self) -> CronCounts {
        CronCounts {
            wakes: self.shared.wakes.load(Ordering::Relaxed),
            evaluations: self.shared.evaluations.load(Ordering::Relaxed),
        }
    }
}

#[async_trait]
impl CatalogListener for CronScheduler {
    async fn catalog_changed(&self, change: &CatalogChange) {
        match change {
            CatalogChange::Triggers { app } | CatalogChange::App { app } => {
                self.reload(app.clone());
            }
            CatalogChange::Everything => {
                self.shared.reload_all.store(true, Ordering::Release);
                self.shared.wake.notify_one();
            }
            CatalogChange::Script { .. } | CatalogChange::Limits { .. } => {}
        }
    }
}

async fn run(store: Store, shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut plan = Plan::new(shared.clone());
    // The first pass reads every trigger; later ones only the apps that changed.
    let mut load_all = true;
    let mut retry = RETRY_FIRST;
    loop {
        shared.wakes.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("picloud_cron_wakes_total").increment(1);
        let changed: Vec<AppName> =
            std::mem::take(&mut *shared.changed.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .collect();
        if shared.reload_all.swap(false, Ordering::AcqRel) {
            load_all = true;
        }
        let loaded = if load_all {
            plan.load_all(&store).await
        } else {
            plan.load_apps(&store, &changed).await
        };
        let reload_at = match loaded {
            Ok(()) => {
                load_all = false;
                retry = RETRY_FIRST;
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "cron scheduler could not read triggers");
                shared
                    .changed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(changed);
                let at = Utc::now() + retry;
                retry = (retry * 2).min(RETRY_CAP);
                Some(at)
            }
        };
        plan.fire_due(&store, Utc::now()).await;
        let next = match (plan.next_deadline(), reload_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = shared.wake.notified() => {}
            () = sleep_until_or_forever(next) => {}
        }
    }
}

/// Sleep until the wall-clock time `at`, or forever when there is none.
async fn sleep_until_or_forever(at: Option<DateTime<Utc>>) {
    match at {
        Some(at) => {
            let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::time::sleep_until(tokio::time::Instant::now() + wait).await;
        }
        None => std::future::pending().await,
    }
}

/// The cron triggers this scheduler knows, and when to look at each next.
struct Plan {
    entries: HashMap<TriggerId, Entry>,
    /// `(when, trigger)`, earliest first. An item whose `when` no longer matches its
    /// entry's `look_at` is stale (the trigger was deleted or rescheduled) and skipped.
    queue: BinaryHeap<Reverse<(DateTime<Utc>, TriggerId)>>,
    shared: Arc<Shared>,
}

struct Entry {
    app: AppName,
    schedule: Schedule,
    /// The slot it last fired for (or its creation): only later slots are due.
    since: DateTime<Utc>,
    /// When to look at it next: its next slot, or a retry after a failed fire.
    look_at: DateTime<Utc>,
    retry: Duration,
}

impl Plan {
    fn new(shared: Arc<Shared>) -> Plan {
        Plan {
            entries: HashMap::new(),
            queue: BinaryHeap::new(),
            shared,
        }
    }

    async fn load_all(&mut self, store: &Store) -> Result<(), StoreError> {
        let triggers = store.triggers.list_all().await?;
        let ids: HashSet<TriggerId> = triggers.iter().map(|t| t.id).collect();
        self.entries.retain(|id, _| ids.contains(id));
        for trigger in triggers {
            self.add(trigger);
        }
        self.compact();
        Ok(())
    }

    async fn load_apps(&mut self, store: &Store, apps: &[AppName]) -> Result<(), StoreError> {
        for app in apps {
            let triggers = store.triggers.list(app).await?;
            let ids: HashSet<TriggerId> = triggers.iter().map(|t| t.id).collect();
            self.entries
                .retain(|id, entry| &entry.app != app || ids.contains(id));
            for trigger in triggers {
                self.add(trigger);
            }
        }
        self.compact();
        Ok(())
    }

    /// Drop the stale items of deleted or rescheduled triggers once they outnumber the
    /// live ones, so creating and deleting triggers cannot grow the queue without bound
    /// (a deleted yearly trigger would otherwise sit there until its slot).
    fn compact(&mut self) {
        if self.queue.len() <= 2 * self.entries.len() + 64 {
            return;
        }
        self.queue = self
            .entries
            .iter()
            .map(|(id, entry)| Reverse((entry.look_at, *id)))
            .collect();
    }

    /// Queue a cron trigger it does not know yet at its next slot. Triggers cannot be
    /// edited, so one it knows keeps its place.
    fn add(&mut self, trigger: Trigger) {
        if self.entries.contains_key(&trigger.id) {
            return;
        }
        let Some(schedule) = cron_schedule(&trigger) else {
            return;
        };
        let since = trigger.last_fired_at.unwrap_or(trigger.created_at);
        self.shared.evaluations.fetch_add(1, Ordering::Relaxed);
        let Some(next) = schedule.next_after(since) else {
            tracing::info!(trigger = %trigger.id, app = %trigger.app, "cron trigger never fires again");
            return;
        };
        self.queue.push(Reverse((next, trigger.id)));
        self.entries.insert(
            trigger.id,
            Entry {
                app: trigger.app,
                schedule,
                since,
                look_at: next,
                retry: RETRY_FIRST,
            },
        );
    }

    /// Fire every trigger whose time has come, each for its latest due slot, and queue it
    /// again at its next slot. A trigger whose fire failed does not hold up the others; it
    /// is tried again after a backoff, its slot still due.
    async fn fire_due(&mut self, store: &Store, now: DateTime<Utc>) {
        while let Some(&Reverse((at, id))) = self.queue.peek() {
            if at > now {
                break;
            }
            self.queue.pop();
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            if entry.look_at != at {
                continue;
            }
            self.shared.evaluations.fetch_add(1, Ordering::Relaxed);
            if let Some(slot) = entry.schedule.due(entry.since, now) {
                match store.triggers.fire_cron(id, slot).await {
                    Ok(fired) => {
                        tracing::debug!(trigger = %id, app = %entry.app, %slot, fired, "cron slot due");
                        entry.since = slot;
                        entry.retry = RETRY_FIRST;
                    }
                    Err(e) => {
                        tracing::warn!(trigger = %id, app = %entry.app, error = %e, cause = ?std::error::Error::source(&e), "cron trigger could not fire");
                        entry.look_at = now + entry.retry;
                        entry.retry = (entry.retry * 2).min(RETRY_CAP);
                        self.queue.push(Reverse((entry.look_at, id)));
                        continue;
                    }
                }
            }
            match entry.schedule.next_after(entry.since.max(now)) {
                Some(next) => {
                    entry.look_at = next;
                    self.queue.push(Reverse((next, id)));
                }
                None => {
                    self.entries.remove(&id);
                }
            }
        }
    }

    /// When the earliest queued trigger is due; stale items on top are dropped on the way.
    fn next_deadline(&mut self) -> Option<DateTime<Utc>> {
        while let Some(&Reverse((at, id))) = self.queue.peek() {
            if self.entries.get(&id).is_some_and(|e| e.look_at == at) {
                return Some(at);
            }
            self.queue.pop();
        }
        None
    }
}

/// The parsed schedule of a cron trigger; `None` for other kinds. A schedule stored before
/// it could be validated is logged and skipped, never fired.
fn cron_schedule(trigger: &Trigger) -> Option<Schedule> {
    let TriggerSpec::Cron { schedule, timezone } = &trigger.spec else {
        return None;
    };
    match Schedule::parse(schedule, timezone) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            tracing::warn!(trigger = %trigger.id, app = %trigger.app, error = %e, "cron trigger skipped");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yearly(app: &str) -> Trigger {
        Trigger {
            id: TriggerId::new(),
            app: AppName::parse(app).unwrap(),
            script: shared::ScriptName::parse("tick").unwrap(),
            spec: TriggerSpec::Cron {
                schedule: "0 0 1 1 *".into(),
                timezone: "UTC".into(),
            },
            max_attempts: 1,
            created_at: Utc::now(),
            last_fired_at: None,
            idempotency: None,
        }
    }

    #[test]
    fn deleted_triggers_do_not_pile_up_in_the_queue() {
        let shared = Arc::new(Shared {
            wake: Notify::new(),
            reload_all: std::sync::atomic::AtomicBool::new(false),
            changed: Mutex::new(HashSet::new()),
            wakes: AtomicU64::new(0),
            evaluations: AtomicU64::new(0),
        });
        let mut plan = Plan::new(shared);
        let keep = yearly("shop");
        let kept = keep.id;
        plan.add(keep);
        for _ in 0..1_000 {
            // Created, then deleted by the next reload of its app.
            let gone = yearly("blog");
            plan.add(gone);
            plan.entries.retain(|_, e| e.app.as_str() != "blog");
            plan.compact();
        }
        assert!(
            plan.queue.len() <= 2 * plan.entries.len() + 65,
            "{}",
            plan.queue.len()
        );
        assert_eq!(plan.entries.len(), 1);
        assert!(plan.next_deadline().is_some());
        assert!(plan.entries.contains_key(&kept));
    }
}
