//! Compiled scripts, by (app, script): the active version's AST (and, once imported, its
//! module), compiled once on the first run after a deploy and reused until a catalog
//! change drops it.
//!
//! One map keyed by (app, script) with hashbrown's default hasher (foldhash): a run looks
//! its script up once, borrowing the names (`Key`), and hashes them cheaply (the names
//! come from the catalog, not from a request: no flooding to guard against with SipHash).
//!
//! What must stay true: an entry never outlives the invalidation of its script. A loader
//! reads the generation before it reads the store and inserts only if no invalidation
//! happened since; invalidations bump the generation under the write lock. So a deploy
//! that lands while an old version is being loaded cannot be hidden by a stale insert.
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use hashbrown::{Equivalent, HashMap};
use rhai::{AST, Module, Shared};
use shared::{AppName, ScriptName};

/// One compiled script version.
pub(crate) struct Compiled {
    pub(crate) version: i64,
    pub(crate) ast: AST,
    /// Whether the script can read `request` (`input::may_read_request`): a run of one that
    /// cannot skips building it.
    pub(crate) reads_request: bool,
    /// Whether its inline try needs a host context (`host::may_buffer`).
    pub(crate) buffers: bool,
    /// Whether an HTTP run of it is first tried inline, on the runtime worker: its source
    /// names no call that would stop the try (`host::may_run_inline`), and no try of it
    /// was discarded yet (then it goes straight to a script thread until the next deploy).
    inline: AtomicBool,
    /// Kept inline tries in a row that ran past the budget's time (see `overran`).
    overruns: AtomicU32,
    /// The script evaluated as a module, the first time another script imports it; it
    /// lives and dies with this version's entry.
    pub(crate) module: OnceLock<Shared<Module>>,
}

/// Kept inline tries in a row past their time budget after which a version runs on the
/// script threads (one overrun may be the OS pausing the thread, not the script).
pub(crate) const INLINE_OVERRUNS: u32 = 3;

impl Compiled {
    /// `source` is what `ast` was compiled from.
    pub(crate) fn new(version: i64, ast: AST, source: &str) -> Self {
        Compiled {
            version,
            ast,
            reads_request: crate::input::may_read_request(source),
            buffers: crate::host::may_buffer(source),
            inline: AtomicBool::new(crate::host::may_run_inline(source)),
            overruns: AtomicU32::new(0),
            module: OnceLock::new(),
        }
    }
}

impl Compiled {
    pub(crate) fn runs_inline(&self) -> bool {
        self.inline.load(Ordering::Relaxed)
    }

    /// An inline try of this version was discarded: run it on a script thread from now on.
    pub(crate) fn stop_inline(&self) {
        self.inline.store(false, Ordering::Relaxed);
    }

    /// A kept inline try took `over` its time budget (`true`) or not. The clock is read
    /// every few operations, so a try can end past the budget between two reads (a few
    /// costly calls on a large body); so can one whose thread the OS paused. Tries that
    /// overrun `INLINE_OVERRUNS` times in a row move the version to the script threads.
    pub(crate) fn overran(&self, over: bool) {
        if !over {
            if self.overruns.load(Ordering::Relaxed) != 0 {
                self.overruns.store(0, Ordering::Relaxed);
            }
        } else if self.overruns.fetch_add(1, Ordering::Relaxed) + 1 >= INLINE_OVERRUNS {
            self.stop_inline();
        }
    }
}

/// By (app, script); looked up with a `Key`.
type Entries = HashMap<(AppName, ScriptName), Arc<Compiled>>;

/// An entry's key, borrowed: it hashes as the owned pair does (a tuple hashes its fields
/// in order, a reference as what it points to).
#[derive(Hash)]
struct Key<'a>(&'a AppName, &'a ScriptName);

impl Equivalent<(AppName, ScriptName)> for Key<'_> {
    fn equivalent(&self, (app, script): &(AppName, ScriptName)) -> bool {
        self.0 == app && self.1 == script
    }
}

#[derive(Default)]
pub(crate) struct AstCache {
    entries: RwLock<Entries>,
    /// Bumped by every invalidation; a load that started before it must not insert.
    generation: AtomicU64,
}

