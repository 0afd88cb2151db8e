//! Ingest: validated, exactly-once cost events into the store.
//!
//! Paths: Kafka consumer group ([`kafka`]), HTTP NDJSON push and Prometheus remote-write
//! (`crate::api::ingest`). All of them go through one [`pipeline::Pipeline`]:
//! parse + validate ([`event`]) → price ([`pricing`]) → de-duplicate by `event_id`
//! ([`dedup`]) → batch → one atomic `Store::append` that also carries the source
//! positions (Kafka offsets) the batch advances. See `docs/ingest.md`.

pub mod dedup;
pub mod event;
pub mod failpoint;
pub mod generator;
pub mod handover;
mod inbox;
pub mod kafka;
mod key_table;
pub mod pipeline;
pub mod pricing;
pub mod remote_write;
mod scan;
mod shape_cache;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;

pub use event::{Reject, RejectCode, ValidationLimits};
pub use pipeline::{Batch, Pipeline};
pub use pricing::PriceBook;

/// Where an event came from (the `source` label of the self-metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Kafka,
    Http,
    RemoteWrite,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Kafka => "kafka",
            Source::Http => "http",
            Source::RemoteWrite => "remote_write",
        }
    }
}

/// Freshness buckets (seconds): event time → written and visible. Fine below 1 s, where
/// the freshness goal (p99 < 250 ms) is judged.
const FRESHNESS_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    3600.0,
];

