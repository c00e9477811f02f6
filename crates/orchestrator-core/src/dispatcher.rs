//! The event dispatcher: claim due outbox rows, run them, commit them in groups.
//!
//! Two tasks and one run task per event:
//! - the claimer leases up to `batch_size` due rows (never more than the free in-flight
//!   slots), spawns one run per row, and when the outbox has nothing due it sleeps in
//!   `wake::idle` (insert, commit, next due time or shutdown: no tick);
//! - each run hands the event to the executor (or the mailer for `email`) and turns the
//!   result into an `EventCommit`: `Done` with the run's effects, `Retry` with backoff,
//!   or `Dead` after the last attempt;
//! - the committer takes every finished event that piled up while the previous commit ran
//!   and commits them in ONE `OutboxRepository::commit` (group commit), then broadcasts
//!   their invocation records and frees their slots. SQLite has one group commit at a
//!   time (one writer); PostgreSQL up to `POSTGRES_COMMITTERS` side by side, never two
//!   that write one KV key: events that write a key a commit in flight writes wait for it
//!   and go together in the next (`keys`), so a hot key's row lock is not a queue.
//!
//! Metrics: `picloud_events_total{kind,outcome}` (done, retry, dead, lost, commit_failed),
//! `picloud_event_delay_seconds` (scheduled_at -> start of a first attempt; later attempts
//! would measure the backoff), `picloud_event_leases_lost_total`,
//! `picloud_event_overloaded_total`, `picloud_event_commit_failures_total`,
//! `picloud_invocation_records_sampled_total{source="event"}` (successful runs past the
//! node's record budget, `recorded_successes_per_sec`: their records are not stored).
//!
//! What must stay true:
//! - an event's effects, the deletion of its row and its invocation record are committed
//!   together or not at all; a run whose commit fails leaves the row leased, and it runs
//!   again when the lease expires (so storage effects stay exactly-once);
//! - a slot is held from claim until commit, so at most `max_in_flight` events are leased
//!   by this node and the executor's queue is not flooded. An `Overloaded` answer is
//!   rare; the event is released (`EventOutcome::Release`) to run about 100 ms later,
//!   records no invocation, and its attempt counter does not move;
//! - an event whose app (or script) is at its concurrency cap is released the same way
//!   (`picloud_event_deferred_total`), due when the app should have room (`limits`), so
//!   one app's events never hold every script thread;
//! - a record is broadcast only after its commit, never for an event whose lease was lost;
//! - `finish` stops claiming, lets the claimed events run to their end, commits them, and
//!   only then returns.
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use shared::metrics::LocalHistogram;
use shared::store::{EventCommit, EventOutcome};
use shared::{
    EmailMessage, Event, EventId, EventKind, ExecError, ExecutorClient, FailureKind, Invocation,
    InvocationId, InvocationInput, InvocationRecord, InvocationStatus, ScriptName, Store,
    StoreError,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::limits::LimitTable;
use crate::mailer::MailSender;
use crate::recorder::{FailureGate, SuccessSampler};
use crate::retry::{after_failure, backoff};
use crate::wake::{self, Wake};

mod keys; // the KV keys of the commits in flight
use keys::Keys;

/// How a node dispatches events.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// This node's name on the leases it takes; unique per running node.
    pub node_id: String,
    /// Rows claimed and committed per store call at most (default 100).
    pub batch_size: u32,
    /// How long a claimed row stays ours; past it, any node may claim it again (default 60 s).
    pub lease: Duration,
    /// Events leased by this node at once, from claim to commit (default 128).
    pub max_in_flight: usize,
    /// The retry delay's base: the ceiling after the first failed attempt (default 1 s).
    pub backoff_base: Duration,
    /// The retry delay's cap (default 5 min).
    pub backoff_max: Duration,
    /// The log lines of one event's record keep at most this many message bytes; the
    /// rest is cut and marked (0: no bound; default 16 KiB).
    pub max_record_log_bytes: usize,
    /// Successful event runs recorded per second at most on this node; past it their
    /// records are sampled out (counted in
    /// `picloud_invocation_records_sampled_total{source="event"}`), as HTTP runs' are. 0
    /// records every success (default 1,000). Failures are bounded per app instead.
    pub recorded_successes_per_sec: u32,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            node_id: format!("node-{}", uuid::Uuid::new_v4().simple()),
            batch_size: 100,
            lease: Duration::from_secs(60),
            max_in_flight: 128,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            max_record_log_bytes: 16 * 1024,
            recorded_successes_per_sec: 1_000,
        }
    }
}

