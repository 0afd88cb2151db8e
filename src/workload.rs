//! A realistic, deterministic cost workload, shared by benchmarks and tests.
//!
//! Shape (defaults): 100 tenants × 10 database instances × 10 metrics = 10,000 series,
//! one sample every 15 s for 24 h (57.6M samples). Per instance: 4 counters with integer
//! increments, 4 gauges that random-walk in 2-decimal steps (and often stay flat, as
//! storage and connection counts do), and 2 money series (`cost`) with 6-decimal
//! amounts = usage increment × unit price. Everything derives from `seed`, so two runs —
//! or tally and Prometheus — see identical data.

use crate::model::{LabelLimits, Labels, Money, SeriesKind, ValueKind};

#[derive(Debug, Clone)]
pub struct Workload {
    pub tenants: usize,
    pub instances_per_tenant: usize,
    pub interval_ns: i64,
    pub samples_per_series: usize,
    pub start_ns: i64,
    pub seed: u64,
}

/// One of the 10 per-instance metrics.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Counter {
        max_step: u64,
    },
    Gauge {
        start: f64,
    },
    Cost {
        usage_metric: usize,
        unit_price_micros: i64,
    },
}

const METRICS: [(&str, Shape); 10] = [
    ("vcpu_seconds_total", Shape::Counter { max_step: 60 }),
    ("iops_total", Shape::Counter { max_step: 20 }),
    ("egress_mb_total", Shape::Counter { max_step: 12 }),
    ("queries_total", Shape::Counter { max_step: 40 }),
    ("storage_gb", Shape::Gauge { start: 512.0 }),
    ("connections", Shape::Gauge { start: 40.0 }),
    ("cpu_utilization_pct", Shape::Gauge { start: 35.0 }),
    ("memory_gb", Shape::Gauge { start: 16.0 }),
    (
        "cost",
        Shape::Cost {
            usage_metric: 0,
            unit_price_micros: 11,
        },
    ),
    (
        "cost",
        Shape::Cost {
            usage_metric: 2,
            unit_price_micros: 90,
        },
    ),
];

pub const METRICS_PER_INSTANCE: usize = METRICS.len();

impl Default for Workload {
    fn default() -> Self {
        Workload {
            tenants: 100,
            instances_per_tenant: 10,
            interval_ns: 15_000_000_000,
            samples_per_series: 24 * 3600 / 15,
            start_ns: 1_790_000_000_000_000_000 / 86_400_000_000_000 * 86_400_000_000_000,
            seed: 0x7a11_c057,
        }
    }
}

/// splitmix64: tiny, fast, good enough for synthetic data, and dependency-free.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Generated samples of one series: raw values as the store keeps them.
#[derive(Debug, Clone, Default)]
pub struct SeriesData {
    pub ts: Vec<i64>,
    pub values: Vec<u64>,
}

impl Workload {
    pub fn series_count(&self) -> usize {
        self.tenants * self.instances_per_tenant * METRICS_PER_INSTANCE
    }

    pub fn sample_count(&self) -> usize {
        self.series_count() * self.samples_per_series
    }

    pub fn end_ns(&self) -> i64 {
        self.start_ns + self.interval_ns * (self.samples_per_series as i64 - 1)
    }

