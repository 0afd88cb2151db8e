//! Property test: random appends, flushes, compactions and restarts against a simple
//! in-memory model; every query answer must equal the model's.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use tally::index::{MatchOp, Matcher};
use tally::model::{LabelLimits, Labels, Money, Sample, SeriesKind, Value, ValueKind};
use tally::store::{SampleValues, SelectRequest, SeriesSource, Store, StoreOptions, Visit, WriteBatch};
use tally::wal::FsyncPolicy;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<(usize, i64, i64)>),
    Flush,
    Compact,
    Reopen,
}

const SERIES: usize = 6;
/// Partition width in the test: small so data spans several partitions.
const WIDTH: i64 = 1_000;

fn series_def(i: usize) -> (Labels, SeriesKind) {
    let kind = match i % 3 {
        0 => SeriesKind::GAUGE,
        1 => SeriesKind::DELTA,
        _ => SeriesKind::MONEY,
    };
    let labels = Labels::from_pairs(
        [
            (
                "__name__",
                if kind == SeriesKind::MONEY {
                    "cost".to_string()
                } else {
                    format!("m{}", i % 2)
                },
            ),
            ("tenant", format!("t{}", i % 2)),
            ("i", i.to_string()),
        ],
        &LabelLimits::default(),
    )
    .unwrap();
    (labels, kind)
}

fn value(kind: SeriesKind, v: i64) -> Value {
    match kind.value {
        ValueKind::Float => Value::Float(v as f64 * 0.5),
        ValueKind::Money => Value::Money(Money::from_nanos(v * 1_000)),
    }
}

/// The model: per series a map ts → value, applying Replace/Sum in append order.
type Model = BTreeMap<usize, BTreeMap<i64, i64>>;

fn apply(model: &mut Model, i: usize, ts: i64, v: i64) {
    let (_, kind) = series_def(i);
    let e = model.entry(i).or_default();
    match kind.dup {
        tally::model::DupPolicy::Replace => {
            e.insert(ts, v);
        }
        tally::model::DupPolicy::Sum => *e.entry(ts).or_insert(0) += v,
    }
}