/// The error text of an event that has no script to run.
const NO_HANDLER: &str = "no handler";
/// Why an event whose every run was cut off by the end of its process is a dead letter.
const INTERRUPTED: &str = "every attempt was interrupted: no run of the event was committed \
     before its lease ran out (the process running it stopped, or its database was unreachable)";
/// An executor at capacity is retried after about this long (not a failure of the script).
const OVERLOAD_DELAY: Duration = Duration::from_millis(100);
/// Group commits running at once on PostgreSQL (SQLite: one).
const POSTGRES_COMMITTERS: usize = 4;
/// A commit that meets a busy database is tried this many times more.
const COMMIT_RETRIES: u32 = 3;

/// What a run task needs; shared by every run.
struct Context {
    store: Store,
    executor: Arc<dyn ExecutorClient>,
    mailer: Arc<dyn MailSender>,
    config: DispatchConfig,
    /// The app's failure-record budget, shared with its HTTP failures.
    failures: FailureGate,
    /// This node's budget of successful runs' records.
    successes: SuccessSampler,
    /// Every app's limits (shared with the HTTP path) and the deferral pace.
    limits: Arc<LimitTable>,
    /// Each run's span continues the trace its event was emitted in.
    tracing: crate::trace::Tracing,
}

/// A finished run on its way to the committer, with the slot it holds until its commit.
struct Finished {
    commit: EventCommit,
    _slot: OwnedSemaphorePermit,
}

/// The running dispatcher of one node.
pub(crate) struct Dispatcher {
    shutdown: CancellationToken,
    /// The in-flight slots, to report how many are taken.
    slots: Arc<Semaphore>,
    max_in_flight: usize,
    claimer: Mutex<Option<JoinHandle<()>>>,
    committer: Mutex<Option<JoinHandle<()>>>,
}

impl Dispatcher {
    /// Spawns the claimer and the committer on the current runtime. `recorded` receives
    /// each event invocation record after its commit.
    // The dispatcher's collaborators, each owned elsewhere; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        store: Store,
        executor: Arc<dyn ExecutorClient>,
        mailer: Arc<dyn MailSender>,
        mut config: DispatchConfig,
        recorded: broadcast::Sender<InvocationRecord>,
        failures: FailureGate,
        limits: Arc<LimitTable>,
        tracing: crate::trace::Tracing,
    ) -> Self {
        config.batch_size = config.batch_size.max(1);
        config.max_in_flight = config.max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        let successes = SuccessSampler::new(config.recorded_successes_per_sec, "event");
        let ctx = Arc::new(Context {
            store,
            executor,
            mailer,
            config,
            failures,
            successes,
            limits,
            tracing,
        });
        let shutdown = CancellationToken::new();
        let slots = Arc::new(Semaphore::new(ctx.config.max_in_flight));
        let committed = Arc::new(Notify::new());
        let (done, finished) = mpsc::channel(ctx.config.max_in_flight);
        let committer = tokio::spawn(commit_loop(
            ctx.clone(),
            finished,
            recorded,
            committed.clone(),
        ));
        let max_in_flight = ctx.config.max_in_flight;
        let claimer = tokio::spawn(claim_loop(
            ctx,
            slots.clone(),
            committed,
            done,
            shutdown.clone(),
        ));
        Dispatcher {
            shutdown,
            slots,
            max_in_flight,
            claimer: Mutex::new(Some(claimer)),
            committer: Mutex::new(Some(committer)),
        }
    }

    /// Events claimed and not yet committed (a slot is held from claim until commit;
    /// during a claim, the slots it asked for).
    pub(crate) fn in_flight(&self) -> usize {
        self.max_in_flight
            .saturating_sub(self.slots.available_permits())
    }

    /// Stop claiming, wait for the claimed events to run and be committed.
    pub(crate) async fn finish(&self) {
        self.shutdown.cancel();
        for handle in [&self.claimer, &self.committer] {
            let task = handle.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(task) = task
                && let Err(error) = task.await
            {
                tracing::error!(error = ?error, "a dispatcher task failed");
            }
        }
    }
}

