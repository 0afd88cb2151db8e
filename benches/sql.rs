//! SQL chargeback benchmark: tally's engine over its own store vs DuckDB over the same
//! data exported as Parquet, same run, same machine.
//!
//! `cargo bench --bench sql` (needs `$TALLY_TEST_DEPS/venv/bin/python` with duckdb, as
//! installed by `scripts/test.sh`). Size: `TALLY_BENCH_SQL_SAMPLES` (default 20M samples:
//! one month of 1-minute cost samples for ~450 series; 200k when run by `cargo test`).
//! Reported run: `TALLY_BENCH_SQL_SAMPLES=100000000`.

#[path = "../tests/common/costgen.rs"]
mod costgen;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::{Decimal128Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tally::index::Matcher;
use tally::query::sql::value::parse_timestamp;
use tally::query::sql::{execute_with_stats, QueryOptions, QueryResult};
use tally::store::{SampleValues, SelectRequest, SeriesSource, Store, StoreOptions};
use tally::wal::FsyncPolicy;

const QUERIES: &[(&str, &str)] = &[
    (
        "monthly chargeback",
        "SELECT tenant, cost_center, sum(cost) AS total FROM costs \
         WHERE ts >= '2026-10-01' AND ts < '2026-11-01' GROUP BY tenant, cost_center",
    ),
    (
        "daily by SKU",
        "SELECT date_trunc('day', ts) AS day, sku, sum(cost) AS total FROM costs \
         WHERE ts >= '2026-10-01' AND ts < '2026-11-01' GROUP BY 1, 2",
    ),
];

fn main() {
    // `cargo bench` passes --bench; under `cargo test --all-targets` run a quick smoke size.
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("TALLY_BENCH_SQL_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 20_000_000 } else { 200_000 });
    let per_series = 31 * 24 * 60; // one month of 1-minute samples
    let series = n.div_ceil(per_series);
    let base = std::env::var("TALLY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let tmp = tempfile::tempdir_in(base).expect("temp dir");
    let dir = tmp.path().join("data");
    let t0 = Instant::now();
    let store = Store::open(
        &dir,
        StoreOptions {
            fsync: FsyncPolicy::Interval(Duration::from_secs(5)),
            background: false,
            head_max_samples: usize::MAX,
            ..StoreOptions::default()
        },
    )
    .expect("open store");
    costgen::generate(
        &store,
        &costgen::GenSpec {
            series,
            samples_per_series: per_series,
            start: parse_timestamp("2026-10-01").unwrap_or(0),
            step: 60_000_000_000,
            seed: 1,
            tenants: 20,
            usage: false,
        },
        false,
    );
    store.flush().expect("flush");
    store.compact_all().expect("compact");
    let samples = series * per_series;
    println!(
        "data: {samples} cost samples in {series} series, loaded+flushed+compacted in {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    let pq = tmp.path().join("costs.parquet");
    let t0 = Instant::now();
    export_parquet(&store, &pq);
    println!(
        "parquet for DuckDB: {} MB in {:.1}s",
        std::fs::metadata(&pq).map(|m| m.len() / 1_000_000).unwrap_or(0),
        t0.elapsed().as_secs_f64()
    );

    let opts = QueryOptions::default();
    let mut tally_times = Vec::new();
    let mut tally_results = Vec::new();
    for (name, q) in QUERIES {
        let mut best = f64::MAX;
        let mut res = None;
        for _ in 0..3 {
            let snap = store.snapshot();
            let t = Instant::now();
            let (r, st) = execute_with_stats(&snap, q, &opts).expect("tally query");
            let dt = t.elapsed().as_secs_f64();
            best = best.min(dt);
            assert_eq!(
                st.rows_scanned as usize, samples,
                "{name} scanned a different number of rows"
            );
            res = Some(r);
        }
        println!(
            "tally  {name:<20} {:>8.3}s  ({:.0} M samples/s)",
            best,
            samples as f64 / best / 1e6
        );
        tally_times.push(best);
        tally_results.push(res.expect("ran"));
    }

    let duck = duckdb_times(&pq);
    for (i, (name, _)) in QUERIES.iter().enumerate() {
        let (d, total) = &duck[i];
        let t = tally_times[i];
        let ours = grand_total(&tally_results[i]);
        assert_eq!(&ours, total, "{name}: tally and DuckDB disagree on the grand total");
        println!(
            "{name:<20} tally {t:.3}s  duckdb {d:.3}s  tally/duckdb = {:.2}  (grand total {ours} both)",
            t / d
        );
    }
}

fn grand_total(r: &QueryResult) -> String {
    let i = r.columns.iter().position(|c| c.0 == "total").expect("total column");
    let s: i128 = r
        .rows
        .iter()
        .map(|row| match &row[i] {
            tally::query::sql::Val::Dec(d) => *d,
            _ => 0,
        })
        .sum();
    tally::query::sql::value::format_dec(s)
}

fn export_parquet(store: &Store, path: &Path) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), false),
        Field::new("tenant", DataType::Utf8, false),
        Field::new("cost_center", DataType::Utf8, true),
        Field::new("sku", DataType::Utf8, false),
        Field::new("cost", DataType::Decimal128(38, 9), false),
    ]));
    let f = std::fs::File::create(path).expect("create parquet");
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("level")))
        .build();
    let mut w = ArrowWriter::try_new(f, schema.clone(), Some(props)).expect("writer");
    let snap = store.snapshot();
    let m = [Matcher::equal("__name__", "cost")];
    let req = SelectRequest {
        tenant: None,
        matchers: &m,
        start: i64::MIN,
        end: i64::MAX,
    };
    let mut ts_b = TimestampMicrosecondBuilder::new();
    let mut t_b = StringBuilder::new();
    let mut c_b = StringBuilder::new();
    let mut s_b = StringBuilder::new();
    let mut v_b = Decimal128Builder::new();
    let mut rows = 0;
    let stream = snap.select(&req).expect("select");
    for s in stream {
        let s = s.expect("series");
        let SampleValues::Money(v) = &s.values else { continue };
        let tenant = s.labels.tenant().unwrap_or("default").to_string();
        let cc = s.labels.get("cost_center").map(str::to_string);
        let sku = s.labels.get("sku").unwrap_or("").to_string();
        for (t, x) in s.ts.iter().zip(v) {
            ts_b.append_value(t / 1000);
            t_b.append_value(&tenant);
            c_b.append_option(cc.as_deref());
            s_b.append_value(&sku);
            v_b.append_value(*x as i128);
        }
        rows += v.len();
        if rows >= 1 << 20 {
            flush(&mut w, &schema, &mut ts_b, &mut t_b, &mut c_b, &mut s_b, &mut v_b);
            rows = 0;
        }
    }
    flush(&mut w, &schema, &mut ts_b, &mut t_b, &mut c_b, &mut s_b, &mut v_b);
    w.close().expect("close parquet");
}

