//! Proves `storage-format.md`: an independent Python decoder written only from the
//! document (`tests/py/decode_format.py`) decodes the manifest, every segment file and
//! the WAL of a real store, and its output must equal what tally's own readers return
//! (`Segment::open` + `read_series`, `wal::replay`, and `Snapshot::select` after reopen).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value as Json;
use tally::index::Matcher;
use tally::model::{DupPolicy, LabelLimits, Labels, Money, Sample, SeriesKind, Value, ValueKind};
use tally::segment::{Segment, SegmentOptions};
use tally::store::manifest::Manifest;
use tally::store::{SampleValues, SelectRequest, SeriesSource, Store, StoreOptions, WriteBatch};

const HOUR: i64 = 3_600_000_000_000;
const STEP: i64 = 15_000_000_000;
const STALE: u64 = 0x7ff0_0000_0000_0002;
/// Money with a Replace policy (kind byte 1): not one of the named constants.
const MONEY_REPLACE: SeriesKind = SeriesKind {
    value: ValueKind::Money,
    dup: DupPolicy::Replace,
};

fn opts() -> StoreOptions {
    StoreOptions {
        partition_width: Duration::from_secs(3600),
        background: false,
        flush_on_close: false,
        compact_min_segments: 1000,
        segment: SegmentOptions {
            block_samples: 100,
            zstd_level: Some(3),
        },
        ..StoreOptions::default()
    }
}

fn labels(name: &str, extra: &[(&str, &str)]) -> Labels {
    let mut pairs: Vec<(String, String)> = vec![
        ("__name__".into(), name.into()),
        ("suite".into(), "fmt".into()),
        ("tenant".into(), "acme".into()),
    ];
    pairs.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    Labels::from_pairs(pairs, &LabelLimits::default()).unwrap()
}

/// Deterministic pseudo-random numbers (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The series the test writes: (labels, kind).
fn series() -> Vec<(Labels, SeriesKind)> {
    vec![
        (labels("cpu_usage", &[("host", "a")]), SeriesKind::GAUGE), // decimal + NaN/stale/inf/-0
        (labels("cpu_usage", &[("host", "b")]), SeriesKind::GAUGE), // noisy: XOR
        (labels("cpu_usage", &[("host", "c")]), SeriesKind::GAUGE), // constant
        (labels("requests", &[("path", "/x")]), SeriesKind::DELTA), // Sum floats (integers)
        (labels("cost", &[("sku", "vm")]), SeriesKind::MONEY),      // Sum money
        (labels("price", &[("sku", "vm")]), MONEY_REPLACE),         // Replace money
    ]
}

/// Samples for series `s` in `[from, from + count * STEP)`; `jitter` makes timestamps irregular.
fn samples(rng: &mut Rng, s: usize, from: i64, count: i64, jitter: bool, salt: u64) -> Vec<Sample> {
    (0..count)
        .map(|k| {
            let j = if jitter { rng.below(7) as i64 * 1_000_000 } else { 0 };
            let ts = from + k * STEP + j;
            let value = match s {
                0 => Value::Float(match (k + salt as i64) % 97 {
                    13 => f64::NAN,
                    29 => f64::from_bits(STALE),
                    41 => -0.0,
                    53 => f64::INFINITY,
                    _ => (rng.below(10_000) as f64) / 100.0,
                }),
                1 => Value::Float(f64::from_bits(
                    0x3ff0_0000_0000_0000 | (rng.next() & 0x000f_ffff_ffff_ffff),
                )),
                2 => Value::Float(42.5),
                3 => Value::Float((rng.below(1000) + salt) as f64),
                4 => Value::Money(Money(rng.below(2_000) as i64 * 10_000_000 - 3_000_000_000)),
                // A cycle of 8 wide values: bit-packed with a byte-aligned period, so zstd pays.
                _ => Value::Money(Money::from_nanos(
                    (((k as u64 + salt) % 8 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20) as i64 - (1 << 43),
                )),
            };
            Sample { ts, value }
        })
        .collect()
}

/// One batch: every series gets `count` samples starting at `from`.
fn batch(rng: &mut Rng, from: i64, count: i64, salt: u64, pos: i64) -> WriteBatch {
    let mut b = WriteBatch::new();
    for (s, (l, k)) in series().into_iter().enumerate() {
        let jitter = s == 0 || s == 2;
        b.add(l, k, samples(rng, s, from, count, jitter, salt));
    }
    b.position("cost.compute/0", pos);
    b
}

fn python() -> PathBuf {
    match std::env::var_os("TALLY_TEST_DEPS") {
        Some(d) => Path::new(&d).join("venv/bin/python"),
        None => PathBuf::from("python3"),
    }
}

/// Runs the document-only decoder and parses its JSON.
fn decode(args: &[&str]) -> Json {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/decode_format.py");
    let py = python();
    let out = Command::new(&py)
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; run scripts/test.sh", py.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        panic!(
            "the Python decoder needs the `zstandard` module to decode zstd frames and it is not \
             installed for {}: run scripts/test.sh (installs it into $TALLY_TEST_DEPS/venv)\n{stderr}",
            py.display()
        );
    }
    assert!(out.status.success(), "decode_format.py {args:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout).expect("decoder output is JSON")
}

