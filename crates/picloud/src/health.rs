//! Liveness, readiness and Prometheus metrics: platform routes outside `/api/v1`, no token.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use shared::Store;

/// The process-wide metrics recorder, installed on first use (tests start many servers in
/// one process; a recorder can be installed only once).
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let (recorder, handle) = Upkept::new(builder().build_recorder());
        // The hot paths' own histograms (`shared::metrics`) start busy spells too.
        let trigger = Arc::clone(&recorder.trigger);
        shared::metrics::on_sample(move || trigger.local_sampled());
        // Fails only if another recorder is installed, and then ours just renders empty.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets(&shared::metrics::BUCKETS)
        .expect("the bucket list is not empty")
}

/// Histogram samples between two upkeeps.
const UPKEEP_EVERY: u64 = 4096;

/// The Prometheus recorder, with its histograms drained as they fill, and the end of each
/// busy spell noticed.
///
/// The exporter keeps every histogram sample until it renders or runs upkeep; with nobody
/// scraping `/metrics`, a busy server would grow by every request's samples without bound.
/// Every `UPKEEP_EVERY` samples wake a thread of its own that runs the upkeep, so memory
/// stays bounded. The first sample after a rest wakes it too: it then looks every `QUIET`
/// until no sample came in (no script ran, no request was served), gives memory back
/// (`memory::release`) and rests until the next sample. An idle server never wakes up.
struct Upkept {
    inner: PrometheusRecorder,
    trigger: Arc<UpkeepTrigger>,
}

struct UpkeepTrigger {
    /// The exporter's histogram samples (the hot paths' local ones count their own).
    samples: AtomicU64,
    /// No busy spell is being watched: the next sample wakes the thread.
    resting: AtomicBool,
    wake: SyncSender<()>,
}

/// How long without a histogram sample ends a busy spell.
const QUIET: Duration = Duration::from_secs(1);

impl Upkept {
    fn new(inner: PrometheusRecorder) -> (Self, PrometheusHandle) {
        let handle = inner.handle();
        let (wake, woken) = sync_channel(1);
        let upkeep = handle.clone();
        let metadata = Metadata::new(module_path!(), metrics::Level::INFO, None);
        let runs =
            inner.register_counter(&Key::from_name("picloud_metrics_upkeeps_total"), &metadata);
        let releases =
            inner.register_counter(&Key::from_name("picloud_memory_releases_total"), &metadata);
        let trigger = Arc::new(UpkeepTrigger {
            samples: AtomicU64::new(0),
            resting: AtomicBool::new(true),
            wake,
        });
        let watched = Arc::clone(&trigger);
        let spawned = std::thread::Builder::new()
            .name("picloud-metrics".into())
            .stack_size(256 * 1024)
            .spawn(move || watched.run(&woken, &upkeep, &runs, &releases));
        if let Err(error) = spawned {
            tracing::warn!(%error, "no metrics upkeep thread; histograms drain only on /metrics");
        }
        (Upkept { inner, trigger }, handle)
    }
}

impl UpkeepTrigger {
    /// Count a sample; wake the thread when an upkeep is due or a busy spell begins.
    fn sampled(&self) {
        let seen = self.samples.fetch_add(1, Ordering::Relaxed);
        let due = seen % UPKEEP_EVERY == UPKEEP_EVERY - 1;
        // The flag is looked at first, so a due upkeep does not leave it set.
        if self.spell_begins() || due {
            // Full means the thread is already due to wake.
            let _ = self.wake.try_send(());
        }
    }

    /// A sample of a local histogram: no upkeep is due for it, but it begins a busy spell.
    fn local_sampled(&self) {
        if self.spell_begins() {
            let _ = self.wake.try_send(());
        }
    }

    /// Whether this sample ends a rest (then the thread is to be woken). Read before
    /// swapped: the flag's line is written once per busy spell, not per sample.
    fn spell_begins(&self) -> bool {
        self.resting.load(Ordering::Relaxed) && self.resting.swap(false, Ordering::Relaxed)
    }

    /// Every histogram sample so far, the exporter's and the local ones: unchanged over
    /// `QUIET`, the busy spell is over.
    fn activity(&self) -> u64 {
        self.samples
            .load(Ordering::Relaxed)
            .wrapping_add(shared::metrics::samples())
    }

