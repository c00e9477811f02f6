//! The host context of an executor run: its app, the executor's runner (store, runtime
//! handle, outbound client, script loader), the run's limits, its buffered effects
//! (`buffer`: capped, with the blob objects it wrote), its invoke depth and its import
//! stack. It lives in the run's state (`run_state::RunScope`); host calls reach it
//! through the functions here.
//!
//! What must stay true:
//! - effects leave a run only through `Host::finish` and only when the run succeeded; a
//!   failed run (or a failed nested `invoke`) drops its effects and deletes the objects
//!   its `blob::put`s wrote, so nothing it did becomes visible; so does a run that
//!   panicked (`Host::abandon`) or whose caller gave up (`executor::Reply`);
//! - a host call outside an executor run (between runs, or in a bare sandbox run) finds
//!   no context and fails instead of writing somewhere;
//! - a nested `invoke` and a module being loaded change the depth and the import stack
//!   only for the time of their closure; the caller's come back after it.
use std::future::Future;
use std::sync::Arc;

use shared::{AppName, BlobWrite, Effects, Emit, KvWrite, ScriptName, Store};

use crate::buffer::{Buffer, Caps};
use crate::error::HostError;
use crate::executor::Runner;
use crate::limits::Limits;
use crate::run_state::{self, with_host};

/// The host side of one executor run, held in the run's state.
pub(crate) struct Host {
    runner: Arc<Runner>,
    app: AppName,
    limits: Arc<Limits>,
    /// The run's effects and the objects its `blob::put`s wrote, under the run's caps.
    buffer: Buffer,
    /// Nested `invoke`s in progress.
    depth: usize,
    /// The script running at the top, then each module being loaded.
    imports: Vec<ScriptName>,
}

impl Host {
    pub(crate) fn new(
        runner: Arc<Runner>,
        app: AppName,
        script: ScriptName,
        limits: Arc<Limits>,
    ) -> Self {
        Host {
            runner,
            app,
            limits,
            buffer: Buffer::default(),
            depth: 0,
            imports: vec![script],
        }
    }

    fn caps(&self) -> Caps {
        Caps {
            max_count: self.limits.max_effects_per_run,
            max_bytes: self.limits.max_effect_bytes_per_run,
        }
    }

    /// The run's effects when it succeeded; otherwise nothing, and the objects its
    /// `blob::put`s wrote are deleted.
    pub(crate) fn finish(self, succeeded: bool) -> Effects {
        let (effects, objects) = self.buffer.into_parts();
        if succeeded {
            return effects;
        }
        delete_objects(&self.runner, &self.app, objects);
        Effects::default()
    }

    /// The run ended without finishing (it panicked): nothing it did stays.
    pub(crate) fn abandon(self) {
        drop(self.finish(false));
    }
}

/// What a host call needs of its run, cloned out so no borrow is held across I/O.
pub(crate) struct Current {
    pub(crate) runner: Arc<Runner>,
    pub(crate) app: AppName,
    limits: Arc<Limits>,
}

impl Current {
    pub(crate) fn store(&self) -> &Store {
        &self.runner.store
    }

    /// The run's limits (the app's and script's overrides over the server's).
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The runtime that owns the store's pools, for a store call that blocks on it itself.
    pub(crate) fn rt(&self) -> &tokio::runtime::Handle {
        &self.runner.rt
    }

    /// Run `fut` to completion on the runtime, blocking this script thread (never a
    /// runtime worker, so blocking it is the point).
    pub(crate) fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.runner.rt.block_on(fut)
    }
}

/// The app, runner and limits of the run in progress.
///
/// # Errors
/// `OutsideRun` when no executor run is in progress on this thread.
pub(crate) fn current(call: &'static str) -> Result<Current, HostError> {
    with_host(|host| Current {
        runner: Arc::clone(&host.runner),
        app: host.app.clone(),
        limits: Arc::clone(&host.limits),
    })
    .ok_or(HostError::OutsideRun { call })
}

/// `f` on the run's limits, for a host call that only buffers an effect
/// (`run_state::with_buffering_host`): an inline try's context serves it too. Clones
/// nothing.
///
/// # Errors
/// `OutsideRun` when no executor run is in progress on this thread.
pub(crate) fn buffering_limits<T>(
    call: &'static str,
    f: impl FnOnce(&Limits) -> T,
) -> Result<T, HostError> {
    run_state::with_buffering_host(|host| f(&host.limits)).ok_or(HostError::OutsideRun { call })
}

/// Read the run's effects; `None` outside a run.
pub(crate) fn with_effects<T>(f: impl FnOnce(&Effects) -> T) -> Option<T> {
    with_host(|host| f(host.buffer.effects()))
}

/// Change the run's buffer under its caps (not in an inline try: blob changes).
fn with_buffer<T>(
    call: &'static str,
    f: impl FnOnce(&mut Buffer, Caps) -> Result<T, HostError>,
) -> Result<T, HostError> {
    with_host(|host| {
        let caps = host.caps();
        f(&mut host.buffer, caps)
    })
    .ok_or(HostError::OutsideRun { call })?
}

