//! The data both PromQL benches load: `metric{tenant,instance}` counters and
//! `cost{tenant,cost_center,sku,currency,source_metric}` series, one sample per 60 s.
//! Shared so that the in-process profile (`promql_engine`) and the side-by-side run
//! (`promql_vs_prometheus`) measure the same shape of data.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use tally::model::{LabelLimits, Labels, Sample, SeriesKind, Value};
use tally::store::{Store, StoreOptions, WriteBatch};

const TENANTS: usize = 50;

/// The live panel queries both benches time over the last hour.
pub const LIVE: [&str; 5] = [
    "sum by (tenant) (sum_over_time(cost[1m]))",
    "sum by (tenant) (sum_over_time(cost[1h]))",
    "sum by (sku) (sum_over_time(cost{tenant=~\"t0.*\"}[1m]))",
    "topk(10, sum by (tenant) (sum_over_time(cost[1h])))",
    "sum by (tenant) (rate(metric[5m]))",
];

pub fn metric_labels(i: usize) -> Vec<(String, String)> {
    vec![
        ("__name__".into(), "metric".into()),
        ("tenant".into(), format!("t{:02}", i % TENANTS)),
        ("instance".into(), format!("i{i:05}")),
    ]
}

pub fn cost_labels(i: usize) -> Vec<(String, String)> {
    vec![
        ("__name__".into(), "cost".into()),
        ("tenant".into(), format!("t{:02}", i % TENANTS)),
        ("cost_center".into(), format!("cc{}", i % 7)),
        ("sku".into(), format!("sku{:04}", i / TENANTS)),
        ("currency".into(), "USD".into()),
        ("source_metric".into(), "usage".into()),
    ]
}

/// Deterministic per-sample values: counters grow, costs vary.
fn metric_value(i: usize, k: usize) -> f64 {
    (k * (1 + i % 13)) as f64 + ((i * 31 + k * 17) % 5) as f64
}

fn cost_value(i: usize, k: usize) -> f64 {
    ((i * 7 + k * 13) % 1000) as f64 / 1000.0 + 0.001
}

fn om_head(labels: &[(String, String)]) -> String {
    let ls: Vec<String> = labels[1..].iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{}{{{}}}", labels[0].1, ls.join(","))
}

/// Loads `series` × `points` of each family into a tally store at `tally_dir` and, when
/// `om` is given, writes the same samples as OpenMetrics text for promtool.
pub fn load(series: usize, points: usize, start_s: i64, om: Option<&Path>, tally_dir: &Path) {
    let mut w = om.map(|p| std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(p).expect("om file")));
    let store = Store::open(
        tally_dir,
        StoreOptions {
            background: false,
            fsync: tally::wal::FsyncPolicy::Interval(Duration::from_secs(60)),
            head_max_samples: 8_000_000,
            // `BENCH_BLOCK_SAMPLES` overrides the segment block size (for comparing layouts).
            segment: tally::segment::SegmentOptions {
                block_samples: std::env::var("BENCH_BLOCK_SAMPLES")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(tally::segment::SegmentOptions::default().block_samples),
                ..tally::segment::SegmentOptions::default()
            },
            ..StoreOptions::default()
        },
    )
    .expect("open store");
    let limits = LabelLimits::default();
    let mut pending = 0usize;
    type LabelsFn = fn(usize) -> Vec<(String, String)>;
    type ValueFn = fn(usize, usize) -> f64;
    let families: [(LabelsFn, ValueFn); 2] = [(metric_labels, metric_value), (cost_labels, cost_value)];
    for (labels_of, value_of) in families {
        let mut batch = WriteBatch::new();
        for i in 0..series {
            let ls = labels_of(i);
            let head = om_head(&ls);
            let mut samples = Vec::with_capacity(points);
            for k in 0..points {
                let t = start_s + 60 * k as i64;
                let v = value_of(i, k);
                if let Some(w) = w.as_mut() {
                    writeln!(w, "{head} {v} {t}").expect("write om");
                }
                samples.push(Sample {
                    ts: t * 1_000_000_000,
                    value: Value::Float(v),
                });
            }
            let l = Labels::from_pairs(ls, &limits).expect("labels");
            batch.add(l, SeriesKind::GAUGE, samples);
            pending += points;
            if batch.series.len() == 500 {
                store.append(&batch).expect("append");
                batch = WriteBatch::new();
            }
            if pending >= 8_000_000 {
                store.flush().expect("flush");
                pending = 0;
            }
        }
        if !batch.series.is_empty() {
            store.append(&batch).expect("append");
        }
    }
    if let Some(mut w) = w {
        writeln!(w, "# EOF").expect("write om");
        w.flush().expect("flush om");
    }
    store.flush().expect("flush");
    store.compact_all().expect("compact");
    store.close().expect("close");
}

/// One more sample for each of the `series` × 2 series, as the `k`-th minute: the
/// data a live dashboard sees arrive while it refreshes.
pub fn next_minute(series: usize, k: usize) -> Vec<(Vec<(String, String)>, f64)> {
    (0..series)
        .map(|i| (metric_labels(i), metric_value(i, k)))
        .chain((0..series).map(|i| (cost_labels(i), cost_value(i, k))))
        .collect()
}

/// `name` from the environment as a number, else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The `p` quantile (nearest rank) of `v`.
pub fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
