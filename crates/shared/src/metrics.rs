//! Counters and histograms for the hot paths, kept per thread and folded into the exporter's
//! own at each scrape (`fold`).
//!
//! The exporter's counter is one atomic word (and a generation word beside it) that every
//! worker writes: on a server whose workers answer on every core, the cache line moves
//! between cores on each request, and a request bumps several such counters and two
//! histograms. Here each thread adds to a slot of its own (one cache line per thread, for
//! up to `SHARDS` threads; past that, threads share a slot, still correct), and a
//! histogram keeps a few samples per thread before it hands them over in one go.
//!
//! What must stay true: a scrape sees every increment and every sample made before it
//! began (`fold` drains every slot first); nothing is lost when a slot is shared; memory
//! per metric is fixed (no buffer grows past `BATCH` samples); nothing runs on a timer.
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use metrics::{Counter, Histogram};

/// Slots per metric: threads beyond it share slots.
const SHARDS: usize = 16;
/// Samples a thread keeps before it records them in the exporter's histogram.
const BATCH: usize = 32;

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

/// What `fold` drains.
trait Fold: Send + Sync {
    fn fold(&self);
}

/// Every local metric alive in the process.
static LOCAL: LazyLock<Mutex<Vec<Weak<dyn Fold>>>> = LazyLock::new(|| Mutex::new(Vec::new()));

fn register(metric: &Arc<impl Fold + 'static>) {
    let metric: Arc<dyn Fold> = Arc::clone(metric) as Arc<dyn Fold>;
    LOCAL
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Arc::downgrade(&metric));
}

/// Hand every thread's counts and samples to the exporter: call before rendering.
pub fn fold() {
    let alive: Vec<Arc<dyn Fold>> = {
        let mut local = LOCAL.lock().unwrap_or_else(PoisonError::into_inner);
        local.retain(|metric| metric.strong_count() > 0);
        local.iter().filter_map(Weak::upgrade).collect()
    };
    for metric in alive {
        metric.fold();
    }
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

impl Fold for CounterSlots {
    fn fold(&self) {
        let n = self.pending.take();
        if n > 0 {
            self.inner.increment(n);
        }
    }
}

impl Drop for CounterSlots {
    fn drop(&mut self) {
        self.fold();
    }
}

/// A histogram whose samples wait, up to `BATCH` per thread, in a buffer of their thread.
#[derive(Clone)]
pub struct LocalHistogram(Arc<HistogramSlots>);

struct HistogramSlots {
    inner: Histogram,
    slots: [Padded<Mutex<Samples>>; SHARDS],
}

#[derive(Default)]
struct Samples {
    len: usize,
    values: [f64; BATCH],
}

impl Samples {
    fn drain_into(&mut self, histogram: &Histogram) {
        for value in &self.values[..self.len] {
            histogram.record(*value);
        }
        self.len = 0;
    }
}

impl LocalHistogram {
    /// Samples for `inner` (an exporter's histogram, e.g. from `metrics::histogram!`).
    pub fn new(inner: Histogram) -> Self {
        let slots = Arc::new(HistogramSlots {
            inner,
            slots: std::array::from_fn(|_| Padded::default()),
        });
        register(&slots);
        LocalHistogram(slots)
    }

    pub fn record(&self, value: f64) {
        let slots = &*self.0;
        let mut samples = slots.slots[shard()]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let len = samples.len;
        samples.values[len] = value;
        samples.len = len + 1;
        if samples.len == BATCH {
            samples.drain_into(&slots.inner);
        }
    }
}

impl Fold for HistogramSlots {
    fn fold(&self) {
        for slot in &self.slots {
            slot.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drain_into(&self.inner);
        }
    }
}

impl Drop for HistogramSlots {
    fn drop(&mut self) {
        self.fold();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use metrics::{CounterFn, HistogramFn};

    use super::*;

    /// `fold` drains every local metric of the process: these tests take turns.
    static TURN: Mutex<()> = Mutex::new(());

    /// An exporter's counter and histogram stand-in: what reached them.
    #[derive(Default)]
    struct Seen {
        count: AtomicU64,
        samples: Mutex<Vec<f64>>,
    }

    impl CounterFn for Seen {
        fn increment(&self, value: u64) {
            self.count.fetch_add(value, Ordering::Relaxed);
        }
        fn absolute(&self, value: u64) {
            self.count.store(value, Ordering::Relaxed);
        }
    }

    impl HistogramFn for Seen {
        fn record(&self, value: f64) {
            self.samples.lock().unwrap().push(value);
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
    fn a_full_batch_is_handed_over_at_once_and_the_rest_at_the_fold() {
        let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = Arc::new(Seen::default());
        let histogram = LocalHistogram::new(Histogram::from_arc(Arc::clone(&seen)));
        for i in 0..BATCH - 1 {
            histogram.record(i as f64);
        }
        assert!(seen.samples.lock().unwrap().is_empty());
        histogram.record(99.0);
        assert_eq!(seen.samples.lock().unwrap().len(), BATCH);
        histogram.record(7.0);
        std::thread::spawn({
            let histogram = histogram.clone();
            move || histogram.record(8.0)
        })
        .join()
        .unwrap();
        assert_eq!(seen.samples.lock().unwrap().len(), BATCH);
        fold();
        let samples = seen.samples.lock().unwrap().clone();
        assert_eq!(samples.len(), BATCH + 2);
        assert_eq!(samples[BATCH - 1], 99.0);
        let mut rest = samples[BATCH..].to_vec();
        rest.sort_by(f64::total_cmp);
        assert_eq!(rest, [7.0, 8.0]);
    }
}
