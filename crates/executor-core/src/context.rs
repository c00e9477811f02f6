//! The host context of the run in progress on this thread: its app, the executor's
//! runner (store, runtime handle, limits, script loader), the run's buffered effects
//! (`buffer`: capped, with the blob objects it wrote), its invoke depth and its import
//! stack.
//!
//! What must stay true:
//! - effects leave a run only through `HostGuard::finish` and only when the run
//!   succeeded; a failed run (or a failed nested `invoke`) drops its effects and deletes
//!   the objects its `blob::put`s wrote, so nothing it did becomes visible; so does a run
//!   that panicked (`HostGuard`'s drop) or whose caller gave up (`executor::Reply`);
//! - the context is set by `HostGuard` and cleared when it drops (also on panic), so a
//!   host call outside a run, or on a thread that runs a bare sandbox, finds no app and
//!   fails instead of writing somewhere.
use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use shared::{AppName, BlobWrite, Effects, Emit, KvWrite, ScriptName, Store};

use crate::buffer::{Buffer, Caps, Mark};
use crate::error::HostError;
use crate::executor::Runner;
use crate::limits::Limits;

/// What a host call needs of its run, cloned out so no borrow is held across I/O.
pub(crate) struct Current {
    pub(crate) runner: Arc<Runner>,
    pub(crate) app: AppName,
}

impl Current {
    pub(crate) fn store(&self) -> &Store {
        &self.runner.store
    }

    pub(crate) fn limits(&self) -> &Limits {
        self.runner.sandbox.limits()
    }

    /// Run `fut` to completion on the runtime, blocking this script thread (never a
    /// runtime worker, so blocking it is the point).
    pub(crate) fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.runner.rt.block_on(fut)
    }
}

struct Frame {
    runner: Arc<Runner>,
    app: AppName,
    /// The run's effects and the objects its `blob::put`s wrote, under the run's caps.
    buffer: Buffer,
    /// Nested `invoke`s in progress.
    depth: usize,
    /// The script running at the top, then each module being loaded.
    imports: Vec<ScriptName>,
}

thread_local! {
    static FRAME: RefCell<Option<Frame>> = const { RefCell::new(None) };
}

/// The app and runner of the run in progress.
///
/// # Errors
/// `OutsideRun` when no run is in progress on this thread.
pub(crate) fn current(call: &'static str) -> Result<Current, HostError> {
    FRAME.with_borrow(|frame| {
        frame
            .as_ref()
            .map(|f| Current {
                runner: Arc::clone(&f.runner),
                app: f.app.clone(),
            })
            .ok_or(HostError::OutsideRun { call })
    })
}

/// Read the run's effects; `None` outside a run.
pub(crate) fn with_effects<T>(f: impl FnOnce(&Effects) -> T) -> Option<T> {
    FRAME.with_borrow(|frame| frame.as_ref().map(|fr| f(fr.buffer.effects())))
}

fn caps(runner: &Runner) -> Caps {
    let limits = runner.sandbox.limits();
    Caps {
        max_count: limits.max_effects_per_run,
        max_bytes: limits.max_effect_bytes_per_run,
    }
}

/// Change the run's buffer under its caps.
fn with_buffer<T>(
    call: &'static str,
    f: impl FnOnce(&mut Buffer, Caps) -> Result<T, HostError>,
) -> Result<T, HostError> {
    FRAME.with_borrow_mut(|frame| {
        let fr = frame.as_mut().ok_or(HostError::OutsideRun { call })?;
        let caps = caps(&fr.runner);
        f(&mut fr.buffer, caps)
    })
}

/// Buffer a KV write.
///
/// # Errors
/// When the run's buffer is full (`max_effects_per_run`, `max_effect_bytes_per_run`).
pub(crate) fn buffer_kv(call: &'static str, write: KvWrite) -> Result<(), HostError> {
    with_buffer(call, |b, caps| b.push_kv(call, caps, write))
}

