//! The executor: a sandbox, a compiled-script cache and a pool of script threads behind
//! `ExecutorClient`, `ScriptChecker` and `CatalogListener`.
//!
//! Before a job is queued it takes a slot against its app's and script's concurrency caps
//! (`running`); a full queue or a capped app is refused at once, never waited on.
//!
//! An HTTP invocation of a compiled script that may run inline (`Compiled::runs_inline`)
//! is first tried on the calling runtime worker (`Sandbox::try_inline`): a small script
//! answers without the hand-off to a script thread and back. The try is bounded (a few
//! thousand operations, a millisecond, shallow calls); its host context serves only the
//! calls that buffer an effect and read nothing (`kv::set`, `kv::delete`,
//! `pubsub::publish`, `queue::send`): a call that reads the app's data, waits or runs
//! another script stops it before doing anything. A try that is stopped, runs out of its
//! budget or panics is discarded whole (its log, its output, its buffered effects), the
//! script is marked to go straight to a script thread from then on, and the invocation
//! runs there from the start, as it would have without the try. So a kept try is a run
//! whose effects (if it answered) are those a script thread would have buffered, under
//! the same caps and tighter limits than the script's own; they are committed by the
//! caller once, like a script thread's. A long or looping script holds a runtime worker
//! for one budget, once per deployed version.
//!
//! A catalog change of a script (deploy, rollback) compiles its active version at once,
//! before the deploy answers, so the first request of the new version runs warm. On a
//! script thread, a cache miss (a script not run since the server started, or after
//! changes may have been missed) loads the active version with `rt.block_on` (this
//! thread is not a runtime worker, so blocking it is the point) and compiles it once.
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use async_trait::async_trait;
use chrono::Utc;
use metrics::counter;
use rhai::AST;
use shared::Effects;
use shared::metrics::{LocalCounter, LocalHistogram, Tally};
use shared::store::ScriptVersion;
use shared::{
    AppName, CatalogChange, CatalogListener, CompileError, ExecError, Execution, ExecutorClient,
    FailureKind, Invocation, InvocationInput, ScriptChecker, ScriptFailure, ScriptName, Store,
    StoreError,
};
use tokio::sync::oneshot;

use crate::cache::{AstCache, Compiled};
use crate::context::{self, Host};
use crate::limits::Limits;
use crate::pool::{Pool, SubmitError};
use crate::running::{Running, Slot};
use crate::sandbox::Sandbox;
use crate::ssrf::OutboundClient;

#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Script threads; one per core is what the reference box was measured with.
    pub threads: usize,
    /// Invocations that may wait for a thread; beyond that `execute` answers `Overloaded`.
    pub queue_capacity: usize,
    pub limits: Limits,
    /// What `http::*` may reach (the SSRF policy) and its timeouts and caps.
    pub outbound: crate::ssrf::OutboundConfig,
    /// The only `from` addresses `email::send` accepts (compared without case); a message
    /// without `from` goes out from the mailer's default sender.
    pub email_senders: Vec<String>,
    /// The longest life `realtime::token` gives a token; a longer `ttl` is cut to it.
    pub max_realtime_token_ttl: std::time::Duration,
}

/// The default of `ExecutorConfig::max_realtime_token_ttl`: one hour.
pub const DEFAULT_MAX_REALTIME_TOKEN_TTL: std::time::Duration =
    std::time::Duration::from_secs(3600);

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            queue_capacity: 256,
            limits: Limits::default(),
            outbound: crate::ssrf::OutboundConfig::default(),
            email_senders: Vec::new(),
            max_realtime_token_ttl: DEFAULT_MAX_REALTIME_TOKEN_TTL,
        }
    }
}

struct Job {
    invocation: Invocation,
    reply: oneshot::Sender<Result<Execution, ExecError>>,
    /// Counts the job against its app's and script's caps until it ends.
    slot: Slot,
}

/// What the script threads share; host calls reach it through the run's context.
pub(crate) struct Runner {
    pub(crate) sandbox: Sandbox,
    cache: AstCache,
    pub(crate) store: Store,
    /// The runtime that owns the store's pools; script threads `block_on` it.
    pub(crate) rt: tokio::runtime::Handle,
    /// The `from` addresses `email::send` accepts.
    pub(crate) email_senders: Vec<String>,
    /// The one client of `http::*` (`None` when it could not be built).
    pub(crate) outbound: Option<OutboundClient>,
    /// The cap on a realtime token's ttl.
    pub(crate) max_realtime_token_ttl: std::time::Duration,
}

pub struct Executor {
    runner: Arc<Runner>,
    pool: Pool<Job>,
    /// Capped invocations held per app and script.
    running: Running,
    /// Invocations answered by an inline try since the start.
    inline_runs: Tally,
}