/// `with_buffer` for entries that need no I/O (KV writes, emits): also in an inline try.
fn with_pure_buffer<T>(
    call: &'static str,
    f: impl FnOnce(&mut Buffer, Caps) -> Result<T, HostError>,
) -> Result<T, HostError> {
    run_state::with_buffering_host(|host| {
        let caps = host.caps();
        f(&mut host.buffer, caps)
    })
    .ok_or(HostError::OutsideRun { call })?
}

/// Buffer a KV write.
///
/// # Errors
/// When the run's buffer is full (`max_effects_per_run`, `max_effect_bytes_per_run`).
pub(crate) fn buffer_kv(call: &'static str, write: KvWrite) -> Result<(), HostError> {
    with_pure_buffer(call, |b, caps| b.push_kv(call, caps, write))
}

/// Buffer an emitted event or email.
///
/// # Errors
/// When the run's buffer is full.
pub(crate) fn buffer_emit(call: &'static str, emit: Emit) -> Result<(), HostError> {
    with_pure_buffer(call, |b, caps| b.push_emit(call, caps, emit))
}

/// Whether a blob of `size` bytes under `name` fits in the run's buffer; asked before its
/// bytes are written.
///
/// # Errors
/// When it would not.
pub(crate) fn blob_room(call: &'static str, name: &str, size: usize) -> Result<(), HostError> {
    with_buffer(call, |b, caps| b.blob_room(call, caps, name, size))
}

/// Buffer a blob change; the object of a `Put` is remembered, to delete it if the run
/// fails, and the objects of the puts it supersedes are deleted now.
///
/// # Errors
/// When the run's buffer is full (the caller deletes the object it wrote).
pub(crate) fn buffer_blob(
    cx: &Current,
    call: &'static str,
    write: BlobWrite,
) -> Result<(), HostError> {
    let unreferenced = with_buffer(call, |b, caps| b.push_blob(call, caps, write))?;
    delete_objects(&cx.runner, &cx.app, unreferenced);
    Ok(())
}

/// Run `f` as a nested `invoke` of `script`: one level deeper (at most `max` levels),
/// with an import stack of its own, under the run's budget. What it buffers is kept only
/// when `succeeded` says so of its result; otherwise it is dropped and the objects it
/// wrote are deleted.
///
/// # Errors
/// When `max` nested invokes are already running (`f` does not run).
pub(crate) fn nested_invoke<T>(
    cx: &Current,
    script: &ScriptName,
    max: usize,
    f: impl FnOnce() -> T,
    succeeded: impl FnOnce(&T) -> bool,
) -> Result<T, HostError> {
    let (mark, caller_imports) = with_host(|host| {
        if host.depth >= max {
            return Err(HostError::refused(format!(
                "invoke depth limit of {max} exceeded"
            )));
        }
        host.depth += 1;
        let imports = std::mem::replace(&mut host.imports, vec![script.clone()]);
        Ok((host.buffer.begin_nested(), imports))
    })
    .ok_or(HostError::OutsideRun { call: "invoke" })??;
    let result = run_state::nested(f);
    let ok = succeeded(&result);
    let objects = with_host(|host| {
        host.depth = host.depth.saturating_sub(1);
        host.imports = caller_imports;
        host.buffer.end_nested(mark, ok)
    })
    .unwrap_or_default();
    delete_objects(&cx.runner, &cx.app, objects);
    Ok(result)
}

/// Run `f` (evaluating `script` as a module of the run) with `script` on the import stack,
/// under the run's budget.
///
/// # Errors
/// `import cycle: a -> b -> a` when `script` is already being loaded (or is the script at
/// the top of the stack); `f` does not run then.
pub(crate) fn loading_import<T>(
    script: &ScriptName,
    f: impl FnOnce() -> T,
) -> Result<T, HostError> {
    with_host(|host| {
        if let Some(start) = host.imports.iter().position(|s| s == script) {
            let mut chain: Vec<&str> = host.imports[start..].iter().map(|s| s.as_str()).collect();
            chain.push(script.as_str());
            return Err(HostError::refused(format!(
                "import cycle: {}",
                chain.join(" -> ")
            )));
        }
        host.imports.push(script.clone());
        Ok(())
    })
    .ok_or(HostError::OutsideRun { call: "import" })??;
    let result = run_state::nested(f);
    with_host(|host| host.imports.pop());
    Ok(result)
}

/// The objects the blob puts of `effects` wrote (not yet named by any committed blob).
pub(crate) fn objects_of(effects: &Effects) -> Vec<String> {
    effects
        .blobs
        .iter()
        .filter_map(|w| match w {
            BlobWrite::Put { object, .. } => Some(object.clone()),
            BlobWrite::Delete { .. } => None,
        })
        .collect()
}

/// Delete objects a failed run (or failed nested invoke) wrote; failures are logged.
pub(crate) fn delete_objects(runner: &Runner, app: &AppName, objects: Vec<String>) {
    if objects.is_empty() {
        return;
    }
    let store = &runner.store;
    runner.rt.block_on(async {
        for key in objects {
            if let Err(error) = store.objects.delete(&key).await {
                tracing::warn!(%app, ?error, "could not delete the object of a failed run");
            }
        }
    });
}
