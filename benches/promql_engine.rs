//! In-process PromQL timings over the store, without HTTP or a Prometheus to compare
//! with: the loop for profiling the engine and the read path (`perf record` on this
//! binary). Same data and queries as `promql_vs_prometheus`.
//!
//! Env: `BENCH_SERIES` (10000), `BENCH_HOURS` (24), `BENCH_RUNS` (5),
//! `BENCH_LIVE_RUNS` (100), `BENCH_DATA_DIR` (keep and reuse the loaded store there;
//! default: a temporary directory), `BENCH_ONLY` (run only queries containing this),
//! `BENCH_THREADS` (threads per query, default 0 = all cores; 1 measures CPU cost),
//! `BENCH_QUERY` (one more live query, e.g. a tiny one for per-query fixed costs),
//! `BENCH_NO_REFRESH` / `BENCH_NO_RANGE` / `BENCH_NO_LIVE` (set: skip the
//! refreshing-panel / 24 h range / uncached live section, for profiling one alone).
//!
//! Prints figures only; no assertions. Run: `cargo bench --bench promql_engine`.

#[path = "promql_data.rs"]
mod data;

use data::{env_usize, ms, pct, LIVE};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tally::model::{Sample, SeriesKind, Value};
use tally::query::promql::{Engine, EngineOptions, QueryValue, ResultCache};
use tally::store::{Store, StoreOptions, WriteBatch};

/// Copies a directory tree (regular files and directories only).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("dir entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// The bench store at `dir`, without background maintenance.
fn open_store(dir: &std::path::Path) -> Store {
    let opts = StoreOptions {
        background: false,
        ..StoreOptions::default()
    };
    Store::open(dir, opts).expect("open store")
}

/// No timeout, `BENCH_THREADS` threads per query.
fn engine_options() -> EngineOptions {
    EngineOptions {
        timeout: None,
        threads: env_usize("BENCH_THREADS", 0),
        ..EngineOptions::default()
    }
}