impl Executor {
    /// Build the engine and start the script threads. Host calls reach `store` through
    /// `rt` (a handle of the runtime that owns the store's pools).
    pub fn start(
        config: ExecutorConfig,
        store: Store,
        rt: tokio::runtime::Handle,
    ) -> Arc<Executor> {
        let runner = Arc::new(Runner {
            sandbox: Sandbox::new(&config.limits),
            cache: AstCache::default(),
            store,
            rt,
            email_senders: config.email_senders.clone(),
            outbound: crate::host::http::client(&config.outbound),
            max_realtime_token_ttl: config.max_realtime_token_ttl,
        });
        let worker_runner = Arc::clone(&runner);
        let pool = Pool::start(
            "picloud-script",
            config.threads,
            config.queue_capacity,
            &[
                config.limits.stack_bytes(),
                usize::try_from(config.limits.call_stack_bytes()).unwrap_or(usize::MAX),
            ],
            move |job: Job| {
                let Job {
                    invocation,
                    reply,
                    slot,
                } = job;
                // The caller gave up while the job waited (e.g. the client went away).
                if reply.is_closed() {
                    return;
                }
                let result = worker_runner.run(&invocation);
                // Free the slot before answering: the caller may queue the app's next job
                // as soon as it has the answer.
                drop(slot);
                if let Err(Ok(execution)) = reply.send(result) {
                    // The caller left during the run: nobody will commit its effects, so
                    // the objects its blob puts wrote go now.
                    let objects = context::objects_of(&execution.effects);
                    context::delete_objects(&worker_runner, &invocation.app, objects);
                }
            },
        );
        Arc::new(Executor {
            runner,
            pool,
            running: Running::default(),
            inline_runs: Tally::default(),
        })
    }

    /// A compile checker without script threads, for a node that only runs the manager.
    pub fn checker(limits: Limits) -> Sandbox {
        Sandbox::new(&limits)
    }

    /// Invocations waiting for a script thread right now (the nodes list shows it).
    pub fn queue_depth(&self) -> usize {
        self.pool.queued()
    }

    /// Invocations answered inline, on a runtime worker, since the start (also counted in
    /// `picloud_script_inline_runs_total{outcome="kept"}`).
    pub fn inline_runs(&self) -> u64 {
        self.inline_runs.sum()
    }

    /// The invocation run inline, when it may be tried and the try is kept (the module
    /// doc); `None` sends it to a script thread. Not after `shutdown`: then nothing runs.
    fn try_inline(&self, inv: &Invocation) -> Option<Execution> {
        if !matches!(inv.input, InvocationInput::Http(_)) {
            return None;
        }
        let compiled = self.runner.cache.get(&inv.app, &inv.script)?;
        if !compiled.runs_inline() || !self.pool.is_open() {
            return None;
        }
        let started_at = crate::run_state::utc_now();
        // Read once: the try's time budget counts from here too.
        let clock = Instant::now();
        let limits = self.runner.limits_of(inv);
        let m = &*RUN_METRICS;
        // The try's context serves only the calls that buffer effects (no blob puts: no
        // objects to delete when it is discarded, which would block this worker); built
        // only for a script that names one.
        let host = compiled.buffers.then(|| {
            Box::new(Host::new(
                Arc::clone(&self.runner),
                inv.app.clone(),
                inv.script.clone(),
                Arc::clone(&limits),
            ))
        });
        let Some((out, effects)) = self
            .runner
            .sandbox
            .try_inline(&compiled, &inv.input, &limits, host, clock)
        else {
            compiled.stop_inline();
            m.inline_discarded.increment(1);
            return None;
        };
        let duration = clock.elapsed();
        // Its answer stands even when it ran past the budget between two clock reads;
        // a version that keeps doing so goes to the script threads.
        compiled.overran(duration > crate::sandbox::INLINE_MAX_TIME);
        m.inline_kept.increment(1);
        self.inline_runs.add(1);
        let execution = Execution {
            version: compiled.version,
            started_at,
            duration,
            logs: out.logs,
            result: out.result,
            effects,
        };
        self.runner.record(&execution);
        Some(execution)
    }

    /// Stop taking jobs and join the script threads; a running script ends by its
    /// wall-clock limit at the latest. Idempotent.
    ///
    /// This blocks the calling thread. On a current-thread runtime, call it off the
    /// runtime (`spawn_blocking`): a script thread that is loading a script waits for
    /// that runtime.
    pub fn shutdown(&self) {
        self.pool.shutdown();
    }
}

