//! Store self-metrics (rendered by the HTTP `/metrics` endpoint).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::Inner;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A fixed-bucket latency histogram (seconds), lock-free.
#[derive(Debug)]
pub struct Histogram {
    pub bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

const LATENCY_BOUNDS: &[f64] = &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            bounds: LATENCY_BOUNDS,
            counts: LATENCY_BOUNDS.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| secs <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative bucket counts, sum (s), count — Prometheus histogram shape.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let mut acc = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(&b, c)| {
                acc += c.load(Ordering::Relaxed);
                (b, acc)
            })
            .collect();
        (
            buckets,
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            self.count.load(Ordering::Relaxed),
        )
    }
}

#[derive(Debug, Default)]
pub struct StoreMetrics {
    pub samples_appended: Counter,
    pub series_created: Counter,
    pub duplicates_replaced: Counter,
    pub flushes: Counter,
    pub compactions: Counter,
    pub partitions_dropped: Counter,
    pub wal_trimmed_bytes: Counter,
    pub wal_append_seconds: Histogram,
    pub wal_fsync_seconds: Arc<Histogram>,
    pub flush_seconds: Histogram,
    /// Rollup windows served to queries from stored rollup segments...
    pub rollup_windows_stored: Counter,
    /// ...and computed on the fly from raw samples (partitions without valid rollups).
    pub rollup_windows_computed: Counter,
}

/// Point-in-time gauges.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    pub series: usize,
    pub head_series: usize,
    pub head_samples: usize,
    pub head_bytes: usize,
    pub segments: usize,
    pub segment_bytes: u64,
    pub segment_samples: u64,
    pub quarantined_segments: usize,
}

impl Inner {
    pub(crate) fn stats(&self) -> StoreStats {
        let view = self.view.load_full();
        let mut st = StoreStats {
            series: self.index.read().len(),
            segments: view.segments.len(),
            quarantined_segments: view.quarantined.len(),
            ..Default::default()
        };
        for s in &view.segments {
            st.segment_bytes += s.entry.bytes;
            st.segment_samples += s.entry.samples;
        }
        for h in view.frozen.iter().chain(std::iter::once(&view.head)) {
            let h = h.read();
            st.head_series += h.active_series();
            st.head_samples += h.samples();
            st.head_bytes += h.bytes();
        }
        st
    }
}
