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
//! These ask tally with `nocache=1`: they measure the engine, every step evaluated.
//! tally's live rows also print the CPU time Prometheus used while they ran, so that
//! the reference's own background work would show rather than pass as tally's latency.
//! A last section measures what a refreshing Grafana panel costs with tally's result
//! cache: the same live queries with `end` moving 15 s per refresh, while every series
//! gets a new sample each minute through remote-write (not timed).
//!
//! Prints figures only; no assertions. Run: `benches/promql_vs_prometheus.sh`.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "promql_data.rs"]
mod data;

use data::{env_usize, ms, pct, LIVE};

use std::time::{Duration, Instant};

/// CPU time (user + system) process `pid` has used so far, from /proc; zero when
/// unreadable.
fn cpu_of(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 counting the state
    // field (the first after the name) as 0.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf with a valid name has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

use common::prometheus::{prometheus_tools, promtool_create_blocks, Prometheus};
use common::{http_get, urlencode, TallyServer};
use tally::ingest::remote_write::{encode_write_request, TimeSeries};

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
            "/api/v1/query_range?query={}&start={start}&end={end}&step=60&nocache=1",
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
    for q in LIVE {
        let path = format!(
            "/api/v1/query_range?query={}&start={live_start}&end={end}&step=15&nocache=1",
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
            // Whatever the reference does meanwhile (e.g. Go's garbage collection after
            // a multi-second query) shares the two cores with tally's timed runs: it is
            // printed with them, so a disturbance from that side shows.
            let prom_cpu = cpu_of(prom.child.id());
            let mut v: Vec<Duration> = (0..n).map(|_| timed(addr, &path).0).collect();
            let prom_cpu = cpu_of(prom.child.id()).saturating_sub(prom_cpu);
            let p50 = pct(&mut v, 0.50);
            let p99 = pct(&mut v, 0.99);
            let during = if *name == "tally" {
                format!("  (prometheus meanwhile: {:.0} ms CPU)", ms(prom_cpu))
            } else {
                String::new()
            };
            println!(
                "{name:>10}: p50 {:>8.2} ms  p99 {:>8.2} ms  (n={n})  {q}{during}",
                ms(p50),
                ms(p99)
            );
        }
    }
    drop(prom);

    println!(
        "\n== live panels refreshing every 15s through tally's result cache, new sample per series each minute ({live_runs} refreshes each)"
    );
    let mut t_end = end;
    let mut minute = points;
    for q in LIVE {
        let mut v = Vec::with_capacity(live_runs);
        for r in 0..=live_runs {
            t_end += 15;
            if (t_end - end) % 60 == 0 {
                remote_write(&tally.addr, series, minute, t_end);
                minute += 1;
            }
            let path = format!(
                "/api/v1/query_range?query={}&start={}&end={t_end}&step=15",
                urlencode(q),
                t_end - 3600
            );
            let d = timed(&tally.addr, &path).0;
            // The first request of each query fills the cache.
            if r > 0 {
                v.push(d);
            }
        }
        let p50 = pct(&mut v, 0.50);
        let p99 = pct(&mut v, 0.99);
        println!("     tally: p50 {:>8.2} ms  p99 {:>8.2} ms  {q}", ms(p50), ms(p99));
    }
    let metrics = http_get(&tally.addr, "/metrics").map(|r| r.body).unwrap_or_default();
    for l in metrics.lines().filter(|l| l.starts_with("tally_query_cache_")) {
        println!("  {l}");
    }
    let _ = tally.terminate();
}

/// One sample at `t_s` for every series, through `POST /api/v1/write`.
fn remote_write(addr: &str, series: usize, minute: usize, t_s: i64) {
    let ts: Vec<TimeSeries> = data::next_minute(series, minute)
        .into_iter()
        .map(|(labels, v)| TimeSeries {
            labels,
            samples: vec![(t_s * 1000, v)],
        })
        .collect();
    let body = snap::raw::Encoder::new()
        .compress_vec(&encode_write_request(&ts))
        .expect("snappy");
    let r = common::http_with_headers(
        "POST",
        addr,
        "/api/v1/write",
        &[("Content-Encoding", "snappy")],
        Some(("application/x-protobuf", &body)),
    )
    .expect("remote write");
    if r.status != 204 {
        eprintln!(
            "remote write failed ({}): {}",
            r.status,
            &r.body[..r.body.len().min(300)]
        );
    }
}
