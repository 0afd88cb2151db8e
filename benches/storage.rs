//! Storage benchmark on the standard cost workload (see `tally::workload`).
//!
//! Prints: append throughput on one core (bulk and live-shaped batches), bytes per sample
//! after compaction, resident memory per active head series, and the full-range scan rate.
//!
//!   cargo bench --bench storage                      # 10k series × 24 h (57.6M samples)
//!   cargo bench --bench storage -- --tenants 10      # smaller
//!   cargo bench --bench storage -- --tenants 10 --openmetrics out.om
//!       (also writes the same data as OpenMetrics for `promtool tsdb create-blocks-from`;
//!        benches/storage_vs_prometheus.sh drives the side-by-side comparison)

use std::io::Write;
use std::time::{Duration, Instant};

use tally::index::Matcher;
use tally::model::{Money, Sample, Value, ValueKind};
use tally::store::{SelectRequest, SeriesSource, Store, StoreOptions, WriteBatch};
use tally::wal::FsyncPolicy;
use tally::workload::{SeriesData, Workload};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    s.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

fn to_samples(kind: ValueKind, d: &SeriesData) -> Vec<Sample> {
    d.ts.iter()
        .zip(&d.values)
        .map(|(&ts, &v)| Sample {
            ts,
            value: match kind {
                ValueKind::Float => Value::Float(f64::from_bits(v)),
                ValueKind::Money => Value::Money(Money::from_nanos(v as i64)),
            },
        })
        .collect()
}

/// Pre-builds batches of `chunk` samples per series (so generation is not timed).
fn batches(w: &Workload, chunk: usize, from: usize, to: usize) -> Vec<WriteBatch> {
    let series: Vec<_> = (0..w.series_count()).map(|i| w.series(i)).collect();
    let mut out = Vec::new();
    let mut k = from;
    while k < to {
        let end = (k + chunk).min(to);
        let mut b = WriteBatch::new();
        for (i, (labels, kind)) in series.iter().enumerate() {
            let mut d = SeriesData::default();
            w.samples(i, k, end, &mut d);
            b.add(labels.clone(), *kind, to_samples(kind.value, &d));
        }
        out.push(b);
        k = end;
    }
    out
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without
    // it, and a 57.6M-sample run has no place in the test suite.
    if !std::env::args().any(|a| a == "--bench") {
        println!("storage bench: run with `cargo bench --bench storage` (skipped under cargo test)");
        return;
    }
    let mut w = Workload::default();
    if let Some(t) = arg("--tenants").and_then(|v| v.parse().ok()) {
        w.tenants = t;
    }
    if let Some(h) = arg("--hours").and_then(|v| v.parse::<usize>().ok()) {
        w.samples_per_series = h * 240;
    }
    println!(
        "workload: {} series × {} samples = {} samples ({} tenants)",
        w.series_count(),
        w.samples_per_series,
        w.sample_count(),
        w.tenants
    );
    if let Some(path) = arg("--openmetrics") {
        write_openmetrics(&w, &path);
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let opts = StoreOptions {
        fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
        background: false,
        head_max_samples: usize::MAX,
        ..StoreOptions::default()
    };
    let store = Store::open(tmp.path(), opts.clone()).expect("open");

    // 1. Live-shaped appends (one sample per series per batch, as a scrape or a tick of
    //    Kafka events arrives) for the first hour; resident memory per active head series.
    let hour = 240.min(w.samples_per_series);
    let ticks = batches(&w, 1, 0, hour);
    let n: usize = ticks.iter().map(|b| b.samples()).sum();
    let rss0 = rss_bytes();
    let t = Instant::now();
    for b in &ticks {
        store.append(b).expect("append");
    }
    let secs = t.elapsed().as_secs_f64();
    let rss1 = rss_bytes();
    drop(ticks);
    println!(
        "append (live, 1 sample/series/batch): {:.2} M samples/s ({n} samples in {secs:.2} s)",
        n as f64 / secs / 1e6
    );
    let st = store.stats();
    println!(
        "head memory: {:.0} B RSS per active series incl. index ({} series, {} samples each); head structures alone {:.0} B/series",
        (rss1.saturating_sub(rss0)) as f64 / w.series_count() as f64,
        st.head_series,
        st.head_samples / st.head_series.max(1),
        st.head_bytes as f64 / st.head_series.max(1) as f64,
    );

    // 2. Append throughput on one core (bulk: 1 h per series per batch).
    let rest = batches(&w, 240, 240.min(w.samples_per_series), w.samples_per_series);
    let n: usize = rest.iter().map(|b| b.samples()).sum();
    let t = Instant::now();
    for b in &rest {
        store.append(b).expect("append");
    }
    let secs = t.elapsed().as_secs_f64();
    drop(rest);
    println!(
        "append (bulk, 240 samples/series/batch): {:.2} M samples/s ({n} samples in {secs:.2} s)",
        n as f64 / secs / 1e6
    );

    // 3. Flush + compaction, then bytes per sample on disk.
    let t = Instant::now();
    store.flush().expect("flush");
    let flush_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    store.compact_all().expect("compact");
    let compact_s = t.elapsed().as_secs_f64();
    let st = store.stats();
    println!(
        "on disk after compaction: {:.3} bytes/sample ({} bytes, {} samples, {} segments; flush {flush_s:.1} s, compaction {compact_s:.1} s)",
        st.segment_bytes as f64 / st.segment_samples as f64,
        st.segment_bytes,
        st.segment_samples,
        st.segments
    );

    // 4. Full-range scan of all series.
    let snap = store.snapshot();
    let t = Instant::now();
    let mut scanned = 0usize;
    let all = [Matcher::new(tally::index::MatchOp::Regex, "__name__", ".+").expect("regex")];
    for s in snap
        .select(&SelectRequest {
            tenant: None,
            matchers: &all,
            start: i64::MIN,
            end: i64::MAX,
        })
        .expect("select")
    {
        scanned += s.expect("series").ts.len();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "scan (all series, full range): {:.1} M samples/s ({scanned} samples in {secs:.2} s)",
        scanned as f64 / secs / 1e6
    );
    drop(snap);
    store.close().expect("close");
}

fn write_openmetrics(w: &Workload, path: &str) {
    let f = std::fs::File::create(path).expect("create openmetrics file");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
    let t = Instant::now();
    for i in 0..w.series_count() {
        let (labels, kind) = w.series(i);
        let mut d = SeriesData::default();
        w.samples(i, 0, w.samples_per_series, &mut d);
        let name = labels.metric_name().unwrap_or("x").to_string();
        let mut lbl = String::new();
        for l in labels.iter().filter(|l| l.name != "__name__") {
            if !lbl.is_empty() {
                lbl.push(',');
            }
            lbl.push_str(&format!("{}=\"{}\"", l.name, l.value));
        }
        for (&ts, &v) in d.ts.iter().zip(&d.values) {
            let value = match kind.value {
                ValueKind::Float => format!("{}", f64::from_bits(v)),
                ValueKind::Money => Money::from_nanos(v as i64).to_string(),
            };
            // OpenMetrics timestamps are seconds.
            writeln!(out, "{name}{{{lbl}}} {value} {}", ts / 1_000_000_000).expect("write");
        }
    }
    writeln!(out, "# EOF").expect("write");
    out.flush().expect("flush");
    println!("wrote {path} in {:.1} s", t.elapsed().as_secs_f64());
}