impl AstCache {
    pub(crate) fn get(&self, app: &AppName, script: &ScriptName) -> Option<Arc<Compiled>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(&Key(app, script)).cloned()
    }

    /// Read before loading from the store; pass to `insert_if_current`.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Insert unless an invalidation happened since `generation` was read.
    pub(crate) fn insert_if_current(
        &self,
        app: &AppName,
        script: &ScriptName,
        compiled: Arc<Compiled>,
        generation: u64,
    ) -> bool {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            return false;
        }
        entries.insert((app.clone(), script.clone()), compiled);
        true
    }

    pub(crate) fn invalidate_script(&self, app: &AppName, script: &ScriptName) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.remove(&Key(app, script));
    }

    pub(crate) fn invalidate_all(&self) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    pub(crate) fn invalidate_app(&self, app: &AppName) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.retain(|(entry_app, _), _| entry_app != app);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(version: i64) -> Arc<Compiled> {
        Arc::new(Compiled::new(version, AST::empty(), ""))
    }

    fn names(app: &str, script: &str) -> (AppName, ScriptName) {
        (
            AppName::parse(app).unwrap(),
            ScriptName::parse(script).unwrap(),
        )
    }

    #[test]
    fn only_inline_tries_that_overrun_in_a_row_move_a_version_to_the_script_threads() {
        let compiled = compiled(1);
        assert!(compiled.runs_inline(), "an empty source names no I/O call");
        // Overruns with a try within budget between them: an OS pause, not the script.
        for _ in 0..10 {
            for _ in 1..INLINE_OVERRUNS {
                compiled.overran(true);
            }
            compiled.overran(false);
        }
        assert!(compiled.runs_inline());
        for _ in 0..INLINE_OVERRUNS {
            compiled.overran(true);
        }
        assert!(!compiled.runs_inline());
    }

    #[test]
    fn a_load_that_raced_an_invalidation_is_not_cached() {
        let cache = AstCache::default();
        let (app, script) = names("shop", "hello");
        let seen = cache.generation();
        cache.invalidate_script(&app, &script);
        assert!(!cache.insert_if_current(&app, &script, compiled(1), seen));
        assert!(cache.get(&app, &script).is_none());
        let seen = cache.generation();
        assert!(cache.insert_if_current(&app, &script, compiled(2), seen));
        assert_eq!(cache.get(&app, &script).map(|c| c.version), Some(2));
    }

    #[test]
    fn invalidating_an_app_drops_only_that_apps_scripts() {
        let cache = AstCache::default();
        let (shop, a) = names("shop", "a");
        let (blog, b) = names("blog", "b");
        let g = cache.generation();
        cache.insert_if_current(&shop, &a, compiled(1), g);
        cache.insert_if_current(&blog, &b, compiled(1), g);
        cache.invalidate_app(&shop);
        assert!(cache.get(&shop, &a).is_none());
        assert!(cache.get(&blog, &b).is_some());
    }

    #[test]
    fn a_lookup_finds_exactly_its_app_and_script() {
        let cache = AstCache::default();
        let g = cache.generation();
        // Names whose concatenations collide: the pair, not the joined text, is the key.
        let (ab_c, _) = names("ab", "c");
        let (a_bc, _) = names("a", "bc");
        let (c, bc) = (
            ScriptName::parse("c").unwrap(),
            ScriptName::parse("bc").unwrap(),
        );
        assert!(cache.insert_if_current(&ab_c, &c, compiled(1), g));
        assert!(cache.insert_if_current(&a_bc, &bc, compiled(2), g));
        assert_eq!(cache.get(&ab_c, &c).map(|c| c.version), Some(1));
        assert_eq!(cache.get(&a_bc, &bc).map(|c| c.version), Some(2));
        assert!(cache.get(&ab_c, &bc).is_none());
        assert!(cache.get(&a_bc, &c).is_none());
        // A newer version replaces the entry; invalidating a script drops only it.
        assert!(cache.insert_if_current(&ab_c, &c, compiled(3), g));
        assert_eq!(cache.get(&ab_c, &c).map(|c| c.version), Some(3));
        cache.invalidate_script(&ab_c, &c);
        assert!(cache.get(&ab_c, &c).is_none());
        assert_eq!(cache.get(&a_bc, &bc).map(|c| c.version), Some(2));
        cache.invalidate_all();
        assert!(cache.get(&a_bc, &bc).is_none());
    }
}
