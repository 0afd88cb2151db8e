//! Conformance against Prometheus's own test files, plus focused unit tests for the
//! semantics that are easy to get subtly wrong.

use std::path::PathBuf;

use super::memsource::MemSource;
use super::testfile::{run_file, run_str, FileReport, TestData};
use super::*;
use crate::model::Labels;

/// Conformance floor: total evals that must pass over `../shared/testdata/promql`.
const CONFORMANCE_FLOOR: usize = 456;

fn mem_loader(data: TestData) -> Result<Box<dyn SeriesSource>, String> {
    Ok(Box::new(MemSource::from_ms(data)))
}

#[test]
fn promql_conformance_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/promql");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("skipping: {} not found", dir.display());
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    let mut total = FileReport::default();
    for f in &files {
        let r = run_file(f, &mut mem_loader);
        println!(
            "{}: {}",
            f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            r.summary()
        );
        for fail in &r.failures {
            println!("  FAIL {fail}");
        }
        total.passed += r.passed;
        total.failed += r.failed;
    }
    println!("total: {}", total.summary());
    assert!(
        total.passed >= CONFORMANCE_FLOOR,
        "conformance regressed: {} passed < floor {CONFORMANCE_FLOOR}",
        total.passed
    );
}

fn check(src: &str) {
    let r = run_str("inline", src, &mut mem_loader);
    assert_eq!(r.failed, 0, "{:#?}", r.failures);
    assert!(r.passed > 0);
}

#[test]
fn promql_lookback_and_staleness() {
    check(
        "load 1m\n  m 1 2 _ _ _ _ _ _ 9 stale\n\n\
         eval instant at 2m m\n  m 2\n\n\
         eval instant at 6m m\n  m 2\n\n\
         eval instant at 7m m\n\n\
         eval instant at 8m m\n  m 9\n\n\
         eval instant at 9m m\n\n\
         eval instant at 9m count_over_time(m[10m])\n  {} 3\n",
    );
}

#[test]
fn promql_rate_extrapolation_and_closed_window() {
    // Samples every 1m: 0,60,...; a [2m] window at 4m holds the samples at 2m, 3m, 4m
    // (closed at the left end, as Prometheus 2.x).
    check(
        "load 1m\n  c 0+60x10\n\n\
         eval instant at 4m count_over_time(c[2m])\n  {} 3\n\n\
         eval instant at 4m rate(c[2m])\n  {} 1\n\n\
         eval instant at 4m30s increase(c[2m])\n  {} 120\n",
    );
}

#[test]
fn promql_group_left() {
    check(
        "load 1m\n  req{job=\"a\", inst=\"1\"} 10\n  req{job=\"a\", inst=\"2\"} 20\n  info{job=\"a\", team=\"x\"} 1\n\n\
         eval instant at 0m req * on(job) group_left(team) info\n  {job=\"a\", inst=\"1\", team=\"x\"} 10\n  {job=\"a\", inst=\"2\", team=\"x\"} 20\n\n\
         eval_fail instant at 0m req * on(job) info\n",
    );
}

#[test]
fn promql_errors_have_prometheus_types() {
    let src = MemSource::default();
    let o = EngineOptions::default();
    let e = instant_query(&src, None, "sum(", 0, &o).unwrap_err();
    assert_eq!(e.error_type(), "bad_data");
    let e = instant_query(&src, None, "double_exponential_smoothing(x[5m], 0.5, 0.5)", 0, &o).unwrap_err();
    assert_eq!(e.error_type(), "bad_data");
    assert!(instant_query(&src, None, "holt_winters(x[5m], 0.5, 0.5)", 0, &o).is_ok());
    let e = range_query(&src, None, "x[5m]", 0, 10, 1, &o).unwrap_err();
    assert_eq!(e.error_type(), "bad_data");
}

#[test]
fn promql_sample_limit_is_an_error() {
    let data = vec![(
        Labels::from_sorted_unchecked(vec![crate::model::Label {
            name: "__name__".into(),
            value: "m".into(),
        }]),
        (0..1000).map(|i| (i * 1000, i as f64)).collect(),
    )];
    let src = MemSource::from_ms(data);
    let o = EngineOptions {
        max_samples: 100,
        ..EngineOptions::default()
    };
    let e = instant_query(&src, None, "sum_over_time(m[1000s])", 999_000, &o).unwrap_err();
    assert_eq!(e.error_type(), "execution");
}