#[derive(Debug)]
pub struct FreshnessHistogram {
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Default for FreshnessHistogram {
    fn default() -> Self {
        FreshnessHistogram {
            counts: FRESHNESS_BOUNDS.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

/// Observations gathered by one thread and added to a [`FreshnessHistogram`] at once:
/// observing every event directly cost three locked atomic adds each.
#[derive(Debug)]
pub struct HistogramBatch {
    counts: [u64; FRESHNESS_BOUNDS.len()],
    sum_micros: u64,
    count: u64,
}

impl Default for HistogramBatch {
    fn default() -> Self {
        HistogramBatch {
            counts: [0; FRESHNESS_BOUNDS.len()],
            sum_micros: 0,
            count: 0,
        }
    }
}

impl HistogramBatch {
    pub fn observe(&mut self, secs: f64) {
        let secs = secs.max(0.0);
        if let Some(i) = FRESHNESS_BOUNDS.iter().position(|&b| secs <= b) {
            self.counts[i] += 1;
        }
        self.sum_micros += (secs * 1e6) as u64;
        self.count += 1;
    }
}

impl FreshnessHistogram {
    pub fn observe(&self, secs: f64) {
        let mut one = HistogramBatch::default();
        one.observe(secs);
        self.add(&mut one);
    }

    /// Adds `batch` and empties it.
    pub fn add(&self, batch: &mut HistogramBatch) {
        if batch.count == 0 {
            return;
        }
        for (c, n) in self.counts.iter().zip(&batch.counts) {
            if *n > 0 {
                c.fetch_add(*n, Ordering::Relaxed);
            }
        }
        self.sum_micros.fetch_add(batch.sum_micros, Ordering::Relaxed);
        self.count.fetch_add(batch.count, Ordering::Relaxed);
        *batch = HistogramBatch::default();
    }

    /// Cumulative buckets, sum (s), count.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let mut acc = 0;
        let b = FRESHNESS_BOUNDS
            .iter()
            .zip(&self.counts)
            .map(|(&le, c)| {
                acc += c.load(Ordering::Relaxed);
                (le, acc)
            })
            .collect();
        (
            b,
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            self.count.load(Ordering::Relaxed),
        )
    }
}

/// Ingest self-metrics, rendered on `/metrics`.
#[derive(Debug, Default)]
pub struct IngestMetrics {
    pub accepted: Mutex<BTreeMap<&'static str, u64>>,
    pub rejected: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    pub dlq_writes: Mutex<BTreeMap<String, u64>>,
    pub dedup_hits: AtomicU64,
    pub dedup_evicted: AtomicU64,
    pub unpriced: Mutex<BTreeMap<&'static str, u64>>,
    pub freshness: FreshnessHistogram,
    /// Kafka messages: consumed by tally − producer create time (the broker's and the
    /// producer's share of freshness; the rest is tally's batching and fsync).
    pub kafka_delay: FreshnessHistogram,
    /// The synchronous offset commit before each Kafka batch's append (on the freshness
    /// path: a slow coordinator delays every batch behind it).
    pub offset_commit: FreshnessHistogram,
    /// (topic, partition) → (high watermark − next offset).
    pub lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// (topic, partition) → next offset durable in the store, for the owned partitions.
    pub stored_offsets: Mutex<BTreeMap<(String, i32), i64>>,
    pub batches: AtomicU64,
    pub store_errors: AtomicU64,
    pub dlq_errors: AtomicU64,
    pub rebalances: AtomicU64,
    /// Times the consumer paused its partitions because the writer was behind.
    pub pauses: AtomicU64,
    /// Messages re-read on start because this process committed them and crashed before
    /// storing them (see `handover`).
    pub handover_recovered: AtomicU64,
    /// Kafka configured in this process.
    pub kafka_enabled: AtomicBool,
    /// Last broker health probe succeeded.
    pub kafka_up: AtomicBool,
    /// Unix seconds of the last failed probe (0: never).
    pub kafka_last_error: AtomicI64,
}

impl IngestMetrics {
    pub fn add_accepted(&self, src: Source, n: u64) {
        if n > 0 {
            *self.accepted.lock().entry(src.as_str()).or_default() += n;
        }
    }

    pub fn add_rejected(&self, src: Source, code: RejectCode, n: u64) {
        *self.rejected.lock().entry((src.as_str(), code.as_str())).or_default() += n;
    }

    /// True when Kafka ingest is configured and the broker is unreachable.
    pub fn degraded(&self) -> bool {
        self.kafka_enabled.load(Ordering::Relaxed) && !self.kafka_up.load(Ordering::Relaxed)
    }

    /// Appends the Prometheus text exposition of every ingest metric.
    pub fn render(&self, out: &mut String) {
        let header = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        header(
            out,
            "tally_ingest_events_accepted_total",
            "counter",
            "Events written to the store, by source.",
        );
        for (src, n) in self.accepted.lock().iter() {
            let _ = writeln!(out, "tally_ingest_events_accepted_total{{source=\"{src}\"}} {n}");
        }
        header(
            out,
            "tally_ingest_events_rejected_total",
            "counter",
            "Events rejected by validation, by source and reason.",
        );
        for ((src, code), n) in self.rejected.lock().iter() {
            let _ = writeln!(
                out,
                "tally_ingest_events_rejected_total{{source=\"{src}\",reason=\"{code}\"}} {n}"
            );
        }
        header(
            out,
            "tally_ingest_dlq_writes_total",
            "counter",
            "Messages written (acknowledged) to dead-letter topics.",
        );
        for (topic, n) in self.dlq_writes.lock().iter() {
            let _ = writeln!(out, "tally_ingest_dlq_writes_total{{topic=\"{topic}\"}} {n}");
        }
        header(
            out,
            "tally_ingest_dedup_hits_total",
            "counter",
            "Re-deliveries dropped by event_id de-duplication.",
        );
        let _ = writeln!(
            out,
            "tally_ingest_dedup_hits_total {}",
            self.dedup_hits.load(Ordering::Relaxed)
        );
        header(
            out,
            "tally_ingest_dedup_evicted_total",
            "counter",
            "Dedup keys dropped before the window ended (memory bound).",
        );
        let _ = writeln!(
            out,
            "tally_ingest_dedup_evicted_total {}",
            self.dedup_evicted.load(Ordering::Relaxed)
        );
        header(
            out,
            "tally_ingest_unpriced_events_total",
            "counter",
            "Events with a sku but no computable price, by reason.",
        );
        for (r, n) in self.unpriced.lock().iter() {
            let _ = writeln!(out, "tally_ingest_unpriced_events_total{{reason=\"{r}\"}} {n}");
        }
        header(
            out,
            "tally_ingest_consumer_lag",
            "gauge",
            "Kafka high watermark minus the next offset to store.",
        );
        for ((t, p), lag) in self.lag.lock().iter() {
            let _ = writeln!(
                out,
                "tally_ingest_consumer_lag{{topic=\"{t}\",partition=\"{p}\"}} {lag}"
            );
        }
        header(
            out,
            "tally_ingest_stored_offset",
            "gauge",
            "Next offset of each owned partition that is durable in the store (the group's position).",
        );
        for ((t, p), o) in self.stored_offsets.lock().iter() {
            let _ = writeln!(out, "tally_ingest_stored_offset{{topic=\"{t}\",partition=\"{p}\"}} {o}");
        }
        for (name, help, h) in [
            (
                "tally_ingest_freshness_seconds",
                "Write time minus event time of accepted events.",
                &self.freshness,
            ),
            (
                "tally_ingest_kafka_delay_seconds",
                "Time from the Kafka producer's create timestamp to tally consuming the message.",
                &self.kafka_delay,
            ),
            (
                "tally_ingest_offset_commit_seconds",
                "Round trip of the synchronous Kafka offset commit that precedes each batch's append.",
                &self.offset_commit,
            ),
        ] {
            header(out, name, "histogram", help);
            let (buckets, sum, count) = h.snapshot();
            for (le, c) in buckets {
                let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {c}");
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
            );
        }
        for (name, help, v) in [
            (
                "tally_ingest_batches_total",
                "Batches appended to the store.",
                &self.batches,
            ),
            (
                "tally_ingest_store_errors_total",
                "Failed store appends (retried).",
                &self.store_errors,
            ),
            (
                "tally_ingest_dlq_errors_total",
                "Failed dead-letter deliveries (retried).",
                &self.dlq_errors,
            ),
            (
                "tally_ingest_rebalances_total",
                "Consumer group rebalances seen.",
                &self.rebalances,
            ),
            (
                "tally_ingest_partition_pauses_total",
                "Times Kafka partitions were paused because the store writer was behind (backpressure).",
                &self.pauses,
            ),
            (
                "tally_ingest_handover_recovered_messages_total",
                "Messages committed to Kafka but not stored before a crash, ingested on restart.",
                &self.handover_recovered,
            ),
        ] {
            header(out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
        header(
            out,
            "tally_ingest_kafka_up",
            "gauge",
            "1 when the Kafka broker answered the last health probe.",
        );
        let up = self.kafka_up.load(Ordering::Relaxed) as u8;
        let _ = writeln!(out, "tally_ingest_kafka_up {up}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch added at once leaves the histogram as observing each value directly would.
    #[test]
    fn batch_adds_like_single_observations() {
        let values = [0.0, 0.004, 0.005, 0.0051, 0.3, 2.0, 4000.0, -1.0, 0.25];
        let (direct, batched) = (FreshnessHistogram::default(), FreshnessHistogram::default());
        let mut b = HistogramBatch::default();
        for v in values {
            direct.observe(v);
            b.observe(v);
        }
        batched.add(&mut b);
        batched.add(&mut b); // emptied by the first add: adds nothing
        assert_eq!(direct.snapshot(), batched.snapshot());
        assert_eq!(direct.snapshot().2, values.len() as u64);
    }
}
