//! Counters and histograms for the hot paths, kept per thread: a counter is folded into
//! the exporter's at each scrape (`fold`), a histogram renders itself (`render`).
//!
//! The exporter's counter is one atomic word (and a generation word beside it) that every
//! worker writes: on a server whose workers answer on every core, the cache line moves
//! between cores on each request, and a request bumps several counters and two latency
//! histograms, whose every sample the exporter also stores (with a timestamp) until an
//! upkeep folds it. Here each thread adds to slots of its own (a cache line per thread, for
//! up to `SHARDS` threads; past that, threads share a slot, still correct), and a
//! histogram is its bucket counts.
//!
//! What must stay true: a scrape sees every increment and every sample made before it
//! began; nothing is lost when a slot is shared; memory per metric is fixed; nothing runs
//! on a timer.
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError, Weak};

use metrics::Counter;

/// Slots per metric: threads beyond it share slots.
const SHARDS: usize = 16;

/// A thread's slot index, given out in order of first use.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    INDEX.with(|index| {
        let mut i = index.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            index.set(i);
        }
        i
    })
}

/// One cache line (two, against the adjacent-line prefetcher) per slot.
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

/// What `fold` drains into the exporter, or `render` writes itself (and `samples` counts).
trait Local: Send + Sync {
    fn fold(&self) {}
    fn render(&self, _out: &mut String) {}
    /// Samples taken so far (a histogram's count).
    fn samples(&self) -> u64 {
        0
    }
}

/// Every local metric alive in the process.
static LOCAL: LazyLock<Mutex<Vec<Weak<dyn Local>>>> = LazyLock::new(|| Mutex::new(Vec::new()));

fn register(metric: &Arc<impl Local + 'static>) {
    let metric: Arc<dyn Local> = Arc::clone(metric) as Arc<dyn Local>;
    LOCAL
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Arc::downgrade(&metric));
}

/// Every local metric still alive (the dead ones are forgotten).
fn alive() -> Vec<Arc<dyn Local>> {
    let mut local = LOCAL.lock().unwrap_or_else(PoisonError::into_inner);
    local.retain(|metric| metric.strong_count() > 0);
    local.iter().filter_map(Weak::upgrade).collect()
}

/// Hand every thread's counts to the exporter: call before rendering.
pub fn fold() {
    for metric in alive() {
        metric.fold();
    }
}

/// Append the Prometheus text of every local histogram alive (after the exporter's). Make
/// one `LocalHistogram` per name (a static): each renders a family of its own.
pub fn render(out: &mut String) {
    for metric in alive() {
        metric.render(out);
    }
}

/// Samples taken so far by every local histogram alive: what shows that the hot paths
/// are busy (a count that did not move in a while: they are not).
pub fn samples() -> u64 {
    alive().iter().map(|metric| metric.samples()).sum()
}

/// A count that each thread adds to on a cache line of its own; reading it sums them.
pub struct Tally {
    slots: [Padded<AtomicU64>; SHARDS],
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            slots: std::array::from_fn(|_| Padded::default()),
        }
    }
}

impl Tally {
    pub fn add(&self, n: u64) {
        self.slots[shard()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count so far.
    pub fn sum(&self) -> u64 {
        self.slots
            .iter()
            .map(|slot| slot.0.load(Ordering::Relaxed))
            .sum()
    }

    /// The count since the last take, and zero from now on.
    fn take(&self) -> u64 {
        self.slots
            .iter()
            .map(|slot| slot.0.swap(0, Ordering::Relaxed))
            .sum()
    }
}

/// A counter that each thread adds to on a cache line of its own.
#[derive(Clone)]
pub struct LocalCounter(Arc<CounterSlots>);

struct CounterSlots {
    inner: Counter,
    pending: Tally,
}

impl LocalCounter {
    /// Counts for `inner` (an exporter's counter, e.g. from `metrics::counter!`).
    pub fn new(inner: Counter) -> Self {
        let slots = Arc::new(CounterSlots {
            inner,
            pending: Tally::default(),
        });
        register(&slots);
        LocalCounter(slots)
    }

    pub fn increment(&self, n: u64) {
        self.0.pending.add(n);
    }
}

impl Local for CounterSlots {
    fn fold(&self) {
        let n = self.pending.take();
        if n > 0 {
            self.inner.increment(n);
        }
    }
}

impl Drop for CounterSlots {
    fn drop(&mut self) {
        Local::fold(self);
    }
}

/// Bucket bounds (seconds) of every latency histogram, the exporter's and the local ones:
/// Prometheus histograms add up across nodes (summaries do not) and cost a binary search
/// per sample instead of a quantile sketch.
pub const BUCKETS: [f64; 16] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0,
];

/// Called on each local histogram sample (set once, by the server): what tells the metrics
/// thread that a busy spell began.
static ACTIVITY: OnceLock<Box<dyn Fn() + Send + Sync>> = OnceLock::new();

/// Set what each local histogram sample calls; only the first call sets it.
pub fn on_sample(hook: impl Fn() + Send + Sync + 'static) {
    let _ = ACTIVITY.set(Box::new(hook));
}

/// A Prometheus histogram (seconds, `BUCKETS`) that each thread counts into on cache lines
/// of its own, and that renders itself (`render`): a sample costs a binary search and
/// two relaxed additions, and its memory is fixed. The sum is kept in whole
/// nanoseconds.
#[derive(Clone)]
pub struct LocalHistogram(Arc<HistogramSlots>);

struct HistogramSlots {
    name: &'static str,
    slots: [Padded<Buckets>; SHARDS],
}

#[derive(Default)]
struct Buckets {
    /// One count per bound, then the `+Inf` bucket (not cumulative); their total is the
    /// histogram's count.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl LocalHistogram {
    /// The histogram `name` (no labels): rendered by `render`, never by the exporter.
    pub fn new(name: &'static str) -> Self {
        let slots = Arc::new(HistogramSlots {
            name,
            slots: std::array::from_fn(|_| Padded::default()),
        });
        register(&slots);
        LocalHistogram(slots)
    }