impl Runner {
    fn run(self: &Arc<Self>, inv: &Invocation) -> Result<Execution, ExecError> {
        let started_at = Utc::now();
        let clock = Instant::now();
        let compiled = match self.load(&inv.app, &inv.script) {
            Ok(compiled) => compiled,
            Err(Loaded::Missing(e)) => {
                let m = &*RUN_METRICS;
                match e {
                    ExecError::ScriptNotFound(_) => m.not_found.increment(1),
                    _ => m.store_error.increment(1),
                }
                return Err(e);
            }
            Err(Loaded::Broken { version, error }) => {
                tracing::warn!(app = %inv.app, script = %inv.script, version, "the active version does not compile");
                return Ok(self.finish(Execution {
                    version,
                    started_at,
                    duration: clock.elapsed(),
                    logs: Vec::new(),
                    result: Err(ScriptFailure {
                        kind: FailureKind::Error,
                        message: format!("the active version does not compile: {error}"),
                    }),
                    effects: Effects::default(),
                }));
            }
        };
        let limits = self.limits_of(inv);
        let host = Host::new(
            Arc::clone(self),
            inv.app.clone(),
            inv.script.clone(),
            Arc::clone(&limits),
        );
        let (out, effects) = self
            .sandbox
            .run_in(&compiled, &inv.input, &limits, Some(host));
        Ok(self.finish(Execution {
            version: compiled.version,
            started_at,
            duration: clock.elapsed(),
            logs: out.logs,
            result: out.result,
            effects,
        }))
    }

    /// The run's limits: the server's, or its app's and script's overrides over them.
    fn limits_of(&self, inv: &Invocation) -> Arc<Limits> {
        let server = self.sandbox.shared_limits();
        if inv.limits.run.is_empty() {
            return Arc::clone(server);
        }
        Arc::new(server.with_overrides(&inv.limits.run))
    }

    fn finish(&self, execution: Execution) -> Execution {
        self.record(&execution);
        execution
    }

    /// Count a run by its outcome and record its duration.
    fn record(&self, execution: &Execution) {
        let m = &*RUN_METRICS;
        let outcome = match &execution.result {
            Ok(_) => &m.ok,
            Err(f) => match f.kind {
                FailureKind::Error => &m.error,
                FailureKind::LimitExceeded => &m.limit_exceeded,
                FailureKind::Timeout => &m.timeout,
            },
        };
        outcome.increment(1);
        m.duration.record(execution.duration.as_secs_f64());
    }

    /// The compiled active version, from the cache or loaded and compiled now.
    pub(crate) fn load(&self, app: &AppName, script: &ScriptName) -> Result<Arc<Compiled>, Loaded> {
        if let Some(hit) = self.cache.get(app, script) {
            return Ok(hit);
        }
        let generation = self.cache.generation();
        let active = self.rt.block_on(self.store.scripts.active(app, script));
        self.compile_active(app, script, active, generation)
    }

    /// Drop `script`'s compiled form, then load and compile its active version now, so
    /// the first run after a deploy or a rollback finds it compiled (a deleted script
    /// leaves nothing). A failure here is left to the first run, which loads it again.
    async fn reload(&self, app: &AppName, script: &ScriptName) {
        self.cache.invalidate_script(app, script);
        let generation = self.cache.generation();
        let active = self.store.scripts.active(app, script).await;
        let _ = self.compile_active(app, script, active, generation);
    }

    /// Compile what the store answered for `script`'s active version and cache it unless
    /// the script was invalidated since `generation` was read (before the store was).
    fn compile_active(
        &self,
        app: &AppName,
        script: &ScriptName,
        active: Result<Option<ScriptVersion>, StoreError>,
        generation: u64,
    ) -> Result<Arc<Compiled>, Loaded> {
        let active = active
            .map_err(|error| {
                tracing::error!(?error, %app, %script, "could not load the active script version");
                Loaded::Missing(ExecError::Store(error))
            })?
            .ok_or_else(|| Loaded::Missing(ExecError::ScriptNotFound(script.to_string())))?;
        let ast: AST = self
            .sandbox
            .compile(&active.source)
            .map_err(|error| Loaded::Broken {
                version: active.version,
                error,
            })?;
        let compiled = Arc::new(Compiled::new(active.version, ast, &active.source));
        self.cache
            .insert_if_current(app, script, Arc::clone(&compiled), generation);
        Ok(compiled)
    }
}

/// `picloud_script_runs_total{outcome}` and `picloud_script_duration_seconds`, resolved
/// once: a lookup by name and labels on every run costs more than the run of a small
/// script. Resolved on first use, which comes after the server installed its recorder.
struct RunMetrics {
    ok: LocalCounter,
    error: LocalCounter,
    limit_exceeded: LocalCounter,
    timeout: LocalCounter,
    not_found: LocalCounter,
    store_error: LocalCounter,
    overloaded: LocalCounter,
    at_concurrency_limit: LocalCounter,
    duration: LocalHistogram,
    /// `picloud_script_inline_runs_total{outcome}`: inline tries kept, and discarded (the
    /// invocation then ran on a script thread).
    inline_kept: LocalCounter,
    inline_discarded: LocalCounter,
}