fn labels_json(l: &Labels) -> Json {
    Json::Array(
        l.iter()
            .map(|x| Json::Array(vec![Json::from(x.name.as_str()), Json::from(x.value.as_str())]))
            .collect(),
    )
}

fn strings<T: ToString>(v: &[T]) -> Json {
    Json::Array(v.iter().map(|x| Json::from(x.to_string())).collect())
}

fn parse_strings<T: std::str::FromStr>(v: &Json) -> Vec<T>
where
    T::Err: std::fmt::Debug,
{
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().parse().unwrap())
        .collect()
}

fn raw(values: &SampleValues) -> Vec<u64> {
    match values {
        SampleValues::Float(f) => f.iter().map(|x| x.to_bits()).collect(),
        SampleValues::Money(m) => m.iter().map(|&x| x as u64).collect(),
    }
}

fn combine(kind_byte: u8, older: u64, newer: u64) -> u64 {
    match kind_byte {
        0 | 1 => newer,
        2 => (f64::from_bits(older) + f64::from_bits(newer)).to_bits(),
        _ => (older as i64).wrapping_add(newer as i64) as u64,
    }
}

type Expected = BTreeMap<String, (u8, BTreeMap<i64, u64>)>;

/// Folds one run (unique timestamps) into the expected state, in precedence order.
fn fold_run(exp: &mut Expected, key: String, kind: u8, ts: &[i64], vals: &[u64]) {
    let e = exp.entry(key).or_insert_with(|| (kind, BTreeMap::new()));
    assert_eq!(e.0, kind);
    for (&t, &v) in ts.iter().zip(vals) {
        e.1.entry(t).and_modify(|o| *o = combine(kind, *o, v)).or_insert(v);
    }
}

/// Checks one segment file: Python's decoding equals tally's `Segment` reader.
fn check_segment(path: &Path, entry: &Json) -> Json {
    let py = decode(&[path.to_str().unwrap()]);
    let seg = Segment::open(path).unwrap();
    let f = seg.footer();
    let pf = &py["footer"];
    assert_eq!(pf["series_count"], f.series_count);
    assert_eq!(pf["rank"], f.rank);
    assert_eq!(pf["samples"], f.samples);
    assert_eq!(pf["version"], f.version);
    assert_eq!(pf["flags"], f.flags);
    assert_eq!(pf["table_offset"], f.table_offset);
    assert_eq!(pf["min_t"], f.min_t.to_string());
    assert_eq!(pf["max_t"], f.max_t.to_string());
    assert_eq!(pf["partition_start"], f.partition_start.to_string());
    assert_eq!(entry["rank"], f.rank, "manifest rank vs footer");
    assert_eq!(entry["partition_start"], f.partition_start);
    assert_eq!(entry["samples"], f.samples);
    assert_eq!(py["decoded_samples"], f.samples);
    let ps = py["series"].as_array().unwrap();
    assert_eq!(ps.len(), seg.series().len());
    for (i, (meta, p)) in seg.series().iter().zip(ps).enumerate() {
        assert_eq!(p["labels"], labels_json(&meta.labels), "{}: series {i}", path.display());
        assert_eq!(p["kind"]["byte"], meta.kind.to_byte());
        assert_eq!(p["blocks"].as_array().unwrap().len(), meta.blocks.len());
        let (mut ts, mut vals) = (Vec::new(), Vec::new());
        seg.read_series(i, i64::MIN, i64::MAX, &mut ts, &mut vals).unwrap();
        assert_eq!(p["ts"], strings(&ts), "{}: {} timestamps", path.display(), meta.labels);
        assert_eq!(
            p["values"],
            strings(&vals),
            "{}: {} values",
            path.display(),
            meta.labels
        );
    }
    py
}

