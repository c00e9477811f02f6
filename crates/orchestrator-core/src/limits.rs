//! Every app's limits on this node, in memory, and the node's request-rate buckets and
//! event deferral pace.
//!
//! What must stay true:
//! - the hot path never reads the database: the table is loaded at start and one app's
//!   entry is reloaded when the catalog says its limits, its scripts or the app changed
//!   (the manager awaits that before it answers, so a `200` to a `PUT .../limits` means
//!   this node applies them); a reload that fails keeps the old entry;
//! - a request takes one token from its app's bucket and from its script's (when either
//!   is limited), both or neither; a refusal says when the next token comes;
//! - an event over its app's concurrency cap is deferred to about when the app will have
//!   room (its recent run time over its cap, after the app's other deferred events), so
//!   a backlog comes back paced instead of being claimed and put back in a loop.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use shared::limits::Resolved;
use shared::store::LimitRepository;
use shared::{
    AppLimits, AppName, CatalogChange, CatalogListener, LimitPolicy, ScriptName, StoreError,
};

/// The limits of every app that set any, and the rate buckets of this node.
pub(crate) struct LimitTable {
    policy: LimitPolicy,
    /// What an app that set nothing gets (most apps): resolved once.
    unset: Resolved,
    repo: Arc<dyn LimitRepository>,
    apps: RwLock<HashMap<AppName, Arc<AppLimits>>>,
    /// By app, and by (app, script) for scripts with a rate of their own.
    buckets: Mutex<HashMap<(AppName, Option<ScriptName>), Bucket>>,
    /// One reload at a time, so two changes of one app cannot land out of order.
    reloading: tokio::sync::Mutex<()>,
    /// When events over their app's cap come back.
    pub(crate) deferrals: Deferrals,
}

impl LimitTable {
    /// Every app's limits from the store.
    ///
    /// # Errors
    /// When they cannot be read.
    pub(crate) async fn load(
        repo: Arc<dyn LimitRepository>,
        policy: LimitPolicy,
    ) -> Result<Self, StoreError> {
        let apps = repo
            .list_all()
            .await?
            .into_iter()
            .map(|(app, limits)| (app, Arc::new(limits)))
            .collect();
        // Any script name will do: an app that set nothing has no script limits either.
        let unset = policy.resolve(
            &AppLimits::default(),
            &ScriptName::parse("_").map_err(StoreError::backend)?,
        );
        Ok(LimitTable {
            policy,
            unset,
            repo,
            apps: RwLock::new(apps),
            buckets: Mutex::new(HashMap::new()),
            reloading: tokio::sync::Mutex::new(()),
            deferrals: Deferrals::default(),
        })
    }

    /// What an invocation of `script` of `app` runs under.
    pub(crate) fn resolve(&self, app: &AppName, script: &ScriptName) -> Resolved {
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        match apps.get(app) {
            Some(limits) => self.policy.resolve(limits, script),
            None => self.unset,
        }
    }

    /// Take one request of `script` of `app` from the rates `resolved` names.
    ///
    /// # Errors
    /// How long until a token comes, when the app or the script is over its rate (no
    /// token is taken then).
    pub(crate) fn admit_request(
        &self,
        app: &AppName,
        script: &ScriptName,
        resolved: &Resolved,
    ) -> Result<(), Duration> {
        if resolved.app_rate.is_none() && resolved.script_rate.is_none() {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = Duration::ZERO;
        let gates = [
            (resolved.app_rate, None),
            (resolved.script_rate, Some(script.clone())),
        ];
        for (rate, script) in &gates {
            if let Some(rate) = rate {
                let bucket = buckets
                    .entry((app.clone(), script.clone()))
                    .or_insert_with(|| Bucket::full(*rate, now));
                bucket.refill(*rate, now);
                wait = wait.max(bucket.wait(*rate));
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        for (rate, script) in gates {
            if rate.is_some()
                && let Some(bucket) = buckets.get_mut(&(app.clone(), script))
            {
                bucket.tokens -= 1.0;
            }
        }
        Ok(())
    }

    /// Read `app`'s limits again (what a catalog change does).
    pub(crate) async fn reload(&self, app: &AppName) {
        let _one_at_a_time = self.reloading.lock().await;
        match self.repo.get(app).await {
            Ok(limits) => {
                let mut apps = self.apps.write().unwrap_or_else(|e| e.into_inner());
                if limits.is_empty() {
                    apps.remove(app);
                } else {
                    apps.insert(app.clone(), Arc::new(limits));
                }
                tracing::debug!(app = %app, "limits reloaded");
            }
            Err(error) => {
                tracing::error!(app = %app, error = ?error, "could not reload the app's limits; keeping the old ones");
            }
        }
    }

    /// Read every app's limits again (after changes may have been missed); on a store
    /// failure the old ones stay and the failure is logged.
    pub(crate) async fn reload_all(&self) {
        let _one_at_a_time = self.reloading.lock().await;
        match self.repo.list_all().await {
            Ok(all) => {
                let fresh = all
                    .into_iter()
                    .map(|(app, limits)| (app, Arc::new(limits)))
                    .collect();
                *self.apps.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                tracing::debug!("every app's limits reloaded");
            }
            Err(error) => {
                tracing::error!(error = ?error, "could not reload the limits; keeping the old ones");
            }
        }
    }

    /// Forget the rate buckets of `app` (it was deleted or created again).
    fn forget_buckets(&self, app: &AppName) {
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(a, _), _| a != app);
    }
}

/// A token bucket: `rate` tokens a second, at most one second's worth kept.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: u32, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(rate),
            at: now,
        }
    }

    fn refill(&mut self, rate: u32, now: Instant) {
        let rate = f64::from(rate);
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + earned).min(rate);
        self.at = now;
    }

    /// How long until a whole token is there (zero when one is).
    fn wait(&self, rate: u32) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / f64::from(rate.max(1)))
        }
    }
}