/// Claims while there is due work and free slots; sleeps in `wake::idle` otherwise.
async fn claim_loop(
    ctx: Arc<Context>,
    slots: Arc<Semaphore>,
    committed: Arc<Notify>,
    done: mpsc::Sender<Finished>,
    shutdown: CancellationToken,
) {
    let max_in_flight = ctx.config.max_in_flight;
    let batch = usize::try_from(ctx.config.batch_size)
        .unwrap_or(usize::MAX)
        .min(max_in_flight);
    // Under load, wait for a useful number of free slots rather than claiming one by one.
    let low_water = (max_in_flight / 2).clamp(1, batch);
    let mut store_errors = 0u32;
    loop {
        let mut permits = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            permits = slots.clone().acquire_many_owned(low_water as u32) => match permits {
                Ok(permits) => permits,
                Err(_closed) => break,
            },
        };
        let more = slots.available_permits().min(batch - low_water);
        if more > 0
            && let Ok(extra) = slots.clone().try_acquire_many_owned(more as u32)
        {
            permits.merge(extra);
        }
        let want = permits.num_permits();
        let limit = u32::try_from(want).unwrap_or(u32::MAX);
        let claimed = ctx
            .store
            .outbox
            .claim_due(&ctx.config.node_id, limit, ctx.config.lease)
            .await;
        let events = match claimed {
            Ok(events) => {
                store_errors = 0;
                events
            }
            Err(error) => {
                drop(permits);
                store_errors = store_errors.saturating_add(1);
                metrics::counter!("picloud_dispatcher_store_errors_total").increment(1);
                tracing::error!(error = ?error, "could not claim outbox rows");
                let pause = backoff(
                    store_errors,
                    Duration::from_millis(50),
                    Duration::from_secs(5),
                    1.0,
                );
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let claimed_all = events.len() >= want;
        for event in events {
            let Some(slot) = permits.split(1) else {
                // More rows than asked for: cannot happen; the row's lease will expire.
                tracing::error!(event = %event.id, "the outbox returned more rows than claimed");
                break;
            };
            let ctx = ctx.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let commit = run(&ctx, event).await;
                // The committer outlives every sender; a send fails only if it panicked.
                let _ = done
                    .send(Finished {
                        commit,
                        _slot: slot,
                    })
                    .await;
            });
        }
        drop(permits);
        if claimed_all {
            continue;
        }
        if shutdown.is_cancelled() {
            break;
        }
        if idle(&ctx, &committed, &shutdown).await == Wake::Shutdown {
            break;
        }
    }
}

/// Sleeps in `wake::idle` until there may be due rows to claim (an insert, the next due
/// time) or shutdown. A commit of this node only moves due times (a retry, a released
/// row; what it inserts wakes as an insert), so after one the next due time is read again
/// and the sleep goes on until then: a claim is a write, and on SQLite one for nothing
/// after every group commit would take the write lock from the next publish.
async fn idle(ctx: &Context, committed: &Notify, shutdown: &CancellationToken) -> Wake {
    loop {
        let next_due = match ctx.store.outbox.next_due_at().await {
            Ok(next) => next,
            Err(error) => {
                tracing::error!(error = ?error, "could not read the next due time of the outbox");
                Some(Utc::now() + chrono::Duration::seconds(1))
            }
        };
        let why = wake::idle(ctx.store.outbox.as_ref(), committed, next_due, shutdown).await;
        tracing::trace!(reason = ?why, "dispatcher woke up");
        if why != Wake::Committed {
            return why;
        }
    }
}

