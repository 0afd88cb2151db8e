//! The cache against the engine it caches: every answer, after any mix of appends
//! (in order, late, in the future), flushes and moving windows, equals evaluating the
//! whole range afresh.

use std::sync::atomic::Ordering;

use proptest::prelude::*;

use super::*;
use crate::model::{LabelLimits, Labels, Sample, SeriesKind, Value};
use crate::query::promql::range_query;
use crate::store::{SeriesTarget, Store, StoreOptions};

const SEC: i64 = 1_000;
const NS: i64 = 1_000_000;

fn reach(q: &str) -> Option<Reach> {
    Reach::of(&parse(q).unwrap(), &EngineOptions::default())
}

#[test]
fn reach_covers_lookback_ranges_offsets_and_subqueries() {
    let lb = 300 * SEC;
    assert_eq!(reach("1 + 2"), Some(Reach { behind: 0, ahead: 0 }));
    assert_eq!(reach("m"), Some(Reach { behind: lb, ahead: 0 }));
    assert_eq!(
        reach("rate(m[10m] offset 1m)"),
        Some(Reach {
            behind: 660 * SEC,
            ahead: 0
        })
    );
    assert_eq!(
        reach("m offset -2m"),
        Some(Reach {
            behind: lb - 120 * SEC,
            ahead: 120 * SEC
        })
    );
    assert_eq!(
        reach("max_over_time(rate(m[1m])[10m:1m] offset 1m)"),
        Some(Reach {
            behind: 720 * SEC,
            ahead: 0
        })
    );
    assert_eq!(
        reach("sum(m) + on() group_left topk(2, rate(n[1h]))"),
        Some(Reach {
            behind: 3600 * SEC,
            ahead: 0
        })
    );
    assert_eq!(reach("m @ 100"), None);
    assert_eq!(reach("rate(m[5m] @ end())"), None);
    assert_eq!(reach("sum(m) + max_over_time(m[5m:] @ start())"), None);
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        background: false,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), opts).unwrap();
    (dir, store)
}

fn append(store: &Store, tenant: &str, ts_ms: i64, v: f64) {
    let labels = Labels::from_pairs([("__name__", "m"), ("tenant", tenant)], &LabelLimits::default()).unwrap();
    let s = [Sample {
        ts: ts_ms * NS,
        value: Value::Float(v),
    }];
    store
        .append_series(&[(SeriesTarget::Labels(&labels), SeriesKind::GAUGE, &s)], &[])
        .unwrap();
}

const QUERIES: &[&str] = &[
    "sum by (tenant) (sum_over_time(m[1m]))",
    "rate(m[5m])",
    "m",
    "m offset -1m",
    "max_over_time(m[5m:1m])",
    "count(m)",
    "sum_over_time(m[2m] offset 3m)",
    "m @ 600",
    "time()",
];