fn points_of(v: &QueryValue) -> usize {
    match v {
        QueryValue::Matrix(m) => m.iter().map(|s| s.points.len()).sum(),
        _ => 0,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("promql_engine: benchmark only runs under `cargo bench`");
        return;
    }
    let series = env_usize("BENCH_SERIES", 10_000);
    let hours = env_usize("BENCH_HOURS", 24);
    let runs = env_usize("BENCH_RUNS", 5).max(1);
    let live_runs = env_usize("BENCH_LIVE_RUNS", 100).max(1);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let _tmp;
    let dir: PathBuf = match std::env::var("BENCH_DATA_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => {
            _tmp = tempfile::tempdir().expect("tempdir");
            _tmp.path().join("tally")
        }
    };
    let marker = dir.join("bench-end");
    let points = hours * 60;
    let end = match std::fs::read_to_string(&marker)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
    {
        Some(end) => {
            println!("reusing {} (data ends at {end})", dir.display());
            end
        }
        None => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let end = now / 60 * 60;
            let start = end - 60 * (points as i64 - 1);
            let t = Instant::now();
            data::load(series, points, start, None, &dir);
            std::fs::write(&marker, end.to_string()).expect("marker");
            println!(
                "loaded {series} metric + {series} cost series x {hours}h @60s in {:.1}s",
                t.elapsed().as_secs_f64()
            );
            end
        }
    };
    let start = end - 60 * (points as i64 - 1);
    let store = open_store(&dir);
    let engine = Engine::new(engine_options());
    let run = |q: &str, s: i64, e: i64, step: i64| -> (Duration, usize) {
        let snap = store.snapshot();
        let t = Instant::now();
        let r = engine.range_query(&snap, None, q, s * 1000, e * 1000, step * 1000);
        let d = t.elapsed();
        match r {
            Ok(v) => (d, points_of(&v)),
            Err(e) => {
                eprintln!("query failed: {q}: {e}");
                (d, 0)
            }
        }
    };

    println!("\n== range queries over {hours}h at 60s step (median of {runs}, after 1 warm-up)");
    for q in [
        "sum by (tenant) (rate(metric[5m]))",
        "topk(10, sum by (tenant) (sum_over_time(cost[1h])))",
    ] {
        if !q.contains(&only) || std::env::var_os("BENCH_NO_RANGE").is_some() {
            continue;
        }
        let (_, n) = run(q, start, end, 60);
        let mut v: Vec<Duration> = (0..runs).map(|_| run(q, start, end, 60).0).collect();
        println!("{:>9.1} ms  ({n} points)  {q}", ms(pct(&mut v, 0.5)));
    }

    println!("\n== live panel queries over the last 1h, 15s step ({live_runs} runs each)");
    let live_start = end - 3600;
    let extra = std::env::var("BENCH_QUERY").ok();
    for q in LIVE.iter().copied().chain(extra.as_deref()) {
        if !q.contains(&only) || std::env::var_os("BENCH_NO_LIVE").is_some() {
            continue;
        }
        let (_, n) = run(q, live_start, end, 15);
        let mut v: Vec<Duration> = (0..live_runs).map(|_| run(q, live_start, end, 15).0).collect();
        let p50 = pct(&mut v, 0.50);
        let p99 = pct(&mut v, 0.99);
        // The minimum is the figure least disturbed by other work on a shared machine.
        let min = v.iter().min().copied().unwrap_or_default();
        println!(
            "p50 {:>8.2} ms  p99 {:>8.2} ms  min {:>8.2} ms  ({n} points)  {q}",
            ms(p50),
            ms(p99),
            ms(min)
        );
    }

    if std::env::var_os("BENCH_NO_REFRESH").is_some() {
        return;
    }
    // A dashboard refreshing every 15 s through the result cache while every series
    // gets a new sample each minute (appended between refreshes, not timed): what a
    // live panel costs once its first answer is cached. It runs on a copy of the data
    // directory, so `BENCH_DATA_DIR` stays as loaded for the next run.
    store.close().expect("close");
    let live_tmp = tempfile::tempdir().expect("tempdir");
    let live_dir = live_tmp.path().join("tally");
    copy_dir(&dir, &live_dir);
    let store = open_store(&live_dir);
    println!("\n== live panels refreshing every 15s through the result cache, new sample per series each minute ({live_runs} refreshes each)");
    let opts = engine_options();
    let limits = tally::model::LabelLimits::default();
    let mut minute = points;
    // Time moves on across the queries: every append is after all earlier ones.
    let mut t_end = end;
    for q in LIVE {
        if !q.contains(&only) {
            continue;
        }
        let cache = ResultCache::new(tally::api::DEFAULT_QUERY_CACHE_POINTS);
        let mut v = Vec::with_capacity(live_runs);
        for r in 0..=live_runs {
            t_end += 15;
            if (t_end - end) % 60 == 0 {
                let mut batch = WriteBatch::new();
                for (labels, value) in data::next_minute(series, minute) {
                    let l = tally::model::Labels::from_pairs(labels, &limits).expect("labels");
                    let s = Sample {
                        ts: t_end * 1_000_000_000,
                        value: Value::Float(value),
                    };
                    batch.add(l, SeriesKind::GAUGE, vec![s]);
                }
                store.append(&batch).expect("append");
                minute += 1;
            }
            let t = Instant::now();
            let res = cache.range_query(&store, None, q, (t_end - 3600) * 1000, t_end * 1000, 15_000, &opts);
            // The first request fills the cache; it is the uncached figure above.
            if r > 0 {
                v.push(t.elapsed());
            }
            if let Err(e) = res {
                eprintln!("query failed: {q}: {e}");
            }
        }
        let p50 = pct(&mut v, 0.50);
        let p99 = pct(&mut v, 0.99);
        let s = &cache.stats;
        println!(
            "p50 {:>8.2} ms  p99 {:>8.2} ms  (steps reused {}, evaluated {})  {q}",
            ms(p50),
            ms(p99),
            s.steps_reused.load(std::sync::atomic::Ordering::Relaxed),
            s.steps_evaluated.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    store.close().expect("close");
}