static RUN_METRICS: LazyLock<RunMetrics> = LazyLock::new(|| {
    let runs = |outcome: &'static str| {
        LocalCounter::new(counter!("picloud_script_runs_total", "outcome" => outcome))
    };
    RunMetrics {
        ok: runs("ok"),
        error: runs("error"),
        limit_exceeded: runs("limit_exceeded"),
        timeout: runs("timeout"),
        not_found: runs("not_found"),
        store_error: runs("store_error"),
        overloaded: runs("overloaded"),
        at_concurrency_limit: runs("concurrency_limit"),
        duration: LocalHistogram::new("picloud_script_duration_seconds"),
        inline_kept: LocalCounter::new(
            counter!("picloud_script_inline_runs_total", "outcome" => "kept"),
        ),
        inline_discarded: LocalCounter::new(
            counter!("picloud_script_inline_runs_total", "outcome" => "discarded"),
        ),
    }
});

pub(crate) enum Loaded {
    Missing(ExecError),
    Broken { version: i64, error: CompileError },
}

#[async_trait]
impl ExecutorClient for Executor {
    async fn execute(&self, invocation: Invocation) -> Result<Execution, ExecError> {
        let slot = self.admit(&invocation)?;
        if let Some(execution) = self.try_inline(&invocation) {
            drop(slot);
            return Ok(execution);
        }
        self.submit(invocation, slot).await
    }

    fn try_now(&self, invocation: &Invocation) -> Option<Result<Execution, ExecError>> {
        let slot = match self.admit(invocation) {
            Ok(slot) => slot,
            Err(refused) => return Some(Err(refused)),
        };
        let execution = self.try_inline(invocation)?;
        drop(slot);
        Some(Ok(execution))
    }
}

impl Executor {
    /// A slot under the invocation's app and script concurrency caps.
    fn admit(&self, invocation: &Invocation) -> Result<Slot, ExecError> {
        self.running
            .admit(&invocation.app, &invocation.script, &invocation.limits)
            .inspect_err(|_| RUN_METRICS.at_concurrency_limit.increment(1))
    }

    /// Queue the invocation for a script thread and wait for its reply.
    async fn submit(&self, invocation: Invocation, slot: Slot) -> Result<Execution, ExecError> {
        let (reply, done) = oneshot::channel();
        let job = Job {
            invocation,
            reply,
            slot,
        };
        match self.pool.submit(job) {
            Ok(()) => {}
            Err(SubmitError::Full) => {
                RUN_METRICS.overloaded.increment(1);
                return Err(ExecError::Overloaded);
            }
            Err(SubmitError::Closed) => return Err(ExecError::Overloaded),
        }
        let mut reply = Reply {
            done: Some(done),
            store: &self.runner.store,
        };
        let done = reply.done.as_mut().expect("set above");
        let result = done.await.map_err(|_| ExecError::WorkerLost)?;
        reply.done = None;
        result
    }
}

/// The wait for a run's reply. Dropped before the reply was taken (the caller gave up),
/// it closes the channel, so a run that ends later deletes its own objects, and deletes
/// those of a reply that had already arrived: no blob object outlives an abandoned run.
struct Reply<'a> {
    done: Option<oneshot::Receiver<Result<Execution, ExecError>>>,
    store: &'a Store,
}

impl Drop for Reply<'_> {
    fn drop(&mut self) {
        let Some(mut done) = self.done.take() else {
            return;
        };
        done.close();
        let Ok(Ok(execution)) = done.try_recv() else {
            return;
        };
        let objects = context::objects_of(&execution.effects);
        if objects.is_empty() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        rt.spawn(async move {
            for key in objects {
                if let Err(error) = store.objects.delete(&key).await {
                    tracing::warn!(?error, "could not delete the object of an abandoned run");
                }
            }
        });
    }
}

impl ScriptChecker for Executor {
    fn check(&self, source: &str) -> Result<(), CompileError> {
        self.runner.sandbox.compile(source).map(|_| ())
    }
}

#[async_trait]
impl CatalogListener for Executor {
    async fn catalog_changed(&self, change: &CatalogChange) {
        match change {
            // Compiled now, before the deploy answers (or, on the other nodes, as soon
            // as they hear of it): the first run of the new version does not wait for a
            // store read and a compile under load.
            CatalogChange::Script { app, script } => self.runner.reload(app, script).await,
            CatalogChange::App { app } => {
                self.runner.cache.invalidate_app(app);
                self.running.forget_idle(app);
            }
            CatalogChange::Limits { app } => self.running.forget_idle(app),
            CatalogChange::Everything => self.runner.cache.invalidate_all(),
            CatalogChange::Triggers { .. } => {}
        }
    }
}