/// Reloads an app's limits when the catalog says they (or its scripts, or the app)
/// changed.
pub(crate) struct LimitRefresher {
    pub(crate) table: Arc<LimitTable>,
}

#[async_trait]
impl CatalogListener for LimitRefresher {
    async fn catalog_changed(&self, change: &CatalogChange) {
        match change {
            CatalogChange::App { app } => {
                self.table.forget_buckets(app);
                self.table.deferrals.forget(app);
                self.table.reload(app).await;
            }
            CatalogChange::Limits { app } => {
                self.table.deferrals.forget(app);
                self.table.reload(app).await;
            }
            // A deleted script's limits went with it.
            CatalogChange::Script { app, .. } => {
                self.table.reload(app).await;
            }
            CatalogChange::Everything => self.table.reload_all().await,
            CatalogChange::Triggers { .. } => {}
        }
    }
}

/// When events over their app's concurrency cap come back: paced by the app's recent run
/// time, so a backlog returns about as fast as the app can take it.
#[derive(Default)]
pub(crate) struct Deferrals {
    apps: Mutex<HashMap<AppName, Pace>>,
}

#[derive(Debug, Clone, Copy)]
struct Pace {
    /// Recent run time of the app's events (an exponential average).
    run: Duration,
    /// When the app's last deferred event comes back.
    horizon: Instant,
}

/// The run time assumed before one was seen.
const FIRST_GUESS: Duration = Duration::from_millis(100);
/// A deferred event comes back after at least this long...
const MIN_STEP: Duration = Duration::from_millis(5);
/// ...and after the one before it by at most this much.
const MAX_STEP: Duration = Duration::from_secs(5);

impl Deferrals {
    /// A run of one of `app`'s events took `took`.
    pub(crate) fn observe(&self, app: &AppName, took: Duration, now: Instant) {
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        let pace = apps.entry(app.clone()).or_insert(Pace {
            run: took,
            horizon: now,
        });
        pace.run = pace.run.mul_f64(0.8) + took.mul_f64(0.2);
    }

    /// How long from `now` an event of `app` (capped at `cap` at once) should wait.
    pub(crate) fn delay(&self, app: &AppName, cap: u32, now: Instant) -> Duration {
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        let pace = apps.entry(app.clone()).or_insert(Pace {
            run: FIRST_GUESS,
            horizon: now,
        });
        let step = (pace.run / cap.max(1)).clamp(MIN_STEP, MAX_STEP);
        pace.horizon = pace.horizon.max(now) + step;
        pace.horizon - now
    }

    /// Forget `app`'s pace (its limits changed or it was deleted).
    pub(crate) fn forget(&self, app: &AppName) {
        self.apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(app);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_seconds_burst_then_one_token_per_interval() {
        let start = Instant::now();
        let mut bucket = Bucket::full(4, start);
        for _ in 0..4 {
            bucket.refill(4, start);
            assert_eq!(bucket.wait(4), Duration::ZERO);
            bucket.tokens -= 1.0;
        }
        bucket.refill(4, start);
        assert_eq!(bucket.wait(4), Duration::from_millis(250));
        bucket.refill(4, start + Duration::from_millis(250));
        assert_eq!(bucket.wait(4), Duration::ZERO);
        bucket.refill(4, start + Duration::from_secs(60));
        assert!(bucket.tokens <= 4.0, "never more than a second's worth");
    }

    #[test]
    fn deferred_events_of_one_app_come_back_one_step_apart() {
        let deferrals = Deferrals::default();
        let shop = AppName::parse("shop").unwrap();
        let now = Instant::now();
        deferrals.observe(&shop, Duration::from_millis(40), now);
        let first = deferrals.delay(&shop, 2, now);
        let second = deferrals.delay(&shop, 2, now);
        assert_eq!(
            first,
            Duration::from_millis(20),
            "40 ms runs, two at a time"
        );
        assert_eq!(second, Duration::from_millis(40));
        // Later, the horizon has passed: the next one waits one step again.
        let later = now + Duration::from_secs(10);
        assert_eq!(deferrals.delay(&shop, 2, later), Duration::from_millis(20));
        let other = AppName::parse("blog").unwrap();
        assert_eq!(deferrals.delay(&other, 1, now), FIRST_GUESS);
        deferrals.forget(&shop);
        assert_eq!(deferrals.delay(&shop, 4, later), Duration::from_millis(25));
    }
}