#[test]
fn python_decoder_written_from_the_document_matches_tally() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    {
        let store = Store::open(dir, opts()).unwrap();
        // Two partitions (hours 0 and 1), several blocks per series.
        store.append(&batch(&mut rng, 0, 400, 0, 10)).unwrap();
        store.append(&batch(&mut rng, HOUR, 300, 1, 11)).unwrap();
        store.flush().unwrap();
        // Overlapping timestamps in hour 0 (duplicates: Replace and Sum), more of hour 1.
        store.append(&batch(&mut rng, 0, 150, 2, 12)).unwrap();
        store.append(&batch(&mut rng, HOUR + 300 * STEP, 100, 3, 13)).unwrap();
        store.flush().unwrap();
        assert_eq!(store.compact_all().unwrap(), 2);
        // A segment on top of the compacted one (rank precedence) and a third partition.
        store.append(&batch(&mut rng, 50 * STEP, 60, 4, 14)).unwrap();
        store.append(&batch(&mut rng, 2 * HOUR + 7, 130, 5, 15)).unwrap();
        store.flush().unwrap();
        // Un-flushed appends stay in the WAL, including duplicates of flushed data.
        store.append(&batch(&mut rng, 30 * STEP, 20, 6, 16)).unwrap();
        store
            .append(&batch(&mut rng, 2 * HOUR + 200 * STEP, 50, 7, 17))
            .unwrap();
        store.close().unwrap();
    }

    // MANIFEST: Python's decoding equals tally's.
    let pm = decode(&["--manifest", dir.join("MANIFEST").to_str().unwrap()]);
    let m = Manifest::load(dir).unwrap().unwrap();
    assert_eq!(pm, serde_json::to_value(&m).unwrap());
    // Samples spill over hour boundaries: p0, p1, p2 compacted, then new p0 and p2 segments.
    assert_eq!(m.segments.len(), 5);

    // Every segment: Python == Segment reader; collect the expected merged data.
    let mut segs: Vec<(u64, Json)> = Vec::new();
    let mut zstd_blocks = 0;
    let mut max_blocks = 0;
    for e in pm["segments"].as_array().unwrap() {
        let path = dir.join(e["file"].as_str().unwrap());
        let py = check_segment(&path, e);
        zstd_blocks += py["zstd_blocks"].as_u64().unwrap();
        for s in py["series"].as_array().unwrap() {
            max_blocks = max_blocks.max(s["blocks"].as_array().unwrap().len());
        }
        segs.push((e["rank"].as_u64().unwrap(), py));
    }
    assert!(max_blocks >= 4, "series span several blocks");
    assert!(zstd_blocks > 0, "some blocks are zstd-compressed");

    let mut expected: Expected = BTreeMap::new();
    segs.sort_by_key(|s| s.0);
    for (_, py) in &segs {
        for s in py["series"].as_array().unwrap() {
            let key = s["labels"].to_string();
            let kind = s["kind"]["byte"].as_u64().unwrap() as u8;
            fold_run(
                &mut expected,
                key,
                kind,
                &parse_strings::<i64>(&s["ts"]),
                &parse_strings::<u64>(&s["values"]),
            );
        }
    }

    // WAL: Python's records equal tally's replay, generation by generation.
    let checkpoint = pm["wal_checkpoint"].as_u64();
    let mut py_records: Vec<(u64, Json)> = Vec::new();
    let mut gens: Vec<u64> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".wal")?.parse().ok())
        .collect();
    gens.sort_unstable();
    for &g in &gens {
        if checkpoint.is_some_and(|c| g <= c) {
            continue;
        }
        let path = dir.join("wal").join(format!("{g:020}.wal"));
        let w = decode(&["--wal", path.to_str().unwrap()]);
        assert_eq!(w["good_end"], w["file_len"], "clean WAL has no torn tail");
        for r in w["records"].as_array().unwrap() {
            py_records.push((g, r.clone()));
        }
    }
    let mut tally_records = Vec::new();
    tally::wal::replay(&dir.join("wal"), m.wal_checkpoint, |g, b| tally_records.push((g, b))).unwrap();
    assert_eq!(py_records.len(), 2, "two un-flushed appends");
    assert_eq!(py_records.len(), tally_records.len());
    // The head: WAL groups folded in append order, then merged on top of the segments.
    let mut head: Expected = BTreeMap::new();
    let mut refs: HashMap<(u64, u64), (String, u8)> = HashMap::new();
    for ((pg, pr), (tg, tb)) in py_records.iter().zip(&tally_records) {
        assert_eq!(pg, tg);
        let defs = pr["defs"].as_array().unwrap();
        assert_eq!(defs.len(), tb.defs.len());
        for (pd, td) in defs.iter().zip(&tb.defs) {
            assert_eq!(pd["ref"], td.series_ref);
            assert_eq!(pd["kind"]["byte"], td.kind.to_byte());
            assert_eq!(pd["labels"], labels_json(&td.labels));
            let kind = td.kind.to_byte();
            refs.insert((*pg, td.series_ref as u64), (pd["labels"].to_string(), kind));
        }
        let groups = pr["groups"].as_array().unwrap();
        assert_eq!(groups.len(), tb.groups.len());
        for (pgr, tgr) in groups.iter().zip(&tb.groups) {
            assert_eq!(pgr["ref"], tgr.series_ref);
            assert_eq!(pgr["ts"], strings(&tgr.ts));
            assert_eq!(pgr["values"], strings(&tgr.values));
            let (key, kind) = refs[&(*pg, tgr.series_ref as u64)].clone();
            for (t, v) in tgr.ts.iter().zip(&tgr.values) {
                fold_run(&mut head, key.clone(), kind, &[*t], &[*v]);
            }
        }
        let pos: Vec<(String, i64)> = pr["positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_i64().unwrap()))
            .collect();
        assert_eq!(pos, tb.positions);
    }
    assert_eq!(py_records[0].1["defs"].as_array().unwrap().len(), series().len());
    for (key, (kind, run)) in head {
        let (ts, vals): (Vec<i64>, Vec<u64>) = run.into_iter().unzip();
        fold_run(&mut expected, key, kind, &ts, &vals);
    }

    // tally's own read path (segments by rank + replayed WAL) equals the decoded files.
    let store = Store::open(dir, opts()).unwrap();
    let snap = store.snapshot();
    let matchers = [Matcher::equal("suite", "fmt")];
    let got: Expected = snap
        .select(&SelectRequest {
            tenant: None,
            matchers: &matchers,
            start: i64::MIN,
            end: i64::MAX,
        })
        .unwrap()
        .map(|s| {
            let s = s.unwrap();
            let run = s.ts.iter().copied().zip(raw(&s.values)).collect();
            (labels_json(&s.labels).to_string(), (s.kind.to_byte(), run))
        })
        .collect();
    assert_eq!(got.len(), series().len());
    for (key, (kind, run)) in &expected {
        let (gk, grun) = got.get(key).unwrap_or_else(|| panic!("{key} missing from select"));
        assert_eq!(gk, kind, "{key}");
        assert_eq!(grun.len(), run.len(), "{key}: sample count");
        for ((t1, v1), (t2, v2)) in grun.iter().zip(run) {
            assert_eq!((t1, v1), (t2, v2), "{key}");
        }
    }
    assert_eq!(got, expected);
    store.close().unwrap();
}