/// Buffer an emitted event or email.
///
/// # Errors
/// When the run's buffer is full.
pub(crate) fn buffer_emit(call: &'static str, emit: Emit) -> Result<(), HostError> {
    with_buffer(call, |b, caps| b.push_emit(call, caps, emit))
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

/// A nested `invoke` begins; `end_nested` must follow.
pub(crate) fn begin_nested() -> Mark {
    FRAME.with_borrow_mut(|frame| {
        frame
            .as_mut()
            .map_or_else(Mark::default, |fr| fr.buffer.begin_nested())
    })
}

/// The nested `invoke` begun at `mark` ended; when it failed, what it buffered is dropped
/// and the objects it wrote are deleted.
pub(crate) fn end_nested(cx: &Current, mark: Mark, succeeded: bool) {
    let objects = FRAME.with_borrow_mut(|frame| {
        frame
            .as_mut()
            .map(|fr| fr.buffer.end_nested(mark, succeeded))
            .unwrap_or_default()
    });
    delete_objects(&cx.runner, &cx.app, objects);
}

/// Enter one more nested `invoke`.
///
/// # Errors
/// When `max` nested invokes are already running.
pub(crate) fn enter_invoke(max: usize) -> Result<DepthGuard, HostError> {
    FRAME.with_borrow_mut(|frame| {
        let fr = frame
            .as_mut()
            .ok_or(HostError::OutsideRun { call: "invoke" })?;
        if fr.depth >= max {
            return Err(HostError::refused(format!(
                "invoke depth limit of {max} exceeded"
            )));
        }
        fr.depth += 1;
        Ok(DepthGuard(()))
    })
}

/// Leaves the nested `invoke` when dropped.
pub(crate) struct DepthGuard(());

impl Drop for DepthGuard {
    fn drop(&mut self) {
        FRAME.with_borrow_mut(|frame| {
            if let Some(fr) = frame.as_mut() {
                fr.depth = fr.depth.saturating_sub(1);
            }
        });
    }
}

/// Start loading `script` as a module of the run.
///
/// # Errors
/// `import cycle: a -> b -> a` when `script` is already being loaded (or is the script
/// at the top of the stack).
pub(crate) fn push_import(script: &ScriptName) -> Result<ImportGuard, HostError> {
    FRAME.with_borrow_mut(|frame| {
        let fr = frame
            .as_mut()
            .ok_or(HostError::OutsideRun { call: "import" })?;
        if let Some(start) = fr.imports.iter().position(|s| s == script) {
            let mut chain: Vec<&str> = fr.imports[start..].iter().map(|s| s.as_str()).collect();
            chain.push(script.as_str());
            return Err(HostError::refused(format!(
                "import cycle: {}",
                chain.join(" -> ")
            )));
        }
        fr.imports.push(script.clone());
        Ok(ImportGuard(()))
    })
}

/// Pops the module from the import stack when dropped.
pub(crate) struct ImportGuard(());

impl Drop for ImportGuard {
    fn drop(&mut self) {
        FRAME.with_borrow_mut(|frame| {
            if let Some(fr) = frame.as_mut() {
                fr.imports.pop();
            }
        });
    }
}

/// Give a nested `invoke` of `script` its own import stack; the caller's comes back
/// when the guard drops.
pub(crate) fn fresh_imports(script: &ScriptName) -> ImportsSwap {
    let saved = FRAME.with_borrow_mut(|frame| {
        frame
            .as_mut()
            .map(|fr| std::mem::replace(&mut fr.imports, vec![script.clone()]))
            .unwrap_or_default()
    });
    ImportsSwap(saved)
}

pub(crate) struct ImportsSwap(Vec<ScriptName>);

impl Drop for ImportsSwap {
    fn drop(&mut self) {
        let saved = std::mem::take(&mut self.0);
        FRAME.with_borrow_mut(|frame| {
            if let Some(fr) = frame.as_mut() {
                fr.imports = saved;
            }
        });
    }
}

/// Holds this thread's host context for one top-level run.
pub(crate) struct HostGuard(());

impl HostGuard {
    pub(crate) fn start(runner: Arc<Runner>, app: AppName, script: ScriptName) -> Self {
        FRAME.with_borrow_mut(|frame| {
            *frame = Some(Frame {
                runner,
                app,
                buffer: Buffer::default(),
                depth: 0,
                imports: vec![script],
            });
        });
        HostGuard(())
    }

    /// End the run: its effects when it succeeded; otherwise nothing, and the objects
    /// its `blob::put`s wrote are deleted.
    pub(crate) fn finish(self, succeeded: bool) -> Effects {
        let Some(frame) = FRAME.with_borrow_mut(Option::take) else {
            return Effects::default();
        };
        let (effects, objects) = frame.buffer.into_parts();
        if succeeded {
            return effects;
        }
        delete_objects(&frame.runner, &frame.app, objects);
        Effects::default()
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        // Set again only by the next `start`. A run that panicked leaves its frame here:
        // the objects it wrote are deleted, so nothing it did stays behind.
        if let Some(frame) = FRAME.with_borrow_mut(Option::take) {
            let (_, objects) = frame.buffer.into_parts();
            delete_objects(&frame.runner, &frame.app, objects);
        }
    }
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