/// Asks `cache` and the plain engine the same range query; they must agree exactly.
fn check(cache: &ResultCache, store: &Store, q: &str, start: i64, end: i64, step: i64) -> Result<(), TestCaseError> {
    let opts = EngineOptions::default();
    let cached = cache.range_query(store, None, q, start, end, step, &opts);
    let plain = range_query(&store.snapshot(), None, q, start, end, step, &opts);
    prop_assert_eq!(cached, plain, "{} over {}..={} step {}", q, start, end, step);
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    /// A sample at `minute * 60 s + second`.
    Append {
        tenant: u8,
        minute: i64,
        second: i64,
        v: i8,
    },
    Flush,
    /// Panel `panel` (a query of [`QUERIES`] on its own step grid) moves its window
    /// forward by `advance` steps and asks for `len` steps: a dashboard refreshing.
    Query {
        panel: usize,
        advance: i64,
        len: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..3, 0i64..90, 0i64..60, any::<i8>())
            .prop_map(|(tenant, minute, second, v)| Op::Append { tenant, minute, second, v }),
        1 => Just(Op::Flush),
        6 => (0..2 * QUERIES.len(), 0i64..4, 1i64..120)
            .prop_map(|(panel, advance, len)| Op::Query { panel, advance, len }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn cached_answers_equal_fresh_ones(ops in proptest::collection::vec(op(), 1..60)) {
        let (_dir, store) = open();
        let cache = ResultCache::new(1 << 20);
        let mut from = vec![0i64; 2 * QUERIES.len()];
        for op in ops {
            match op {
                Op::Append { tenant, minute, second, v } => {
                    let t = ["a", "b", "c"][tenant as usize];
                    append(&store, t, minute * 60 * SEC + second * SEC, f64::from(v));
                }
                Op::Flush => store.flush().unwrap(),
                Op::Query { panel, advance, len } => {
                    // Even panels step 15 s on a grid offset by 0 s, odd ones 60 s offset by 1 s.
                    let (step, phase) = if panel % 2 == 0 { (15 * SEC, 0) } else { (60 * SEC, SEC) };
                    from[panel] += advance * step;
                    let start = from[panel] + phase;
                    check(&cache, &store, QUERIES[panel / 2], start, start + len * step, step)?;
                }
            }
        }
    }
}

/// A live panel: data arrives each minute, the panel refreshes every 15 s over the
/// last 30 minutes. After the first request, each computes only the steps its new
/// data reaches; a late sample in the middle recomputes from there; a flush from
/// scratch. Every answer equals a fresh evaluation.
#[test]
fn a_refreshing_panel_reuses_steps_and_sees_late_data() {
    let (_dir, store) = open();
    let cache = ResultCache::new(1 << 20);
    let q = "sum by (tenant) (sum_over_time(m[1m]))";
    let step = 15 * SEC;
    for minute in 0..40 {
        for t in ["a", "b"] {
            append(&store, t, minute * 60 * SEC, 1.0 + minute as f64);
        }
    }
    let mut now = 40 * 60 * SEC;
    for refresh in 0..12 {
        if refresh % 4 == 0 {
            for t in ["a", "b"] {
                append(&store, t, now, 2.0);
            }
        }
        check(&cache, &store, q, now - 1800 * SEC, now, step).unwrap();
        now += step;
    }
    let s = &cache.stats;
    assert_eq!(s.misses.load(Ordering::Relaxed), 1);
    assert_eq!(s.partial.load(Ordering::Relaxed), 11);
    // 121 steps per request; a refresh re-evaluates the few steps new data reaches.
    let reused = s.steps_reused.load(Ordering::Relaxed);
    let evaluated = s.steps_evaluated.load(Ordering::Relaxed);
    assert!(reused > 11 * 100, "reused {reused}");
    assert!(evaluated < 121 + 11 * 10, "evaluated {evaluated}");

    // A late sample 20 minutes back changes the steps whose window holds it.
    append(&store, "a", now - 1200 * SEC, 1000.0);
    check(&cache, &store, q, now - 1800 * SEC, now, step).unwrap();
    let evaluated_late = s.steps_evaluated.load(Ordering::Relaxed) - evaluated;
    assert!(
        (80..=82).contains(&evaluated_late),
        "late data re-evaluated {evaluated_late} steps"
    );

    // Nothing new: a full hit.
    check(&cache, &store, q, now - 1800 * SEC, now, step).unwrap();
    assert_eq!(s.hits.load(Ordering::Relaxed), 1);

    // A flush edits the view: recomputed from scratch (and still equal).
    store.flush().unwrap();
    check(&cache, &store, q, now - 1800 * SEC, now, step).unwrap();
    assert_eq!(s.misses.load(Ordering::Relaxed), 2);
}

#[test]
fn at_modifier_queries_bypass_the_cache_and_budget_is_kept() {
    let (_dir, store) = open();
    for minute in 0..10 {
        append(&store, "a", minute * 60 * SEC, 1.0);
    }
    let cache = ResultCache::new(100);
    check(&cache, &store, "m @ 300", 0, 600 * SEC, 15 * SEC).unwrap();
    assert_eq!(cache.stats.uncacheable.load(Ordering::Relaxed), 1);
    assert_eq!(cache.points(), 0);
    // 41 points: more than a quarter of the budget, so not kept.
    check(&cache, &store, "m", 0, 600 * SEC, 15 * SEC).unwrap();
    assert_eq!(cache.points(), 0);
    // 5 points each: kept until the budget is spent, oldest evicted first.
    for i in 0..30 {
        check(&cache, &store, &format!("m + {i}"), 0, 60 * SEC, 15 * SEC).unwrap();
        assert!(cache.points() <= 100);
    }
    assert!(cache.points() >= 90, "{}", cache.points());
}

#[test]
fn entry_count_is_bounded_too() {
    let (_dir, store) = open();
    append(&store, "a", 0, 1.0);
    let cache = ResultCache::new(1 << 30);
    for i in 0..MAX_ENTRIES + 50 {
        check(&cache, &store, &format!("m + {i}"), 0, 0, 15 * SEC).unwrap();
    }
    assert_eq!(cache.state.lock().entries.len(), MAX_ENTRIES);
    // The most recent ones stayed.
    let before = cache.stats.hits.load(Ordering::Relaxed);
    check(&cache, &store, &format!("m + {}", MAX_ENTRIES + 49), 0, 0, 15 * SEC).unwrap();
    assert_eq!(cache.stats.hits.load(Ordering::Relaxed), before + 1);
}