/// `picloud_event_delay_seconds`: from an event's due time to its first run, counted per
/// thread (`shared::metrics`), not looked up by name per event.
static EVENT_DELAY: LazyLock<LocalHistogram> =
    LazyLock::new(|| LocalHistogram::new("picloud_event_delay_seconds"));

/// Runs one event to the point where its commit is known.
async fn run(ctx: &Context, event: Event) -> EventCommit {
    if event.attempt > event.max_attempts {
        return interrupted(event);
    }
    if event.attempt <= 1 {
        let delay = (Utc::now() - event.scheduled_at)
            .to_std()
            .unwrap_or(Duration::ZERO);
        EVENT_DELAY.record(delay.as_secs_f64());
    }
    match (event.kind, event.script.clone()) {
        (EventKind::Email, _) => send_mail(ctx, event).await,
        (_, Some(script)) => run_script(ctx, event, script).await,
        (_, None) => EventCommit {
            event,
            outcome: EventOutcome::Dead {
                error: NO_HANDLER.into(),
            },
            record: None,
        },
    }
}

/// The outcome of a failed attempt, with a fresh jitter.
fn failed(ctx: &Context, event: &Event, error: String) -> EventOutcome {
    let jitter = rand::rng().random::<f64>();
    after_failure(
        event,
        error,
        Utc::now(),
        ctx.config.backoff_base,
        ctx.config.backoff_max,
        jitter,
    )
}

