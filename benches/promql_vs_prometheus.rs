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
#[path = "promql_data.rs"]
mod data;

use data::{env_usize, ms, pct};

use std::time::{Duration, Instant};

use common::prometheus::{prometheus_tools, promtool_create_blocks, Prometheus};
use common::{http_get, urlencode, TallyServer};

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
    data::load(series, points, start, Some(&om), &tally_dir);
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
