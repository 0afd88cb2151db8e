//! tally vs Prometheus 2.42 on identical data, same run, through both HTTP APIs.
//!
//! Data: `BENCH_SERIES` (default 10000) counters `metric{tenant,instance}` and as many
//! `cost{tenant,cost_center,sku,currency,source_metric}` series, one sample per 60 s
//! over `BENCH_HOURS` (default 24) ending now. Prometheus gets it through `promtool
//! tsdb create-blocks-from openmetrics`, tally through the store library.
//!
//! Measured (client wall time per HTTP request, median of `BENCH_RUNS`, default 3):
//! * range `sum by (tenant) (rate(metric[5m]))` over the whole span at 60 s step;
//! * range `topk(10, sum by (tenant) (sum_over_time(cost[1h])))` likewise;
//! * live panel queries over the last 1 h (15 s step), `BENCH_LIVE_RUNS` (default 100)
//!   each on tally (a tenth on Prometheus): p50 / p99.
//!
//! Prints figures only; no assertions. Run: `benches/promql_vs_prometheus.sh`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::prometheus::{prometheus_tools, promtool_create_blocks, Prometheus};
use common::{http_get, urlencode, TallyServer};
use tally::model::{LabelLimits, Labels, Sample, SeriesKind, Value};
use tally::store::{Store, StoreOptions, WriteBatch};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const TENANTS: usize = 50;

fn metric_labels(i: usize) -> Vec<(String, String)> {
    vec![
        ("__name__".into(), "metric".into()),
        ("tenant".into(), format!("t{:02}", i % TENANTS)),
        ("instance".into(), format!("i{i:05}")),
    ]
}

fn cost_labels(i: usize) -> Vec<(String, String)> {
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

fn load(series: usize, points: usize, start_s: i64, om: &Path, tally_dir: &Path) {
    let f = std::fs::File::create(om).expect("om file");
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let store = Store::open(
        tally_dir,
        StoreOptions {
            background: false,
            fsync: tally::wal::FsyncPolicy::Interval(Duration::from_secs(60)),
            head_max_samples: 8_000_000,
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
                writeln!(w, "{head} {v} {t}").expect("write om");
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
    writeln!(w, "# EOF").expect("write om");
    w.flush().expect("flush om");
    store.flush().expect("flush");
    store.compact_all().expect("compact");
    store.close().expect("close");
}

fn timed(addr: &str, path: &str) -> (Duration, usize) {
    let t = Instant::now();
    let r = http_get(addr, path).expect("query");
    let d = t.elapsed();
    if r.status != 200 {
        eprintln!(
            "query failed ({}) {path}: {}",
            r.status,
            &r.body[..r.body.len().min(300)]
        );
    }
    (d, r.body.len())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without
    // it, and a multi-minute benchmark has no place in the test suite.
    if !std::env::args().any(|a| a == "--bench") {
        println!("promql_vs_prometheus: benchmark only runs under `cargo bench` (see benches/promql_vs_prometheus.sh)");
        return;
    }
    let series = env_usize("BENCH_SERIES", 10_000);
    let hours = env_usize("BENCH_HOURS", 24);
    let runs = env_usize("BENCH_RUNS", 3).max(1);
    let live_runs = env_usize("BENCH_LIVE_RUNS", 100).max(1);
    let (prometheus, promtool) = prometheus_tools();
    let work = tempfile::tempdir().expect("tempdir");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let end = now / 60 * 60;
    let points = hours * 60;
    let start = end - 60 * (points as i64 - 1);
    println!(
        "data: {series} metric + {series} cost series x {hours}h @60s = {} samples",
        2 * series * points
    );

    let t = Instant::now();
    let om = work.path().join("data.om");
    let tally_dir = work.path().join("tally");
    load(series, points, start, &om, &tally_dir);
    println!("generated + loaded tally in {:.1}s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let tsdb = work.path().join("prom");
    promtool_create_blocks(&promtool, &om, &tsdb, &["--max-block-duration=24h"]);
    let _ = std::fs::remove_file(&om);
    println!(
        "promtool create-blocks-from openmetrics in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let prom = Prometheus::start(&prometheus, work.path(), &tsdb);
    let tally = TallyServer::start(&tally_dir, &["--query-timeout", "10m"]);
    let servers = [("tally", tally.addr.clone()), ("prometheus", prom.addr.clone())];

    println!("\n== range queries over {hours}h at 60s step (median of {runs}, after 1 warm-up)");
    for q in [
        "sum by (tenant) (rate(metric[5m]))",
        "topk(10, sum by (tenant) (sum_over_time(cost[1h])))",
    ] {
        let path = format!(
            "/api/v1/query_range?query={}&start={start}&end={end}&step=60",
            urlencode(q)
        );
        let mut med = Vec::new();
        for (name, addr) in &servers {
            let (_, bytes) = timed(addr, &path);
            let times: Vec<Duration> = (0..runs).map(|_| timed(addr, &path).0).collect();
            let m = median(times);
            println!("{name:>10}: {:>9.1} ms  ({bytes} bytes)  {q}", ms(m));
            med.push(m);
        }
        println!(
            "     ratio: prometheus / tally = {:.2}x",
            med[1].as_secs_f64() / med[0].as_secs_f64().max(1e-9)
        );
    }

    println!("\n== live panel queries over the last 1h, 15s step ({live_runs} runs each)");
    let live_start = end - 3600;
    for q in [
        "sum by (tenant) (sum_over_time(cost[1m]))",
        "sum by (tenant) (sum_over_time(cost[1h]))",
        "sum by (sku) (sum_over_time(cost{tenant=~\"t0.*\"}[1m]))",
        "topk(10, sum by (tenant) (sum_over_time(cost[1h])))",
        "sum by (tenant) (rate(metric[5m]))",
    ] {
        let path = format!(
            "/api/v1/query_range?query={}&start={live_start}&end={end}&step=15",
            urlencode(q)
        );
        for (name, addr) in &servers {
            timed(addr, &path);
            // Prometheus is the reference, not the subject: fewer runs keep the bench short.
            let n = if *name == "tally" {
                live_runs
            } else {
                (live_runs / 10).max(5)
            };
            let mut v: Vec<Duration> = (0..n).map(|_| timed(addr, &path).0).collect();
            let p50 = pct(&mut v, 0.50);
            let p99 = pct(&mut v, 0.99);
            println!(
                "{name:>10}: p50 {:>8.2} ms  p99 {:>8.2} ms  (n={n})  {q}",
                ms(p50),
                ms(p99)
            );
        }
    }
    let _ = tally.terminate();
    drop(prom);
}
