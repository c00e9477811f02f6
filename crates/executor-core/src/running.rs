//! How many invocations of each app (and script) this executor holds, queued or running,
//! against the caps their `InvocationLimits` carry: one app cannot take every script
//! thread from the others.
//!
//! What must stay true: a `Slot` is taken before the job is queued and dropped when the
//! job ends on its thread (or is refused, or skipped because its caller left), so a count
//! is exactly the app's jobs the pool holds; a run that outlives its caller's deadline
//! still counts. Only capped invocations are counted: a cap set while uncapped runs are
//! in flight applies to the runs started after it.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use shared::{AppName, ExecError, InvocationLimits, ScriptName};

/// The counters of every app (and script) that had a capped invocation.
#[derive(Default)]
pub(crate) struct Running {
    apps: RwLock<HashMap<AppName, Arc<AtomicU32>>>,
    scripts: RwLock<HashMap<(AppName, ScriptName), Arc<AtomicU32>>>,
}

/// One counted invocation; uncounted when dropped.
#[derive(Default)]
pub(crate) struct Slot {
    held: Vec<Arc<AtomicU32>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        for counter in &self.held {
            counter.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The counter under `key`, made on first use.
fn counter<K: std::hash::Hash + Eq + Clone>(
    map: &RwLock<HashMap<K, Arc<AtomicU32>>>,
    key: &K,
) -> Arc<AtomicU32> {
    if let Some(counter) = map.read().unwrap_or_else(|e| e.into_inner()).get(key) {
        return Arc::clone(counter);
    }
    let mut map = map.write().unwrap_or_else(|e| e.into_inner());
    Arc::clone(map.entry(key.clone()).or_default())
}

/// Count one more on `counter` unless it is at `cap`.
fn take(counter: &AtomicU32, cap: u32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < cap).then_some(n + 1)
        })
        .is_ok()
}

impl Running {
    /// A slot for one invocation of `script` of `app` under `limits`' caps.
    ///
    /// # Errors
    /// `ConcurrencyLimit` when the app, or else the script, is at its cap (nothing is
    /// counted then).
    pub(crate) fn admit(
        &self,
        app: &AppName,
        script: &ScriptName,
        limits: &InvocationLimits,
    ) -> Result<Slot, ExecError> {
        let mut slot = Slot::default();
        if let Some(cap) = limits.app_concurrency {
            let counter = counter(&self.apps, app);
            if !take(&counter, cap) {
                return Err(ExecError::ConcurrencyLimit {
                    of: "app",
                    limit: cap,
                });
            }
            slot.held.push(counter);
        }
        if let Some(cap) = limits.script_concurrency {
            let counter = counter(&self.scripts, &(app.clone(), script.clone()));
            if !take(&counter, cap) {
                return Err(ExecError::ConcurrencyLimit {
                    of: "script",
                    limit: cap,
                });
            }
            slot.held.push(counter);
        }
        Ok(slot)
    }

    /// Forget the counters of `app` that nothing holds (the app was deleted or changed).
    pub(crate) fn forget_idle(&self, app: &AppName) {
        let idle = |c: &Arc<AtomicU32>| Arc::strong_count(c) == 1;
        let mut apps = self.apps.write().unwrap_or_else(|e| e.into_inner());
        if apps.get(app).is_some_and(idle) {
            apps.remove(app);
        }
        drop(apps);
        self.scripts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(a, _), c| a != app || !idle(c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> (AppName, ScriptName, ScriptName) {
        (
            AppName::parse("shop").unwrap(),
            ScriptName::parse("a").unwrap(),
            ScriptName::parse("b").unwrap(),
        )
    }

    fn capped(app: Option<u32>, script: Option<u32>) -> InvocationLimits {
        InvocationLimits {
            app_concurrency: app,
            script_concurrency: script,
            ..InvocationLimits::default()
        }
    }

    #[test]
    fn an_app_at_its_cap_is_refused_until_a_slot_is_dropped() {
        let running = Running::default();
        let (shop, a, b) = names();
        let first = running.admit(&shop, &a, &capped(Some(2), None)).unwrap();
        let _second = running.admit(&shop, &b, &capped(Some(2), None)).unwrap();
        let refused = running.admit(&shop, &a, &capped(Some(2), None));
        assert!(matches!(
            refused,
            Err(ExecError::ConcurrencyLimit {
                of: "app",
                limit: 2
            })
        ));
        assert!(
            running.admit(&shop, &a, &capped(None, None)).is_ok(),
            "uncapped runs are not counted"
        );
        drop(first);
        assert!(running.admit(&shop, &a, &capped(Some(2), None)).is_ok());
    }

    #[test]
    fn a_script_cap_holds_inside_the_app_cap_and_a_refusal_counts_nothing() {
        let running = Running::default();
        let (shop, a, b) = names();
        let limits = capped(Some(3), Some(1));
        let held = running.admit(&shop, &a, &limits).unwrap();
        assert!(matches!(
            running.admit(&shop, &a, &limits),
            Err(ExecError::ConcurrencyLimit { of: "script", .. })
        ));
        // The refused one gave its app slot back: two more fit under the app's 3.
        let _b1 = running.admit(&shop, &b, &capped(Some(3), None)).unwrap();
        let _b2 = running.admit(&shop, &b, &capped(Some(3), None)).unwrap();
        assert!(running.admit(&shop, &b, &capped(Some(3), None)).is_err());
        drop(held);
        running.forget_idle(&shop);
        assert!(running.admit(&shop, &a, &capped(None, Some(1))).is_ok());
    }
}