    /// The thread: upkeep when `UPKEEP_EVERY` samples came in since the last one (on any
    /// wake-up, so a wake-up that found the channel full is not lost), memory given back
    /// once per busy spell.
    fn run(
        &self,
        woken: &Receiver<()>,
        handle: &PrometheusHandle,
        runs: &Counter,
        releases: &Counter,
    ) {
        let mut upkept = 0;
        let mut upkeep = |now: u64| {
            if now - upkept >= UPKEEP_EVERY {
                handle.run_upkeep();
                runs.increment(1);
                upkept = now - now % UPKEEP_EVERY;
            }
        };
        while woken.recv().is_ok() {
            loop {
                let seen = self.samples.load(Ordering::Relaxed);
                upkeep(seen);
                let active = self.activity();
                match woken.recv_timeout(QUIET) {
                    Ok(()) => {}
                    Err(RecvTimeoutError::Timeout) if self.activity() == active => {
                        crate::memory::release();
                        releases.increment(1);
                        self.resting.store(true, Ordering::Relaxed);
                        break;
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        }
    }
}

impl Recorder for Upkept {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.inner.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(UpkeptHistogram {
            inner: self.inner.register_histogram(key, metadata),
            trigger: Arc::clone(&self.trigger),
        }))
    }
}

struct UpkeptHistogram {
    inner: Histogram,
    trigger: Arc<UpkeepTrigger>,
}

impl HistogramFn for UpkeptHistogram {
    fn record(&self, value: f64) {
        self.inner.record(value);
        self.trigger.sampled();
    }
}

pub fn router(store: Store) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(store)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(store): State<Store>) -> Response {
    match store.health.ping().await {
        Ok(()) => Json(serde_json::json!({"status": "ready", "database": store.health.backend()}))
            .into_response(),
        Err(e) => {
            tracing::warn!(error = ?e, "readiness check failed");
            let behind = std::error::Error::source(&e)
                .is_some_and(|s| s.downcast_ref::<storage::SchemaNotCurrent>().is_some());
            let message = if behind {
                "the database schema is not migrated"
            } else {
                "the database is not reachable"
            };
            let body = shared::ErrorBody::new(shared::ErrorCode::Unavailable, message);
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

async fn metrics_text() -> Response {
    let handle = metrics_handle();
    // The hot paths' counts wait per thread until now; their histograms render themselves.
    shared::metrics::fold();
    handle.run_upkeep();
    let mut text = handle.render();
    shared::metrics::render(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// A recorder of its own (with its own upkeep thread) and one histogram of it.
    fn recorder() -> (Upkept, PrometheusHandle, Histogram) {
        let (recorder, handle) = Upkept::new(builder().build_recorder());
        let key = Key::from_name("test_latency_seconds");
        let metadata = Metadata::new("test", metrics::Level::INFO, None);
        let histogram = recorder.register_histogram(&key, &metadata);
        (recorder, handle, histogram)
    }

    /// The rendered metrics once they contain `line` (the upkeep thread's work is
    /// observed, not waited for by a fixed time); fails after 10 s.
    fn rendered_with(handle: &PrometheusHandle, line: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = handle.render();
            if text.contains(line) {
                return text;
            }
            assert!(Instant::now() < deadline, "no {line}: {text}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn histogram_samples_are_drained_as_they_fill_without_a_scrape() {
        let (_recorder, handle, histogram) = recorder();
        for _ in 0..UPKEEP_EVERY - 1 {
            histogram.record(0.5);
        }
        assert!(!handle.render().contains("picloud_metrics_upkeeps_total 1"));
        histogram.record(0.5);
        let text = rendered_with(&handle, "picloud_metrics_upkeeps_total 1");
        assert!(
            text.contains(&format!("test_latency_seconds_count {UPKEEP_EVERY}")),
            "{text}"
        );
    }

    #[test]
    fn memory_is_given_back_once_per_busy_spell() {
        let (_recorder, handle, histogram) = recorder();
        assert!(!handle.render().contains("picloud_memory_releases_total 1"));
        for _ in 0..3 {
            histogram.record(0.5);
        }
        rendered_with(&handle, "picloud_memory_releases_total 1");
        histogram.record(0.5);
        rendered_with(&handle, "picloud_memory_releases_total 2");
        assert!(!handle.render().contains("picloud_memory_releases_total 3"));
    }

    #[test]
    fn a_local_histogram_sample_begins_a_busy_spell_too() {
        let (recorder, handle, _histogram) = recorder();
        recorder.trigger.local_sampled();
        rendered_with(&handle, "picloud_memory_releases_total 1");
        assert!(
            !handle.render().contains("picloud_metrics_upkeeps_total 1"),
            "no upkeep is due for local samples"
        );
    }
}
