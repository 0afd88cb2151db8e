//! Tiering benchmark: the same queries on local segments and on tiered segments read from a
//! real S3-protocol server (s3s-fs, installed by scripts/deps/s3s.sh) with a cold and a
//! warm page cache; bytes fetched per query; bytes in the bucket per sample.
//!
//!   cargo bench --bench tiering                  # 1,000 series × 3 days at 15 s (17.3M samples)
//!   cargo bench --bench tiering -- --tenants 3   # smaller

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tally::model::{Money, Sample, Value, ValueKind};
use tally::query::promql::{range_query, EngineOptions};
use tally::query::sql::{execute, QueryOptions};
use tally::store::{now_ns, Store, StoreOptions, WriteBatch};
use tally::tier::TierOptions;
use tally::wal::FsyncPolicy;
use tally::workload::{SeriesData, Workload};

const DAY: i64 = 86_400_000_000_000;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

struct S3 {
    child: Child,
    port: u16,
    _root: tempfile::TempDir,
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_s3() -> S3 {
    let deps = std::env::var("TALLY_TEST_DEPS").unwrap_or_else(|_| ".test-deps".into());
    let bin = std::path::Path::new(&deps).join("bin/s3s-fs");
    assert!(bin.exists(), "{} missing: run scripts/deps/s3s.sh", bin.display());
    let root = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(root.path().join("bench")).expect("bucket dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", "bench", "--secret-key", "benchsecret"])
        .arg(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start s3s-fs");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(20), "s3s-fs did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    S3 {
        child,
        port,
        _root: root,
    }
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let path = e.path();
        n += if path.is_dir() {
            dir_bytes(&path)
        } else {
            e.metadata().map(|m| m.len()).unwrap_or(0)
        };
    }
    n
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("tiering bench: run with `cargo bench --bench tiering` (skipped under cargo test)");
        return;
    }
    let mut w = Workload {
        tenants: arg("--tenants").and_then(|v| v.parse().ok()).unwrap_or(10),
        samples_per_series: 3 * 5760,
        start_ns: now_ns().div_euclid(DAY) * DAY - 10 * DAY,
        ..Workload::default()
    };
    if let Some(d) = arg("--days").and_then(|v| v.parse::<usize>().ok()) {
        w.samples_per_series = d * 5760;
    }
    let samples = w.sample_count();
    println!(
        "workload: {} series × {} samples = {samples} samples",
        w.series_count(),
        w.samples_per_series
    );
    let s3 = start_s3();
    let mut tier = TierOptions::new("s3://bench/tally");
    tier.config = vec![
        ("aws_endpoint".into(), format!("http://127.0.0.1:{}", s3.port)),
        ("aws_access_key_id".into(), "bench".into()),
        ("aws_secret_access_key".into(), "benchsecret".into()),
    ];
    let opts = StoreOptions {
        fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
        background: false,
        head_max_samples: usize::MAX,
        tier: Some(tier),
        downsample_after: Some(Duration::from_secs(2 * 86_400)),
        ..StoreOptions::default()
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let store = Store::open(tmp.path(), opts.clone()).expect("open");
    let series: Vec<_> = (0..w.series_count()).map(|i| w.series(i)).collect();
    let mut k = 0;
    while k < w.samples_per_series {
        let end = (k + 720).min(w.samples_per_series);
        let mut b = WriteBatch::new();
        for (i, (labels, kind)) in series.iter().enumerate() {
            let mut d = SeriesData::default();
            w.samples(i, k, end, &mut d);
            let s =
                d.ts.iter()
                    .zip(&d.values)
                    .map(|(&ts, &v)| Sample {
                        ts,
                        value: match kind.value {
                            ValueKind::Float => Value::Float(f64::from_bits(v)),
                            ValueKind::Money => Value::Money(Money::from_nanos(v as i64)),
                        },
                    })
                    .collect();
            b.add(labels.clone(), *kind, s);
        }
        store.append(&b).expect("append");
        k = end;
    }
    store.flush().expect("flush");
    store.compact_all().expect("compact");
    let local_bytes = store.stats().segment_bytes;

    let start_ms = w.start_ns / 1_000_000;
    let end_ms = start_ms + (w.samples_per_series as i64 * w.interval_ns) / 1_000_000;
    let mid_ms = start_ms + DAY / 1_000_000 + 12 * 3_600_000;
    type Query<'a> = (&'a str, Box<dyn Fn(&Store) -> usize + 'a>);
    let queries: Vec<Query> = vec![
        (
            "promql sum by (tenant) (rate(vcpu_seconds_total[5m])), full range, 60 s step",
            Box::new(move |s: &Store| {
                let v = range_query(
                    &s.snapshot(),
                    None,
                    "sum by (tenant) (rate(vcpu_seconds_total[5m]))",
                    start_ms,
                    end_ms,
                    60_000,
                    &EngineOptions::default(),
                )
                .expect("query");
                format!("{v:?}").len()
            }),
        ),
        (
            "promql one tenant, 1 h window in the middle, 15 s step",
            Box::new(move |s: &Store| {
                let v = range_query(
                    &s.snapshot(),
                    None,
                    "sum(rate(vcpu_seconds_total{tenant=\"t001\"}[5m]))",
                    mid_ms,
                    mid_ms + 3_600_000,
                    15_000,
                    &EngineOptions::default(),
                )
                .expect("query");
                let n = format!("{v:?}").len();
                assert!(n > 200, "one-tenant query returned nothing");
                n
            }),
        ),
        (
            "sql SELECT tenant, sum(cost) FROM costs GROUP BY tenant",
            Box::new(|s: &Store| {
                execute(
                    &s.snapshot(),
                    "SELECT tenant, sum(cost) FROM costs GROUP BY tenant ORDER BY tenant",
                    &QueryOptions::default(),
                )
                .expect("sql")
                .rows
                .len()
            }),
        ),
    ];
    let time = |f: &dyn Fn(&Store) -> usize, s: &Store| {
        let t = Instant::now();
        let n = f(s);
        (t.elapsed().as_secs_f64(), n)
    };
    let mut local = Vec::new();
    for (_, q) in &queries {
        let _ = q(&store);
        let runs: Vec<f64> = (0..3).map(|_| time(q.as_ref(), &store).0).collect();
        local.push(runs.iter().cloned().fold(f64::MAX, f64::min));
    }
    let t = Instant::now();
    let rollups = store.downsample().expect("downsample");
    let with_rollups = store.stats().segment_bytes;
    println!(
        "downsampled: {rollups} rollup segments (5m + 1h) in {:.2} s, {} bytes",
        t.elapsed().as_secs_f64(),
        with_rollups - local_bytes
    );
    let t = Instant::now();
    let tiered = store.tier().expect("tier");
    println!(
        "tiered {tiered} segments ({local_bytes} bytes) in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let bucket = dir_bytes(s3._root.path());
    println!(
        "bucket: {bucket} bytes = {:.3} bytes/sample with rollups; raw segments alone {:.3} bytes/sample",
        bucket as f64 / samples as f64,
        local_bytes as f64 / samples as f64
    );
    store.close().expect("close");
    drop(store);
    for ((name, q), local_s) in queries.iter().zip(&local) {
        // Cold: a fresh process-like open (empty page cache).
        let s = Store::open(tmp.path(), opts.clone()).expect("reopen");
        let tier = s.object_tier().expect("tier").clone();
        let (cold, n1) = time(q.as_ref(), &s);
        let fetched = tier.metrics.bytes_fetched.get();
        let reqs = tier.metrics.requests.get();
        let (warm, n2) = time(q.as_ref(), &s);
        assert_eq!(n1, n2);
        println!(
            "{name}\n  local {:.1} ms | tiered cold {:.1} ms ({:.1}× local, {fetched} bytes fetched in {reqs} requests) | tiered warm {:.1} ms ({:.2}× local)",
            local_s * 1e3,
            cold * 1e3,
            cold / local_s,
            warm * 1e3,
            warm / local_s
        );
        s.close().expect("close");
    }
}