    pub fn record(&self, seconds: f64) {
        let slot = &self.0.slots[shard()].0;
        let bucket = BUCKETS.partition_point(|bound| *bound < seconds);
        slot.counts[bucket].fetch_add(1, Ordering::Relaxed);
        // Negative and NaN samples add nothing to the sum; huge ones saturate.
        let nanos = (seconds * 1e9) as u64;
        slot.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        if let Some(hook) = ACTIVITY.get() {
            hook();
        }
    }
}

impl Local for HistogramSlots {
    fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let mut counts = [0u64; BUCKETS.len() + 1];
        let mut sum_nanos = 0u64;
        for slot in &self.slots {
            for (total, n) in counts.iter_mut().zip(&slot.0.counts) {
                *total += n.load(Ordering::Relaxed);
            }
            sum_nanos = sum_nanos.wrapping_add(slot.0.sum_nanos.load(Ordering::Relaxed));
        }
        let name = self.name;
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(counts) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += counts[BUCKETS.len()];
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", sum_nanos as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {cumulative}");
        out.push('\n');
    }

    fn samples(&self) -> u64 {
        self.slots
            .iter()
            .flat_map(|slot| &slot.0.counts)
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use metrics::CounterFn;

    use super::*;

    /// `fold` drains every local metric of the process: these tests take turns.
    static TURN: Mutex<()> = Mutex::new(());

    /// An exporter's counter stand-in: what reached it.
    #[derive(Default)]
    struct Seen {
        count: AtomicU64,
    }

    impl CounterFn for Seen {
        fn increment(&self, value: u64) {
            self.count.fetch_add(value, Ordering::Relaxed);
        }
        fn absolute(&self, value: u64) {
            self.count.store(value, Ordering::Relaxed);
        }
    }

    #[test]
    fn every_threads_counts_reach_the_exporter_at_the_fold_and_not_before() {
        let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = Arc::new(Seen::default());
        let counter = LocalCounter::new(Counter::from_arc(Arc::clone(&seen)));
        // More threads than slots: some share one.
        let threads: Vec<_> = (0..SHARDS + 4)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counter.increment(1);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(seen.count.load(Ordering::Relaxed), 0, "kept per thread");
        assert_eq!(counter.0.pending.sum(), 1000 * (SHARDS as u64 + 4));
        fold();
        assert_eq!(
            seen.count.load(Ordering::Relaxed),
            1000 * (SHARDS as u64 + 4)
        );
        counter.increment(5);
        fold();
        fold();
        assert_eq!(
            seen.count.load(Ordering::Relaxed),
            1000 * (SHARDS as u64 + 4) + 5,
            "a fold takes each count once"
        );
    }

    #[test]
    fn a_dropped_counter_hands_over_what_it_kept() {
        let seen = Arc::new(Seen::default());
        let counter = LocalCounter::new(Counter::from_arc(Arc::clone(&seen)));
        counter.increment(3);
        drop(counter);
        assert_eq!(seen.count.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_histogram_renders_cumulative_buckets_sum_and_count_from_every_thread() {
        let histogram = LocalHistogram::new("test_local_seconds");
        histogram.record(0.000_1);
        histogram.record(0.001);
        std::thread::spawn({
            let histogram = histogram.clone();
            move || {
                histogram.record(0.002);
                histogram.record(60.0);
            }
        })
        .join()
        .unwrap();
        let mut text = String::new();
        histogram.0.render(&mut text);
        for line in [
            "# TYPE test_local_seconds histogram",
            "test_local_seconds_bucket{le=\"0.00025\"} 1",
            "test_local_seconds_bucket{le=\"0.001\"} 2",
            "test_local_seconds_bucket{le=\"0.0025\"} 3",
            "test_local_seconds_bucket{le=\"30\"} 3",
            "test_local_seconds_bucket{le=\"+Inf\"} 4",
            "test_local_seconds_sum 60.0031",
            "test_local_seconds_count 4",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        let mut all = String::new();
        render(&mut all);
        assert!(all.contains("test_local_seconds_count 4"), "{all}");
        assert_eq!(histogram.0.samples(), 4);
        assert!(samples() >= 4);
    }
}
