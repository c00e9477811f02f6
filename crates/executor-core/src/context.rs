//! The host context of the run in progress on this thread: its app, the executor's
//! runner (store, runtime handle, limits, script loader), the run's buffered effects,
//! the blob objects it wrote, its invoke depth and its import stack.
//!
//! What must stay true:
//! - effects leave a run only through `HostGuard::finish` and only when the run
//!   succeeded; a failed run (or a failed nested `invoke`) drops its effects and deletes
//!   the objects its `blob::put`s wrote, so nothing it did becomes visible;
//! - the context is set by `HostGuard` and cleared when it drops (also on panic), so a
//!   host call outside a run, or on a thread that runs a bare sandbox, finds no app and
//!   fails instead of writing somewhere.
use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use shared::{AppName, Effects, ScriptName, Store};

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
    effects: Effects,
    /// Object keys written by `blob::put` during the run, in order.
    objects: Vec<String>,
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

/// Read or change the run's effects buffer; `None` outside a run.
pub(crate) fn with_effects<T>(f: impl FnOnce(&mut Effects) -> T) -> Option<T> {
    FRAME.with_borrow_mut(|frame| frame.as_mut().map(|fr| f(&mut fr.effects)))
}

/// Remember an object written during the run, to delete it if the run fails.
pub(crate) fn record_object(key: String) {
    FRAME.with_borrow_mut(|frame| {
        if let Some(fr) = frame.as_mut() {
            fr.objects.push(key);
        }
    });
}

/// How far the buffers were filled; `rollback` cuts them back to it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Mark {
    kv: usize,
    blobs: usize,
    emitted: usize,
    objects: usize,
}

pub(crate) fn mark() -> Mark {
    FRAME.with_borrow(|frame| {
        frame.as_ref().map_or_else(Mark::default, |fr| Mark {
            kv: fr.effects.kv.len(),
            blobs: fr.effects.blobs.len(),
            emitted: fr.effects.emitted.len(),
            objects: fr.objects.len(),
        })
    })
}

/// Drop what was buffered since `mark`; returns the objects written since, for the
/// caller to delete.
pub(crate) fn rollback(mark: Mark) -> Vec<String> {
    FRAME.with_borrow_mut(|frame| {
        let Some(fr) = frame.as_mut() else {
            return Vec::new();
        };
        fr.effects.kv.truncate(mark.kv);
        fr.effects.blobs.truncate(mark.blobs);
        fr.effects.emitted.truncate(mark.emitted);
        fr.objects.split_off(mark.objects.min(fr.objects.len()))
    })
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
                effects: Effects::default(),
                objects: Vec::new(),
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
        if succeeded {
            return frame.effects;
        }
        delete_objects(&frame.runner, &frame.app, frame.objects);
        Effects::default()
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        // Set again only by the next `start`; a panicking run leaves nothing behind. Its
        // objects, if any, are orphans for the object store's sweeper.
        FRAME.with_borrow_mut(|frame| *frame = None);
    }
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