async fn run_script(ctx: &Context, event: Event, script: ScriptName) -> EventCommit {
    let limits = ctx.limits.resolve(&event.app, &script).invocation;
    let capped = limits.app_concurrency.is_some() || limits.script_concurrency.is_some();
    let invocation = Invocation {
        id: InvocationId::new(),
        app: event.app.clone(),
        script: script.clone(),
        input: InvocationInput::Event(event.clone()),
        request_id: None,
        limits,
    };
    let id = invocation.id;
    let span = ctx.tracing.start(
        format!("{} {}/{script}", event.kind.as_str(), event.app),
        SpanKind::Consumer,
        event.trace.as_deref(),
        vec![
            KeyValue::new("picloud.app", event.app.to_string()),
            KeyValue::new("picloud.script", script.to_string()),
            KeyValue::new("picloud.invocation_id", id.to_string()),
            KeyValue::new("picloud.event_id", event.id.to_string()),
            KeyValue::new("picloud.event_kind", event.kind.as_str()),
            KeyValue::new("picloud.attempt", i64::from(event.attempt)),
        ],
    );
    let requested_at = Utc::now();
    let clock = std::time::Instant::now();
    // A run gives up well inside its lease, so its outcome is committed before the row
    // could be claimed again by anyone.
    let run_limit = ctx.config.lease.mul_f64(0.75);
    let ran = tokio::time::timeout(run_limit, ctx.executor.execute(invocation)).await;
    let mut record = InvocationRecord {
        id,
        app: event.app.clone(),
        script,
        version: None,
        trigger: event.kind.as_str().into(),
        status: InvocationStatus::Error,
        started_at: requested_at,
        duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
        http_status: None,
        summary: summary(&event),
        logs: Vec::new(),
        error: None,
        request_id: None,
        attempt: Some(event.attempt),
        trace_id: None,
    };
    let outcome = match ran {
        Ok(Ok(execution)) => {
            if capped {
                ctx.limits.deferrals.observe(
                    &event.app,
                    execution.duration,
                    std::time::Instant::now(),
                );
            }
            record.version = Some(execution.version);
            record.started_at = execution.started_at;
            record.duration_ms = u64::try_from(execution.duration.as_millis()).unwrap_or(u64::MAX);
            record.logs = execution.logs;
            crate::recorder::cap_logs(&mut record.logs, ctx.config.max_record_log_bytes);
            match execution.result {
                Ok(_output) => {
                    record.status = InvocationStatus::Ok;
                    let mut effects = execution.effects;
                    // What it emitted continues its trace.
                    effects.trace = Some(span.traceparent());
                    EventOutcome::Done { effects }
                }
                Err(failure) => {
                    if failure.kind == FailureKind::Timeout {
                        record.status = InvocationStatus::Timeout;
                    }
                    record.error = Some(failure.message.clone());
                    failed(ctx, &event, failure.message)
                }
            }
        }
        Ok(Err(ExecError::Overloaded)) => {
            // Not the script's failure, and no run: retry soon, keep no record.
            let jitter = rand::rng().random_range(0.5..=1.0);
            let delay = chrono::Duration::from_std(OVERLOAD_DELAY.mul_f64(jitter))
                .unwrap_or(chrono::Duration::zero());
            metrics::counter!("picloud_event_overloaded_total").increment(1);
            return EventCommit {
                event,
                outcome: EventOutcome::Release {
                    at: Utc::now() + delay,
                },
                record: None,
            };
        }
        Ok(Err(ExecError::ConcurrencyLimit { limit, .. })) => {
            // The app (or script) has its cap of runs: not a failure, and no run. It comes
            // back when the app should have room, with the same attempt.
            let delay = ctx
                .limits
                .deferrals
                .delay(&event.app, limit, std::time::Instant::now());
            let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero());
            metrics::counter!("picloud_event_deferred_total").increment(1);
            return EventCommit {
                event,
                outcome: EventOutcome::Release {
                    at: Utc::now() + delay,
                },
                record: None,
            };
        }
        Ok(Err(error)) => {
            if matches!(
                error,
                ExecError::Store(_) | ExecError::WorkerLost | ExecError::ExecutorLost
            ) {
                tracing::error!(error = ?error, event = %event.id, "an event could not be run");
            }
            let text = error.to_string();
            record.error = Some(text.clone());
            failed(ctx, &event, text)
        }
        Err(_elapsed) => {
            let text = format!(
                "no answer within the lease of {} s",
                ctx.config.lease.as_secs()
            );
            record.status = InvocationStatus::Timeout;
            record.error = Some(text.clone());
            failed(ctx, &event, text)
        }
    };
    if let Some(error) = &record.error {
        span.fail(error.clone());
    }
    // The event's outcome is committed either way.
    let keep = keep_record(ctx, &event, &record);
    if keep {
        // Only a stored record needs its trace id as text.
        record.trace_id = Some(span.trace_id());
    }
    drop(span);
    EventCommit {
        event,
        outcome,
        record: keep.then_some(record),
    }
}

/// Whether the record of an event's run is stored: a success within this node's budget
/// of successful records (`recorded_successes_per_sec`, shared by all apps, like HTTP
/// successes') or its app's first of the second past it, a failure within its app's
/// failure budget (shared with its HTTP failures). One that is not is counted (sampled
/// out, or bounded) and the run's outcome is committed all the same.
fn keep_record(ctx: &Context, event: &Event, record: &InvocationRecord) -> bool {
    if record.status == InvocationStatus::Ok {
        ctx.successes.admit_app(&event.app)
    } else {
        ctx.failures.admit(&event.app)
    }
}

/// An event claimed again after `max_attempts` claims that never finished (a run that
/// crashed or hung its process, or whose commit failed until its lease ran out: a claim
/// moves the attempt counter past an unfinished one): it goes to the dead letters without running again, so a poison event cannot
/// crash-loop a node or a cluster.
fn interrupted(mut event: Event) -> EventCommit {
    // Every attempt it had was used (and cut off); the dead letter says so.
    event.attempt = event.max_attempts;
    tracing::error!(event = %event.id, app = %event.app, "an event whose runs never finished is dead-lettered");
    metrics::counter!("picloud_events_interrupted_total").increment(1);
    let record = event.script.clone().map(|script| InvocationRecord {
        id: InvocationId::new(),
        app: event.app.clone(),
        script,
        version: None,
        trigger: event.kind.as_str().into(),
        status: InvocationStatus::Error,
        started_at: Utc::now(),
        duration_ms: 0,
        http_status: None,
        summary: summary(&event),
        logs: Vec::new(),
        error: Some(INTERRUPTED.into()),
        request_id: None,
        attempt: Some(event.attempt),
        trace_id: None,
    });
    EventCommit {
        event,
        outcome: EventOutcome::Dead {
            error: INTERRUPTED.into(),
        },
        record,
    }
}