fn flush(
    w: &mut ArrowWriter<std::fs::File>,
    schema: &Arc<Schema>,
    ts: &mut TimestampMicrosecondBuilder,
    t: &mut StringBuilder,
    c: &mut StringBuilder,
    s: &mut StringBuilder,
    v: &mut Decimal128Builder,
) {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(ts.finish()),
        Arc::new(t.finish()),
        Arc::new(c.finish()),
        Arc::new(s.finish()),
        Arc::new(v.finish().with_precision_and_scale(38, 9).expect("decimal")),
    ];
    let b = RecordBatch::try_new(schema.clone(), cols).expect("batch");
    if b.num_rows() > 0 {
        w.write(&b).expect("write");
    }
}

/// Best-of-3 DuckDB wall time per query and its grand total, from the test venv.
fn duckdb_times(pq: &Path) -> Vec<(f64, String)> {
    let deps = std::env::var("TALLY_TEST_DEPS").expect("TALLY_TEST_DEPS (run scripts/test.sh once)");
    let py = PathBuf::from(deps).join("venv/bin/python");
    let script = r#"
import sys, time, json, duckdb
con = duckdb.connect()
con.execute("SET TimeZone='UTC'")
con.execute("SET enable_progress_bar=false")
con.execute(f"CREATE VIEW costs AS SELECT * FROM read_parquet('{sys.argv[1]}')")
print("duckdb", duckdb.__version__, "threads", con.execute("SELECT current_setting('threads')").fetchone()[0], file=sys.stderr)
out = []
for q in json.loads(sys.argv[2]):
    best = 1e9
    for _ in range(3):
        t = time.perf_counter()
        rows = con.execute(q).fetchall()
        best = min(best, time.perf_counter() - t)
    total = con.execute(f"SELECT sum(total)::VARCHAR FROM ({q})").fetchone()[0]
    out.append([best, total])
print(json.dumps(out))
"#;
    let qs: Vec<&str> = QUERIES.iter().map(|q| q.1).collect();
    let o = Command::new(py)
        .args([
            "-c",
            script,
            pq.to_str().unwrap_or(""),
            &serde_json::to_string(&qs).unwrap_or_default(),
        ])
        .output()
        .expect("run duckdb");
    eprint!("{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "duckdb failed");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let last = stdout.lines().rev().find(|l| l.starts_with('[')).unwrap_or("");
    let v: Vec<(f64, String)> = serde_json::from_str(last).expect("duckdb output");
    v.into_iter()
        .map(|(t, s)| {
            let s = if s.contains('.') {
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            } else {
                s
            };
            (t, s)
        })
        .collect()
}