    /// Labels and kind of series `i` (0..series_count).
    pub fn series(&self, i: usize) -> (Labels, SeriesKind) {
        let metric = i % METRICS_PER_INSTANCE;
        let instance = (i / METRICS_PER_INSTANCE) % self.instances_per_tenant;
        let tenant = i / (METRICS_PER_INSTANCE * self.instances_per_tenant);
        let (name, shape) = METRICS[metric];
        let engines = ["postgres", "mysql", "aurora-postgres"];
        let regions = ["eu-west-1", "us-east-1", "ap-south-1"];
        let mut pairs = vec![
            ("__name__", name.to_string()),
            ("tenant", format!("t{tenant:03}")),
            ("instance", format!("db-{tenant:03}-{instance:02}")),
            ("engine", engines[(tenant + instance) % engines.len()].to_string()),
            ("region", regions[tenant % regions.len()].to_string()),
            ("cost_center", format!("cc-{}", tenant % 17)),
        ];
        let kind = match shape {
            Shape::Counter { .. } | Shape::Gauge { .. } => SeriesKind::GAUGE,
            Shape::Cost { usage_metric, .. } => {
                pairs.push((
                    "sku",
                    format!("sku-{}", METRICS[usage_metric].0.trim_end_matches("_total")),
                ));
                pairs.push(("currency", "USD".to_string()));
                pairs.push(("source_metric", METRICS[usage_metric].0.to_string()));
                SeriesKind::MONEY
            }
        };
        // The workload's names and values are valid by construction.
        let labels = Labels::from_pairs(pairs, &LabelLimits::default()).expect("workload labels are valid");
        (labels, kind)
    }

    /// Samples `[from, to)` (by index) of series `i`, appended to `out`. Deterministic:
    /// the same series always yields the same data regardless of how it is chunked.
    pub fn samples(&self, i: usize, from: usize, to: usize, out: &mut SeriesData) {
        let metric = i % METRICS_PER_INSTANCE;
        let base = i - metric;
        let to = to.min(self.samples_per_series);
        let mut rng = Rng::new(self.seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
        match METRICS[metric].1 {
            Shape::Counter { max_step } => {
                let mut v = rng.below(1_000_000);
                for k in 0..to {
                    v += rng.below(max_step + 1);
                    if k >= from {
                        out.ts.push(self.ts(k));
                        out.values.push((v as f64).to_bits());
                    }
                }
            }
            Shape::Gauge { start } => {
                let mut cents = (start * 100.0) as i64;
                for k in 0..to {
                    if rng.below(2) == 0 {
                        let step = rng.below(51) as i64;
                        cents = (cents + if rng.below(2) == 0 { step } else { -step }).max(0);
                    }
                    if k >= from {
                        out.ts.push(self.ts(k));
                        out.values.push((cents as f64 / 100.0).to_bits());
                    }
                }
            }
            Shape::Cost {
                usage_metric,
                unit_price_micros,
            } => {
                // Cost follows the instance's usage counter: increment × unit price.
                let mut usage = SeriesData::default();
                self.samples(base + usage_metric, 0, to, &mut usage);
                let mut prev = None;
                for (k, raw) in usage.values.iter().enumerate() {
                    let v = f64::from_bits(*raw) as i64;
                    let inc = prev.map_or(0, |p| v - p);
                    prev = Some(v);
                    if k >= from {
                        out.ts.push(self.ts(k));
                        out.values
                            .push(Money::from_nanos(inc * unit_price_micros * 1_000).nanos() as u64);
                    }
                }
            }
        }
    }

    fn ts(&self, k: usize) -> i64 {
        self.start_ns + self.interval_ns * k as i64
    }

    /// Value kind of series `i`.
    pub fn value_kind(&self, i: usize) -> ValueKind {
        self.series(i).1.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_does_not_change_data() {
        let w = Workload {
            tenants: 2,
            samples_per_series: 100,
            ..Workload::default()
        };
        for i in 0..w.series_count() {
            let mut whole = SeriesData::default();
            w.samples(i, 0, 100, &mut whole);
            let mut parts = SeriesData::default();
            w.samples(i, 0, 37, &mut parts);
            w.samples(i, 37, 100, &mut parts);
            assert_eq!(whole.ts, parts.ts);
            assert_eq!(whole.values, parts.values);
        }
    }

    #[test]
    fn shape_is_as_documented() {
        let w = Workload::default();
        assert_eq!(w.series_count(), 10_000);
        assert_eq!(w.sample_count(), 57_600_000);
        let (l, k) = w.series(8);
        assert_eq!(l.metric_name(), Some("cost"));
        assert_eq!(k, SeriesKind::MONEY);
        assert_eq!(l.get("sku"), Some("sku-vcpu_seconds"));
    }
}