fn opts() -> StoreOptions {
    StoreOptions {
        partition_width: Duration::from_nanos(WIDTH as u64),
        fsync: FsyncPolicy::Interval(Duration::from_secs(3600)),
        background: false,
        compact_min_segments: 2,
        head_max_samples: usize::MAX,
        segment: tally::segment::SegmentOptions {
            block_samples: 7,
            zstd_level: Some(1),
        },
        ..StoreOptions::default()
    }
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec((0..SERIES, 0i64..4 * WIDTH, -50i64..50), 1..30).prop_map(Op::Append),
        1 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

fn check(store: &Store, model: &Model, start: i64, end: i64, tenant: Option<&str>, matcher: &Option<Matcher>) {
    let snap = store.snapshot();
    let matchers: Vec<Matcher> = matcher.iter().cloned().collect();
    let got: Vec<_> = snap
        .select(&SelectRequest {
            tenant,
            matchers: &matchers,
            start,
            end,
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let mut want: Vec<(Labels, Vec<(i64, i64)>)> = Vec::new();
    for (&i, samples) in model {
        let (labels, _) = series_def(i);
        if tenant.is_some_and(|t| labels.tenant() != Some(t)) {
            continue;
        }
        if let Some(m) = matcher {
            if !m.matches(labels.get(&m.name).unwrap_or("")) {
                continue;
            }
        }
        let s: Vec<(i64, i64)> = samples.range(start..=end).map(|(&t, &v)| (t, v)).collect();
        if !s.is_empty() {
            want.push((labels, s));
        }
    }
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got.len(),
        want.len(),
        "series count for [{start},{end}] tenant={tenant:?} {matcher:?}"
    );
    // `scan` lends, through reused buffers, exactly what `select` hands over.
    let req = SelectRequest {
        tenant,
        matchers: &matchers,
        start,
        end,
    };
    let mut scanned: Vec<(Labels, SeriesKind, Vec<i64>, Vec<u64>)> = Vec::new();
    snap.scan(&req, &mut |s| {
        scanned.push((s.labels.clone(), s.kind, s.ts.to_vec(), s.raw.to_vec()));
        Visit::Continue(())
    })
    .unwrap();
    assert_eq!(scanned.len(), got.len(), "scan series count for [{start},{end}]");
    for (sc, g) in scanned.iter().zip(&got) {
        assert_eq!((&sc.0, sc.1, &sc.2), (&g.labels, g.kind, &g.ts), "scan of {}", g.labels);
        let raw: Vec<u64> = match &g.values {
            SampleValues::Float(v) => v.iter().map(|x| x.to_bits()).collect(),
            SampleValues::Money(v) => v.iter().map(|&x| x as u64).collect(),
        };
        assert_eq!(sc.3, raw, "scanned values of {}", g.labels);
    }
    // `series_labels` answers from metadata what `select` answers from samples.
    let names = snap.series_labels(&req).unwrap();
    assert_eq!(
        names,
        got.iter().map(|g| g.labels.clone()).collect::<Vec<_>>(),
        "series_labels for [{start},{end}]"
    );
    for (g, (labels, samples)) in got.iter().zip(&want) {
        assert_eq!(&g.labels, labels);
        assert_eq!(
            g.ts,
            samples.iter().map(|s| s.0).collect::<Vec<_>>(),
            "timestamps of {labels}"
        );
        match &g.values {
            SampleValues::Float(v) => {
                let w: Vec<f64> = samples.iter().map(|s| s.1 as f64 * 0.5).collect();
                assert_eq!(v, &w, "values of {labels}");
            }
            SampleValues::Money(v) => {
                let w: Vec<i64> = samples.iter().map(|s| s.1 * 1_000).collect();
                assert_eq!(v, &w, "values of {labels}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(
        ops in proptest::collection::vec(op_strategy(), 1..25),
        queries in proptest::collection::vec((0i64..4 * WIDTH, 0i64..4 * WIDTH, 0u8..3, 0u8..4), 3),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Some(Store::open(dir.path(), opts()).unwrap());
        let mut model = Model::new();
        for op in ops {
            let s = store.as_ref().unwrap();
            match op {
                Op::Append(rows) => {
                    let mut batch = WriteBatch::new();
                    for &(i, ts, v) in &rows {
                        let (labels, kind) = series_def(i);
                        batch.add(labels, kind, vec![Sample { ts, value: value(kind, v) }]);
                        apply(&mut model, i, ts, v);
                    }
                    s.append(&batch).unwrap();
                }
                Op::Flush => s.flush().unwrap(),
                Op::Compact => { s.compact_all().unwrap(); }
                Op::Reopen => {
                    let opts_no_flush = StoreOptions { flush_on_close: rows_flush_choice(&model), ..opts() };
                    drop(store.take());
                    store = Some(Store::open(dir.path(), opts_no_flush).unwrap());
                }
            }
        }
        let s = store.as_ref().unwrap();
        check(s, &model, i64::MIN, i64::MAX, None, &None);
        for (a, b, t, m) in queries {
            let (start, end) = (a.min(b), a.max(b));
            let tenant = match t { 0 => None, 1 => Some("t0"), _ => Some("t1") };
            let matcher = match m {
                0 => None,
                1 => Some(Matcher::new(MatchOp::Equal, "__name__", "cost").unwrap()),
                2 => Some(Matcher::new(MatchOp::Regex, "i", "[0-3]").unwrap()),
                _ => Some(Matcher::new(MatchOp::NotEqual, "__name__", "m0").unwrap()),
            };
            check(s, &model, start, end, tenant, &matcher);
        }
    }
}

/// Alternate between restarting with and without a final flush, so both the
/// replay-from-WAL path and the segments-only path are exercised.
fn rows_flush_choice(model: &Model) -> bool {
    model.values().map(|m| m.len()).sum::<usize>() % 2 == 0
}
