//! Metrics without contention on the data path: every counter, gauge and histogram
//! keeps one cache-line-padded cell per worker thread (the slot is the thread's
//! [`runtime::worker_index`](crate::runtime::worker_index); other threads share one
//! extra slot), workers only ever touch their own cell, and a scrape sums the cells.
//! [`prometheus`] renders the text exposition format; `edge` renders the edge's families;
//! [`process`] the standard process families both the edge and the agent append.

pub mod agent;
pub mod edge;
pub mod fleet;
pub mod process;
pub mod prometheus;
pub mod state;

use std::{
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        OnceLock,
    },
    time::Duration,
};

/// Slots per metric: one per core (at most 64) plus one shared by other threads.
fn slots() -> usize {
    static SLOTS: OnceLock<usize> = OnceLock::new();
    *SLOTS.get_or_init(|| crate::runtime::default_workers().clamp(1, 64) + 1)
}

#[inline]
fn my_slot() -> usize {
    let n = slots();
    match crate::runtime::worker_index() {
        None => n - 1,
        Some(s) => s % (n - 1).max(1),
    }
}

#[repr(align(128))]
#[derive(Default)]
struct PaddedU64(AtomicU64);

#[repr(align(128))]
#[derive(Default)]
struct PaddedI64(AtomicI64);

/// A monotonically increasing count.
pub struct Counter(Box<[PaddedU64]>);

impl Default for Counter {
    fn default() -> Self {
        Self((0..slots()).map(|_| PaddedU64::default()).collect())
    }
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.get())
    }
}

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0[my_slot()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The sum over all threads.
    pub fn get(&self) -> u64 {
        self.0.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }
}

/// A value that goes up and down (active connections). Increments and decrements of
/// one thing happen on one thread (monoio tasks do not migrate), so per-thread cells
/// may go negative; their sum is right.
pub struct Gauge(Box<[PaddedI64]>);

impl Default for Gauge {
    fn default() -> Self {
        Self((0..slots()).map(|_| PaddedI64::default()).collect())
    }
}

impl Gauge {
    /// Counts one up until the guard drops.
    #[inline]
    pub fn track(&self) -> GaugeGuard<'_> {
        let slot = my_slot();
        self.0[slot].0.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(self, slot)
    }

    /// The sum over all threads.
    pub fn get(&self) -> i64 {
        self.0.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }
}

/// Decrements its [`Gauge`] (in the cell it incremented) on drop.
pub struct GaugeGuard<'a>(&'a Gauge, usize);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0 .0[self.1].0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Upper bounds of the latency histograms' buckets, in microseconds.
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

#[repr(align(128))]
#[derive(Default)]
struct HistogramCell {
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

/// A latency histogram with the fixed [`LATENCY_BUCKETS_US`] bounds.
pub struct Histogram(Box<[HistogramCell]>);

impl Default for Histogram {
    fn default() -> Self {
        Self((0..slots()).map(|_| HistogramCell::default()).collect())
    }
}

/// Summed histogram: per-bucket counts (not cumulative; the last is +Inf), and the sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket, the last one above every bound.
    pub buckets: Vec<u64>,
    /// Sum of observations, in microseconds.
    pub sum_us: u64,
}

impl Histogram {
    /// Records one observation.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = LATENCY_BUCKETS_US.partition_point(|&b| b < us);
        let cell = &self.0[my_slot()];
        cell.buckets[i].fetch_add(1, Ordering::Relaxed);
        cell.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The sum over all threads.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = vec![0; LATENCY_BUCKETS_US.len() + 1];
        let mut sum_us = 0;
        for cell in self.0.iter() {
            for (b, c) in buckets.iter_mut().zip(&cell.buckets) {
                *b += c.load(Ordering::Relaxed);
            }
            sum_us += cell.sum_us.load(Ordering::Relaxed);
        }
        HistogramSnapshot { buckets, sum_us }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_over_threads() {
        let c = std::sync::Arc::new(Counter::default());
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let c = c.clone();
                std::thread::spawn(move || {
                    crate::runtime::set_worker_index(i);
                    for _ in 0..1000 {
                        c.inc();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        c.add(5);
        assert_eq!(c.get(), 4005);
    }

    #[test]
    fn gauges_return_to_zero_and_histograms_bucket() {
        let g = Gauge::default();
        {
            let _a = g.track();
            let _b = g.track();
            assert_eq!(g.get(), 2);
        }
        assert_eq!(g.get(), 0);
        let h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_micros(101));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[1], 1);
        assert_eq!(*s.buckets.last().unwrap(), 1);
        assert_eq!(s.sum_us, 60_000_201);
    }
}
