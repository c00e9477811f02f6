//! The one test kit every crate's tests use (a dev-dependency only, never shipped):
//!
//! - [`on_both_backends!`] runs each listed test once on SQLite and once on PostgreSQL;
//! - [`eventually`] awaits a condition with a deadline instead of sleeping a fixed time;
//! - [`Beacon`] is a signal a test awaits instead of sleeping until something happened;
//! - [`TestDb`] and [`TestUrl`] (from `storage::testing`) are fresh databases whose
//!   PostgreSQL schema is dropped when the handle drops;
//! - `admin` (feature `admin`) is the one admin-API test app every manager-core test
//!   file builds on.
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "admin")]
pub mod admin;
pub mod process; // cluster binaries refusing to start

pub use storage::Backend;
pub use storage::testing::{TestDb, TestUrl};

/// One `#[tokio::test]` per backend for each listed test, in modules `sqlite` and
/// `postgres` (so a test is named `sqlite::name` and `postgres::name`).
///
/// - `on_both_backends!(a, b)`: each test is `async fn a(backend: testkit::Backend)`.
/// - `on_both_backends!(with => a, b)`: `with` is `async fn with(backend, test)` that makes
///   the test's fixture, runs `test` on it and tears it down; each test takes the fixture
///   (by value or by reference, whatever `with` passes).
///
/// Tests run on a two-thread runtime, like the server.
#[macro_export]
macro_rules! on_both_backends {
    ($with:ident => $($name:ident),+ $(,)?) => {
        $crate::on_both_backends!(@each [sqlite Sqlite] $with => $($name),+);
        $crate::on_both_backends!(@each [postgres Postgres] $with => $($name),+);
    };
    ($($name:ident),+ $(,)?) => {
        $crate::on_both_backends!(@each [sqlite Sqlite] $($name),+);
        $crate::on_both_backends!(@each [postgres Postgres] $($name),+);
    };
    (@each [$module:ident $backend:ident] $with:ident => $($name:ident),+) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$with($crate::Backend::$backend, super::$name).await
                }
            )+
        }
    };
    (@each [$module:ident $backend:ident] $($name:ident),+) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::$backend).await
                }
            )+
        }
    };
}

/// The plainest fixture, for `on_both_backends!(with_db => ...)`: each test gets a
/// migrated store on a fresh database, dropped when the test ends.
pub async fn with_db(backend: Backend, test: impl AsyncFnOnce(TestDb)) {
    test(TestDb::new(backend).await).await;
}

/// Await `probe` until it returns `Some`, polling with a short, growing pause; panic
/// naming `what` when `within` passes first. A bound, never a timing: `within` is how
/// long a loaded machine may take, and a passing test returns as soon as it can.
///
/// # Panics
/// When `probe` has not returned `Some` within `within`.
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        let now = tokio::time::Instant::now();
        assert!(now < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A signal: whatever a test waits for [`light`](Beacon::light)s it, and the test
/// [`wait`](Beacon::wait)s for it instead of sleeping. It counts: `wait_for(n)` returns
/// once it has been lit `n` times. Clones share the signal.
#[derive(Clone)]
pub struct Beacon(Arc<tokio::sync::watch::Sender<u64>>);

impl Default for Beacon {
    fn default() -> Self {
        Self::new()
    }
}

impl Beacon {
    pub fn new() -> Self {
        Self(Arc::new(tokio::sync::watch::Sender::new(0)))
    }

    /// Signal once more.
    pub fn light(&self) {
        self.0.send_modify(|n| *n += 1);
    }

    /// How many times it has been lit.
    pub fn count(&self) -> u64 {
        *self.0.borrow()
    }

    /// Wait until it has been lit at least once.
    ///
    /// # Panics
    /// When it is not lit within `within`.
    pub async fn wait(&self, what: &str, within: Duration) {
        self.wait_for(1, what, within).await;
    }

    /// Wait until it has been lit at least `times` times.
    ///
    /// # Panics
    /// When it is not lit `times` times within `within`.
    pub async fn wait_for(&self, times: u64, what: &str, within: Duration) {
        let mut rx = self.0.subscribe();
        let lit = tokio::time::timeout(within, rx.wait_for(|n| *n >= times)).await;
        assert!(
            matches!(lit, Ok(Ok(_))),
            "{what}: lit {} of {times} times within {within:?}",
            self.count()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eventually_returns_what_the_probe_found() {
        let mut calls = 0;
        let found = eventually("the third call", Duration::from_secs(5), async || {
            calls += 1;
            (calls >= 3).then_some(calls)
        })
        .await;
        assert_eq!(found, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "never: not within")]
    async fn eventually_panics_at_the_deadline() {
        eventually("never", Duration::from_millis(50), async || None::<()>).await;
    }

    #[tokio::test]
    async fn a_beacon_wakes_its_waiter_and_counts() {
        let beacon = Beacon::new();
        let lit = beacon.clone();
        tokio::spawn(async move {
            lit.light();
            lit.light();
        });
        beacon
            .wait_for(2, "two lights", Duration::from_secs(5))
            .await;
        assert_eq!(beacon.count(), 2);
    }

    #[tokio::test]
    #[should_panic(expected = "unlit: lit 0 of 1 times")]
    async fn an_unlit_beacon_fails_the_wait() {
        Beacon::new().wait("unlit", Duration::from_millis(50)).await;
    }
}