/// `topic orders`, `queue jobs`, `cron */5 * * * *`, `invoke`, `dead_letter`.
fn summary(event: &Event) -> String {
    match &event.source {
        Some(source) => format!("{} {source}", event.kind.as_str()),
        None => event.kind.as_str().to_owned(),
    }
}

/// The message of an `email` event: the payload itself, or under `message`.
fn email_message(payload: &serde_json::Value) -> Option<EmailMessage> {
    serde_json::from_value(payload.clone()).ok().or_else(|| {
        payload
            .get("message")
            .and_then(|m| serde_json::from_value(m.clone()).ok())
    })
}

/// Email events have no script; their records go under this name (trigger `email`).
const EMAIL_RECORD_SCRIPT: &str = "email";

async fn send_mail(ctx: &Context, event: Event) -> EventCommit {
    let started_at = Utc::now();
    let clock = std::time::Instant::now();
    let message = email_message(&event.payload);
    let outcome = match &message {
        // It will never parse: no point in retrying.
        None => EventOutcome::Dead {
            error: "the email message is malformed".into(),
        },
        Some(message) => match ctx.mailer.send(&event.app, message).await {
            Ok(()) => EventOutcome::Done {
                effects: shared::Effects::default(),
            },
            // A bad address or a 5xx reply will not get better: no retries.
            Err(error) if error.is_permanent() => EventOutcome::Dead {
                error: error.to_string(),
            },
            Err(error) => {
                tracing::warn!(error = ?error, event = %event.id, "an email could not be sent");
                failed(ctx, &event, error.to_string())
            }
        },
    };
    let error = match &outcome {
        EventOutcome::Dead { error } | EventOutcome::Retry { error, .. } => Some(error.clone()),
        EventOutcome::Done { .. } | EventOutcome::Release { .. } => None,
    };
    let summary = match message
        .as_ref()
        .and_then(|m| m.to.first().map(|to| (to, m.to.len())))
    {
        Some((to, 1)) => format!("email to {to}"),
        Some((to, n)) => format!("email to {to} and {} more", n - 1),
        None => "email".to_owned(),
    };
    let record = ScriptName::parse(EMAIL_RECORD_SCRIPT)
        .ok()
        .map(|script| InvocationRecord {
            id: InvocationId::new(),
            app: event.app.clone(),
            script,
            version: None,
            trigger: event.kind.as_str().into(),
            status: if error.is_some() {
                InvocationStatus::Error
            } else {
                InvocationStatus::Ok
            },
            started_at,
            duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
            http_status: None,
            summary,
            logs: Vec::new(),
            error,
            request_id: None,
            attempt: Some(event.attempt),
            trace_id: None,
        })
        // Within the budgets of a script's record: successes per node, failures per app.
        .filter(|r| keep_record(ctx, &event, r));
    EventCommit {
        event,
        outcome,
        record,
    }
}

fn outcome_label(outcome: &EventOutcome) -> &'static str {
    match outcome {
        EventOutcome::Done { .. } => "done",
        EventOutcome::Retry { .. } => "retry",
        EventOutcome::Dead { .. } => "dead",
        EventOutcome::Release { .. } => "released",
    }
}

