//! Deterministic cost and usage data shaped like what ingest writes: `cost` money series
//! with tenant / cost_center / sku / currency / source_metric / region / instance labels,
//! and the float usage series they were priced from. Shared by the SQL and ledger tests
//! and the SQL benchmark (via `#[path]`).
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use tally::model::{LabelLimits, Labels, Money, Sample, SeriesKind, Value};
use tally::store::{Store, WriteBatch};

/// One generated cost sample, for reference evaluations.
#[derive(Debug, Clone)]
pub struct CostRow {
    pub ts: i64,
    /// `None` = no tenant label (belongs to the store's default tenant).
    pub tenant: Option<String>,
    pub cost_center: Option<String>,
    pub sku: String,
    pub currency: String,
    pub region: String,
    pub instance: String,
    pub source_metric: String,
    pub cost: i64,
}

impl CostRow {
    pub fn tenant_or_default(&self) -> &str {
        self.tenant.as_deref().unwrap_or("default")
    }
}

#[derive(Debug, Clone)]
pub struct GenSpec {
    pub series: usize,
    pub samples_per_series: usize,
    /// First sample (UTC ns) and spacing.
    pub start: i64,
    pub step: i64,
    pub seed: u64,
    pub tenants: usize,
    /// Also write usage series (for ledger quantities).
    pub usage: bool,
}

pub const SKUS: &[&str] = &["m5.large", "r6g.xlarge", "s3-standard", "gp3"];
pub const METRICS: &[&str] = &["cpu_hours", "mem_gb_hours", "storage_gb_hours", "iops"];

pub fn series_labels(
    s: usize,
    tenants: usize,
) -> (Option<String>, Option<String>, String, String, String, String, String) {
    let tenant = (s % 11 != 5).then(|| format!("t{}", s % tenants));
    let cc = (s % 7 != 3).then(|| format!("cc-{}", s % 3));
    let sku = SKUS[s % SKUS.len()].to_string();
    let currency = if s % 13 == 4 { "EUR" } else { "USD" }.to_string();
    let region = ["eu-west-1", "us-east-1"][s % 2].to_string();
    let instance = format!("i-{s:05}");
    let metric = METRICS[s % METRICS.len()].to_string();
    (tenant, cc, sku, currency, region, instance, metric)
}

/// Writes the data; returns every cost sample when `keep` (else an empty vec).
pub fn generate(store: &Store, spec: &GenSpec, keep: bool) -> Vec<CostRow> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let mut rows = Vec::new();
    let limits = LabelLimits::default();
    let per_batch = (2_000_000 / spec.samples_per_series.max(1)).max(1);
    let mut b = WriteBatch::new();
    let mut in_batch = 0;
    for s in 0..spec.series {
        let (tenant, cc, sku, currency, region, instance, metric) = series_labels(s, spec.tenants);
        let mut cost_l: Vec<(&str, String)> = vec![
            ("__name__", "cost".into()),
            ("sku", sku.clone()),
            ("currency", currency.clone()),
            ("source_metric", metric.clone()),
            ("region", region.clone()),
            ("instance", instance.clone()),
        ];
        let mut usage_l: Vec<(&str, String)> = vec![
            ("__name__", metric.clone()),
            ("sku", sku.clone()),
            ("unit", "h".into()),
            ("region", region.clone()),
            ("instance", instance.clone()),
        ];
        if let Some(t) = &tenant {
            cost_l.push(("tenant", t.clone()));
            usage_l.push(("tenant", t.clone()));
        }
        if let Some(c) = &cc {
            cost_l.push(("cost_center", c.clone()));
            usage_l.push(("cost_center", c.clone()));
        }
        let jitter = (s as i64 * 7919) % spec.step.max(1);
        let mut samples = Vec::with_capacity(spec.samples_per_series);
        let mut usage = Vec::with_capacity(if spec.usage { spec.samples_per_series } else { 0 });
        for k in 0..spec.samples_per_series {
            let ts = spec.start + k as i64 * spec.step + jitter;
            // 6-decimal prices, occasionally a credit.
            let micros: i64 = rng.gen_range(1..5_000_000);
            let nanos = if rng.gen_ratio(1, 50) {
                -micros * 1000
            } else {
                micros * 1000
            };
            samples.push(Sample {
                ts,
                value: Value::Money(Money::from_nanos(nanos)),
            });
            if spec.usage {
                usage.push(Sample {
                    ts,
                    value: Value::Float(micros as f64 / 1e6),
                });
            }
            if keep {
                rows.push(CostRow {
                    ts,
                    tenant: tenant.clone(),
                    cost_center: cc.clone(),
                    sku: sku.clone(),
                    currency: currency.clone(),
                    region: region.clone(),
                    instance: instance.clone(),
                    source_metric: metric.clone(),
                    cost: nanos,
                });
            }
        }
        b.add(
            Labels::from_pairs(cost_l, &limits).expect("labels"),
            SeriesKind::MONEY,
            samples,
        );
        if spec.usage {
            b.add(
                Labels::from_pairs(usage_l, &limits).expect("labels"),
                SeriesKind::DELTA,
                usage,
            );
        }
        in_batch += 1;
        if in_batch >= per_batch {
            store.append(&b).expect("append");
            b = WriteBatch::new();
            in_batch = 0;
        }
    }
    if !b.is_empty() {
        store.append(&b).expect("append");
    }
    rows
}
