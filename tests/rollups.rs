//! Downsampling: rollups are written for old partitions, stay invisible to label APIs
//! and SQL, answer qualifying PromQL range queries exactly (sums, counts, min, max) or
//! within the documented bound (rate), survive a restart, and are tiered like raw data.

use std::time::Duration;

use tally::index::Matcher;
use tally::model::{LabelLimits, Labels, Money, Sample, SeriesKind, Value};
use tally::query::promql::{range_query, EngineOptions, QueryValue};
use tally::query::sql::{execute, QueryOptions};
use tally::store::manifest::Manifest;
use tally::store::{now_ns, SelectRequest, SeriesSource, Store, StoreOptions, WriteBatch};
use tally::tier::TierOptions;

const DAY: i64 = 86_400_000_000_000;
const MIN: i64 = 60_000_000_000;
const HOUR: i64 = 60 * MIN;

fn start() -> i64 {
    now_ns().div_euclid(DAY) * DAY - 10 * DAY
}

fn opts(tier_dir: &std::path::Path) -> StoreOptions {
    let mut t = TierOptions::new(format!("file://{}", tier_dir.display()));
    t.tier_after = Duration::from_secs(86_400);
    StoreOptions {
        background: false,
        downsample_after: Some(Duration::from_secs(2 * 86_400)),
        tier: Some(t),
        ..StoreOptions::default()
    }
}

fn labels(pairs: &[(&str, String)]) -> Labels {
    Labels::from_pairs(pairs.iter().map(|(k, v)| (*k, v.clone())), &LabelLimits::default()).unwrap()
}

/// Three days of 1-minute samples (aligned, so every window has an edge sample) for a
/// money series per tenant (multiples of 0.25 so raw f64 sums are exact too), a counter
/// with resets and a gauge; plus one recent hour that is never downsampled.
fn load(store: &Store) {
    let s0 = start();
    let spans = [(s0, 3 * 24 * 60), (now_ns().div_euclid(HOUR) * HOUR - 2 * HOUR, 60)];
    for (from, n) in spans {
        let mut b = WriteBatch::new();
        for i in 0..3usize {
            let tenant = format!("t{i}");
            let ts = |k: i64| from + k * MIN;
            b.add(
                labels(&[("__name__", "cost".into()), ("tenant", tenant.clone())]),
                SeriesKind::MONEY,
                (0..n)
                    .map(|k| Sample {
                        ts: ts(k),
                        value: Value::Money(Money(((k * 7 + i as i64 * 3) % 40) * 250_000_000)),
                    })
                    .collect(),
            );
            b.add(
                labels(&[("__name__", "requests_total".into()), ("tenant", tenant.clone())]),
                SeriesKind::GAUGE,
                (0..n)
                    .map(|k| Sample {
                        ts: ts(k),
                        value: Value::Float(((k + i as i64 * 50) % 420) as f64 * 3.0),
                    })
                    .collect(),
            );
            b.add(
                labels(&[("__name__", "temp".into()), ("tenant", tenant)]),
                SeriesKind::GAUGE,
                (0..n)
                    .map(|k| Sample {
                        ts: ts(k),
                        value: Value::Float(((k * 13 + i as i64) % 97) as f64 * 0.5 - 20.0),
                    })
                    .collect(),
            );
        }
        store.append(&b).unwrap();
    }
    store.flush().unwrap();
    store.compact_all().unwrap();
}

fn rollup_entries(dir: &std::path::Path) -> Vec<tally::store::manifest::SegmentEntry> {
    let m = Manifest::load(dir).unwrap().unwrap();
    m.segments.into_iter().filter(|e| e.resolution_ns.is_some()).collect()
}

fn query(src: &dyn SeriesSource, q: &str, step_ms: i64, rollups: bool) -> QueryValue {
    let o = EngineOptions {
        use_rollups: rollups,
        ..EngineOptions::default()
    };
    let s = start() / 1_000_000;
    let e = now_ns().div_euclid(HOUR) * HOUR / 1_000_000;
    range_query(src, None, q, s, e, step_ms, &o).unwrap_or_else(|err| panic!("{q}: {err}"))
}

fn points(v: &QueryValue) -> Vec<(String, i64, f64)> {
    match v {
        QueryValue::Matrix(m) => m
            .iter()
            .flat_map(|s| s.points.iter().map(move |p| (s.labels.to_string(), p.0, p.1)))
            .collect(),
        other => panic!("expected a matrix, got {other:?}"),
    }
}

const EXACT: &[&str] = &[
    "sum by (tenant) (sum_over_time(cost[1h]))",
    "sum_over_time(cost[5h])",
    "count_over_time(temp[1h])",
    "min_over_time(temp[1h])",
    "max_over_time(temp[2h])",
    "max_over_time(cost[1h])",
];