/// Commits whatever finished, in groups; broadcasts records after their commit. While
/// every committer is busy, finished events pile up and go into the next group. Events
/// that write a KV key a commit in flight writes wait for it (`keys`), and the events that
/// finish meanwhile join them; the others start beside it.
async fn commit_loop(
    ctx: Arc<Context>,
    mut finished: mpsc::Receiver<Finished>,
    recorded: broadcast::Sender<InvocationRecord>,
    committed: Arc<Notify>,
) {
    let limit = usize::try_from(ctx.config.batch_size).unwrap_or(usize::MAX);
    let committers = committers(&ctx.store);
    let busy = Arc::new(Semaphore::new(committers));
    let keys = Arc::new(Keys::default());
    // Finished events not yet in a commit, in the order they finished.
    let mut pending: Vec<Finished> = Vec::with_capacity(limit.min(1024));
    let mut open = true;
    'turns: loop {
        let Ok(turn) = busy.clone().acquire_owned().await else {
            break;
        };
        let (group, hold) = loop {
            let room = limit.saturating_sub(pending.len());
            if pending.is_empty() {
                if !open || finished.recv_many(&mut pending, limit).await == 0 {
                    break 'turns;
                }
            } else if open && room > 0 {
                // What finished while this batch waited goes with it.
                while pending.len() < limit {
                    match finished.try_recv() {
                        Ok(more) => pending.push(more),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
            }
            if let Some(ready) = keys.take_ready(&mut pending, |f| &f.commit) {
                break ready;
            }
            // Every pending event writes a key a commit in flight writes: wait for a
            // commit to end, or for an event that may not have to wait.
            let room = limit.saturating_sub(pending.len());
            tokio::select! {
                () = keys.freed() => {}
                n = finished.recv_many(&mut pending, room), if open && room > 0 => {
                    open = n > 0;
                }
            }
        };
        let ctx = ctx.clone();
        let recorded = recorded.clone();
        let committed = committed.clone();
        tokio::spawn(async move {
            commit_finished(&ctx, group, &recorded).await;
            drop(hold);
            committed.notify_one();
            drop(turn);
        });
    }
    // Wait for the commits still running.
    let all = u32::try_from(committers).unwrap_or(u32::MAX);
    if busy.acquire_many(all).await.is_err() {
        tracing::error!("the dispatcher's commit slots were closed");
    }
}

/// How many group commits may run at once: SQLite has one writer, PostgreSQL commits
/// faster with a few connections working side by side.
fn committers(store: &Store) -> usize {
    match store.health.backend() {
        "sqlite" => 1,
        _ => POSTGRES_COMMITTERS,
    }
}

/// Commits one group, then broadcasts its records and counts its outcomes; the group's
/// slots are freed when it is dropped at the end.
async fn commit_finished(
    ctx: &Context,
    group: Vec<Finished>,
    recorded: &broadcast::Sender<InvocationRecord>,
) {
    let mut batch = Vec::with_capacity(group.len());
    let mut slots = Vec::with_capacity(group.len());
    for Finished { commit, _slot } in group {
        batch.push(commit);
        slots.push(_slot);
    }
    let (lost, failed) = commit_group(ctx, &batch).await;
    // `picloud_events_total` is counted once per kind and outcome of the group: a metric
    // looked up by name and labels costs more than the rest of an event's bookkeeping.
    let mut counts: Vec<((&'static str, &'static str), u64)> = Vec::new();
    for commit in batch {
        let id = commit.event.id;
        let outcome = if lost.contains(&id) {
            tracing::warn!(event = %id, "lease lost before commit; another node runs it");
            metrics::counter!("picloud_event_leases_lost_total").increment(1);
            "lost"
        } else if failed.contains(&id) {
            "commit_failed"
        } else {
            if let Some(record) = commit.record {
                // No subscriber is fine.
                let _ = recorded.send(record);
            }
            outcome_label(&commit.outcome)
        };
        let labels = (commit.event.kind.as_str(), outcome);
        match counts.iter_mut().find(|(l, _)| *l == labels) {
            Some((_, n)) => *n += 1,
            None => counts.push((labels, 1)),
        }
    }
    for ((kind, outcome), n) in counts {
        metrics::counter!("picloud_events_total", "kind" => kind, "outcome" => outcome)
            .increment(n);
    }
    drop(slots);
}

/// Commits `batch` in one transaction; if that fails, each event on its own, so one bad
/// event cannot hold back the others. Returns the ids whose lease was lost, and those
/// that could not be committed (their rows stay leased and run again after the lease).
async fn commit_group(ctx: &Context, batch: &[EventCommit]) -> (Vec<EventId>, Vec<EventId>) {
    match commit_with_retries(ctx, batch).await {
        Ok(lost) => (lost, Vec::new()),
        Err((error, ids)) if batch.len() == 1 => {
            log_commit_failure(&error, ids.len());
            (Vec::new(), ids)
        }
        Err((error, ids)) => {
            tracing::warn!(error = ?error, events = ids.len(), "group commit failed; committing one by one");
            let mut lost = Vec::new();
            let mut failed = Vec::new();
            for commit in batch {
                match commit_with_retries(ctx, std::slice::from_ref(commit)).await {
                    Ok(more) => lost.extend(more),
                    Err((error, ids)) => {
                        log_commit_failure(&error, ids.len());
                        failed.extend(ids);
                    }
                }
            }
            (lost, failed)
        }
    }
}

fn log_commit_failure(error: &StoreError, events: usize) {
    metrics::counter!("picloud_event_commit_failures_total").increment(events as u64);
    tracing::error!(error = ?error, events, "could not commit finished events; they run again after their lease");
}

/// One `commit` call, tried again while the database is busy.
async fn commit_with_retries(
    ctx: &Context,
    batch: &[EventCommit],
) -> Result<Vec<EventId>, (StoreError, Vec<EventId>)> {
    let mut attempt = 0;
    loop {
        match ctx.store.outbox.commit(&ctx.config.node_id, batch).await {
            Ok(lost) => return Ok(lost),
            Err(StoreError::Busy) if attempt < COMMIT_RETRIES => {
                attempt += 1;
                let pause = backoff(
                    attempt,
                    Duration::from_millis(20),
                    Duration::from_secs(1),
                    1.0,
                );
                tokio::time::sleep(pause).await;
            }
            Err(error) => return Err((error, batch.iter().map(|c| c.event.id).collect())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::AppName;

    pub(super) fn event(kind: EventKind, source: Option<&str>) -> Event {
        Event {
            id: EventId::new(),
            app: AppName::parse("shop").unwrap(),
            kind,
            script: None,
            trigger: None,
            source: source.map(str::to_owned),
            payload: serde_json::Value::Null,
            attempt: 1,
            max_attempts: 5,
            scheduled_at: Utc::now(),
            created_at: Utc::now(),
            lease: None,
            trace: None,
        }
    }

    #[test]
    fn a_summary_names_the_kind_and_the_topic_or_queue() {
        assert_eq!(
            summary(&event(EventKind::Topic, Some("orders"))),
            "topic orders"
        );
        assert_eq!(summary(&event(EventKind::Invoke, None)), "invoke");
    }

    #[test]
    fn an_email_payload_is_the_message_itself_or_under_message() {
        let direct = serde_json::json!({"to": ["a@example.com"], "subject": "hi", "text": "t"});
        let wrapped = serde_json::json!({"message": direct.clone()});
        assert_eq!(email_message(&direct).map(|m| m.subject), Some("hi".into()));
        assert_eq!(
            email_message(&wrapped).map(|m| m.to),
            Some(vec!["a@example.com".into()])
        );
        assert!(email_message(&serde_json::json!({"to": 3})).is_none());
    }

    #[test]
    fn the_default_config_has_the_documented_values() {
        let config = DispatchConfig::default();
        assert_eq!(config.batch_size, 100);
        assert_eq!(config.lease, Duration::from_secs(60));
        assert_eq!(config.backoff_max, Duration::from_secs(300));
        assert!(config.node_id.starts_with("node-"));
        assert_ne!(config.node_id, DispatchConfig::default().node_id);
    }
}