/// Exact queries agree bit for bit; rate stays within 10 % (README "Rollups").
fn check_answers(src: &dyn SeriesSource) {
    for step in [3_600_000, 300_000 * 6] {
        for q in EXACT {
            let raw = points(&query(src, q, step, false));
            let rolled = points(&query(src, q, step, true));
            assert!(raw.len() > 60, "{q}: too few points ({})", raw.len());
            assert_eq!(raw, rolled, "{q} at step {step}");
        }
    }
    let avg_raw = points(&query(src, "avg_over_time(temp[1h])", 3_600_000, false));
    let avg_rolled = points(&query(src, "avg_over_time(temp[1h])", 3_600_000, true));
    assert_eq!(avg_raw.len(), avg_rolled.len());
    for (a, b) in avg_raw.iter().zip(&avg_rolled) {
        assert_eq!((&a.0, a.1), (&b.0, b.1));
        assert!((a.2 - b.2).abs() <= 1e-9 * (1.0 + a.2.abs()), "avg {a:?} vs {b:?}");
    }
    for q in ["rate(requests_total[1h])", "increase(requests_total[2h])"] {
        let raw = points(&query(src, q, 3_600_000, false));
        let rolled = points(&query(src, q, 3_600_000, true));
        let mut common = 0;
        for r in &raw {
            if let Some(x) = rolled.iter().find(|x| x.0 == r.0 && x.1 == r.1) {
                common += 1;
                assert!((x.2 - r.2).abs() <= 0.10 * r.2.abs() + 1e-9, "{q}: {x:?} vs raw {r:?}");
            }
        }
        assert!(
            common * 100 >= raw.len() * 95,
            "{q}: only {common} of {} points",
            raw.len()
        );
    }
}

#[test]
fn rollups_are_built_invisible_exact_and_tiered() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, bucket) = (tmp.path().join("data"), tmp.path().join("bucket"));
    std::fs::create_dir_all(&bucket).unwrap();
    let store = Store::open(&dir, opts(&bucket)).unwrap();
    load(&store);
    let sql = |src: &dyn SeriesSource| {
        let q = QueryOptions {
            now_ns: now_ns(),
            ..QueryOptions::default()
        };
        [
            "SELECT count(*), sum(value) FROM samples",
            "SELECT tenant, sum(cost) FROM costs GROUP BY tenant ORDER BY tenant",
        ]
        .iter()
        .map(|s| execute(src, s, &q).unwrap().to_json().to_string())
        .collect::<Vec<_>>()
    };
    let labels_of = |src: &dyn SeriesSource| {
        let names = src.label_names(None, &[], i64::MIN, i64::MAX).unwrap();
        let m = [Matcher::new(tally::index::MatchOp::Regex, "__name__", ".+").unwrap()];
        let n = src
            .select(&SelectRequest {
                tenant: None,
                matchers: &m,
                start: i64::MIN,
                end: i64::MAX,
            })
            .unwrap()
            .count();
        (names, n)
    };
    let before = store.snapshot();
    let (sql_before, labels_before) = (sql(&before), labels_of(&before));
    drop(before);

    assert_eq!(store.downsample().unwrap(), 6, "3 old partitions × 2 resolutions");
    assert_eq!(store.downsample().unwrap(), 0, "up-to-date rollups are not rebuilt");
    let entries = rollup_entries(&dir);
    assert_eq!(entries.len(), 6);
    for res in [300_000_000_000i64, 3_600_000_000_000] {
        assert_eq!(entries.iter().filter(|e| e.resolution_ns == Some(res)).count(), 3);
    }
    assert!(entries.iter().all(|e| e.rollup_of.is_some()));

    let snap = store.snapshot();
    assert_eq!(sql(&snap), sql_before, "SQL must not see rollup series");
    let (names, n) = labels_of(&snap);
    assert_eq!(
        (names.clone(), n),
        labels_before,
        "label APIs must not see rollup series"
    );
    assert!(!names.iter().any(|x| x == "__rollup__"));
    assert!(snap
        .label_values(None, "__rollup__", &[], i64::MIN, i64::MAX)
        .unwrap()
        .is_empty());
    let stored_before = store.metrics().rollup_windows_stored.get();
    check_answers(&snap);
    assert!(
        store.metrics().rollup_windows_stored.get() > stored_before,
        "rolled-up queries must read the stored rollups"
    );
    drop(snap);

    // Late data into a downsampled partition: the rollup is stale and not used until rebuilt.
    let mut b = WriteBatch::new();
    b.add(
        labels(&[("__name__", "cost".into()), ("tenant", "t0".into())]),
        SeriesKind::MONEY,
        vec![Sample {
            ts: start() + 90 * MIN + 30_000_000_000,
            value: Value::Money(Money(1_750_000_000)),
        }],
    );
    store.append(&b).unwrap();
    check_answers(&store.snapshot());
    store.flush().unwrap();
    check_answers(&store.snapshot());
    store.compact_all().unwrap();
    assert_eq!(store.downsample().unwrap(), 2, "the changed partition is rebuilt");
    assert_eq!(rollup_entries(&dir).len(), 6);
    check_answers(&store.snapshot());

    // Restart: rollups are registered again from the manifest.
    store.close().unwrap();
    drop(store);
    let store = Store::open(&dir, opts(&bucket)).unwrap();
    check_answers(&store.snapshot());
    assert!(
        store.metrics().rollup_windows_stored.get() > 0,
        "rollups used after a restart"
    );

    // Tiering moves rollup segments too; answers stay the same.
    assert!(store.tier().unwrap() >= 9);
    let entries = rollup_entries(&dir);
    assert!(entries.iter().all(|e| e.tiered.is_some()), "{entries:?}");
    let snap = store.snapshot();
    check_answers(&snap);
}
