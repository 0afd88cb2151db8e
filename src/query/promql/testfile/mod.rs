//! A runner for Prometheus's PromQL test-file format (`promql/testdata/*.test`).
//!
//! Supported commands, as in Prometheus 2.42's `promql/test.go`:
//! * `load <interval>` followed by `series values…` lines; values use the expanding
//!   notation `a+bxN` / `a-bxN` / `axN` (N+1 values), `_` / `_xN` (omitted samples)
//!   and `stale` (the staleness marker); sample `i` is at `i * interval` from t=0;
//! * `clear` drops all loaded data;
//! * `eval instant at <duration> <expr>` / `eval_ordered …` / `eval_fail …`, followed
//!   by expected `series value` lines or a single scalar line.
//!
//! Blocks end at an empty (or comment) line. Values compare with Prometheus's relative
//! tolerance (1e-6); NaN equals NaN. Like Prometheus, every successful instant eval is
//! re-run as a range query over `[t-1m, t+1m]` step 1m and the point at `t` must match
//! as well (ordering is not checked in range mode). The runner is independent of the
//! storage: a loader closure turns the loaded series into a [`SeriesSource`].

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

mod syntax;

use syntax::parse_number;
pub use syntax::{parse_duration, parse_series};

use super::value::QueryValue;
use super::{instant_query, range_query, EngineOptions};
use crate::model::Labels;
use crate::store::SeriesSource;

/// Loaded test data: series with (ms, value) samples.
pub type TestData = Vec<(Labels, Vec<(i64, f64)>)>;

/// Turns loaded test data into something queries can read.
pub type Loader<'a> = dyn FnMut(TestData) -> Result<Box<dyn SeriesSource>, String> + 'a;

/// Outcome of one test file.
#[derive(Debug, Default, Clone)]
pub struct FileReport {
    pub passed: usize,
    pub failed: usize,
    pub failures: Vec<String>,
}

impl FileReport {
    /// `N passed, N failed` — the summary line format.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed, self.failed)
    }
}

/// Runs one test file; a file that cannot be read counts as one failure.
pub fn run_file(path: &Path, load: &mut Loader) -> FileReport {
    match std::fs::read_to_string(path) {
        Ok(s) => run_str(&path.display().to_string(), &s, load),
        Err(e) => FileReport {
            passed: 0,
            failed: 1,
            failures: vec![format!("{}: cannot read: {e}", path.display())],
        },
    }
}

struct Expected {
    /// Scalar expectation, or labelled values with their 1-based line order.
    scalar: Option<f64>,
    series: HashMap<Labels, (usize, f64)>,
}

struct Eval {
    line: usize,
    time_ms: i64,
    expr: String,
    fail: bool,
    ordered: bool,
    expected: Expected,
}

/// Runs test-file text; `name` prefixes failure messages.
pub fn run_str(name: &str, content: &str, load: &mut Loader) -> FileReport {
    let lines: Vec<String> = content
        .lines()
        .map(|l| {
            let t = l.trim();
            if t.starts_with('#') {
                String::new()
            } else {
                t.to_string()
            }
        })
        .collect();
    let mut report = FileReport::default();
    let mut data: Vec<(Labels, Vec<(i64, f64)>)> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut source: Option<Box<dyn SeriesSource>> = None;
    let fail = |report: &mut FileReport, line: usize, msg: String| {
        report.failed += 1;
        report.failures.push(format!("{name}:{line}: {msg}"));
    };
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].as_str();
        let lineno = i + 1;
        if line.is_empty() {
            i += 1;
            continue;
        }
        if line == "clear" {
            data.clear();
            index.clear();
            source = None;
            i += 1;
            continue;
        }
        if let Some(rest) = line.strip_prefix("load ") {
            let interval = match parse_duration(rest.trim()) {
                Ok(d) => d,
                Err(e) => {
                    fail(&mut report, lineno, format!("bad load interval: {e}"));
                    i = skip_block(&lines, i);
                    continue;
                }
            };
            i += 1;
            // Within one block a repeated series replaces its earlier definition
            // (Prometheus keys a load command's definitions by series).
            let mut block: Vec<(Labels, Vec<(i64, f64)>)> = Vec::new();
            while i < lines.len() && !lines[i].is_empty() {
                match parse_series(&lines[i]) {
                    Ok((labels, vals)) => {
                        let samples: Vec<(i64, f64)> = vals
                            .into_iter()
                            .enumerate()
                            .filter_map(|(j, v)| v.map(|v| (j as i64 * interval, v)))
                            .collect();
                        match block.iter_mut().find(|(l, _)| *l == labels) {
                            Some(d) => d.1 = samples,
                            None => block.push((labels, samples)),
                        }
                    }
                    Err(e) => fail(&mut report, i + 1, format!("bad series line {:?}: {e}", lines[i])),
                }
                i += 1;
            }
            for (labels, samples) in block {
                let n = data.len();
                let k = *index.entry(labels.clone()).or_insert(n);
                if k == n {
                    data.push((labels, Vec::new()));
                }
                data[k].1.extend(samples);
            }
            source = None;
            continue;
        }
        if line.starts_with("eval") {
            let ev = match parse_eval(&lines, i) {
                Ok(ev) => ev,
                Err(e) => {
                    fail(&mut report, lineno, e);
                    i = skip_block(&lines, i);
                    continue;
                }
            };
            i = skip_block(&lines, i);
            if source.is_none() {
                match load(data.clone()) {
                    Ok(s) => source = Some(s),
                    Err(e) => {
                        fail(&mut report, lineno, format!("loading data failed: {e}"));
                        continue;
                    }
                }
            }
            let Some(src) = source.as_deref() else {
                continue;
            };
            match run_eval(src, &ev) {
                Ok(()) => report.passed += 1,
                Err(e) => fail(&mut report, ev.line, format!("eval {:?}: {e}", ev.expr)),
            }
            continue;
        }
        fail(&mut report, lineno, format!("unknown command {line:?}"));
        i += 1;
    }
    report
}

/// Index of the first line after the block starting at `i`.
fn skip_block(lines: &[String], mut i: usize) -> usize {
    i += 1;
    while i < lines.len() && !lines[i].is_empty() {
        i += 1;
    }
    i
}

fn parse_eval(lines: &[String], i: usize) -> Result<Eval, String> {
    let line = &lines[i];
    let (kind, rest) = line.split_once(char::is_whitespace).ok_or("malformed eval")?;
    let (fail, ordered) = match kind {
        "eval" => (false, false),
        "eval_fail" => (true, false),
        "eval_ordered" => (false, true),
        _ => return Err(format!("unknown command {kind:?}")),
    };
    let rest = rest.trim_start();
    let rest = rest
        .strip_prefix("instant")
        .ok_or("only `instant` evals are supported")?
        .trim_start();
    let rest = rest.strip_prefix("at").ok_or("missing `at <time>`")?.trim_start();
    let (at, expr) = rest.split_once(char::is_whitespace).ok_or("missing expression")?;
    let time_ms = parse_duration(at)?;
    let mut expected = Expected {
        scalar: None,
        series: HashMap::new(),
    };
    let mut j = i + 1;
    let mut pos = 0;
    while j < lines.len() && !lines[j].is_empty() {
        let l = &lines[j];
        if let Some(v) = parse_number(l) {
            expected.scalar = Some(v);
        } else {
            let (labels, vals) = parse_series(l).map_err(|e| format!("line {}: {e}", j + 1))?;
            if vals.len() != 1 {
                return Err(format!("line {}: expected exactly one value", j + 1));
            }
            pos += 1;
            expected.series.insert(labels, (pos, vals[0].unwrap_or(f64::NAN)));
        }
        j += 1;
    }
    Ok(Eval {
        line: i + 1,
        time_ms,
        expr: expr.trim().to_string(),
        fail,
        ordered,
        expected,
    })
}

fn test_opts() -> EngineOptions {
    EngineOptions {
        timeout: Some(std::time::Duration::from_secs(60)),
        ..EngineOptions::default()
    }
}

fn run_eval(src: &dyn SeriesSource, ev: &Eval) -> Result<(), String> {
    let opts = test_opts();
    let res = instant_query(src, None, &ev.expr, ev.time_ms, &opts);
    if ev.fail {
        return match res {
            Ok(v) => Err(format!("expected error, got {}", v.type_name())),
            Err(_) => Ok(()),
        };
    }
    let res = res.map_err(|e| format!("unexpected error: {e}"))?;
    compare(&ev.expected, &res, ev.ordered)?;
    if matches!(res, QueryValue::Matrix(_) | QueryValue::String { .. }) {
        return Ok(());
    }
    // Range mode: the middle point of [t-1m, t+1m] must give the same answer. It runs
    // with series evaluated on several threads even for a handful of series (instant
    // mode above is sequential), so that both paths meet every expectation.
    let parallel = EngineOptions {
        threads: 3,
        min_series_per_thread: 1,
        ..opts
    };
    let range = range_query(
        src,
        None,
        &ev.expr,
        ev.time_ms - 60_000,
        ev.time_ms + 60_000,
        60_000,
        &parallel,
    )
    .map_err(|e| format!("range mode: unexpected error: {e}"))?;
    let QueryValue::Matrix(m) = range else {
        return Err("range mode: result is not a matrix".into());
    };
    let vec: Vec<super::VectorSample> = m
        .into_iter()
        .filter_map(|s| {
            s.points
                .iter()
                .find(|p| p.0 == ev.time_ms)
                .map(|p| super::VectorSample {
                    labels: s.labels.clone(),
                    t: p.0,
                    v: p.1,
                })
        })
        .collect();
    let as_value = if matches!(res, QueryValue::Scalar { .. }) {
        match vec.first() {
            Some(s) => QueryValue::Scalar { t: s.t, v: s.v },
            None => return Err("range mode: no scalar point at the evaluation time".into()),
        }
    } else {
        QueryValue::Vector(vec)
    };
    compare(&ev.expected, &as_value, false).map_err(|e| format!("range mode: {e}"))
}

fn compare(exp: &Expected, got: &QueryValue, ordered: bool) -> Result<(), String> {
    match got {
        QueryValue::Scalar { v, .. } => match exp.scalar {
            Some(e) if almost_equal(e, *v) => Ok(()),
            Some(e) => Err(format!("expected scalar {e} but got {v}")),
            None => Err(format!("expected a vector but got scalar {v}")),
        },
        QueryValue::Vector(vec) => {
            if exp.scalar.is_some() {
                return Err(format!("expected scalar but got vector of {} samples", vec.len()));
            }
            let mut seen = 0;
            for (pos, s) in vec.iter().enumerate() {
                let Some(&(epos, ev)) = exp.series.get(&s.labels) else {
                    return Err(format!("unexpected metric {} in result", s.labels));
                };
                if ordered && epos != pos + 1 {
                    return Err(format!(
                        "expected metric {} with {ev} at position {epos} but was at {}",
                        s.labels,
                        pos + 1
                    ));
                }
                if !almost_equal(ev, s.v) {
                    return Err(format!("expected {ev} for {} but got {}", s.labels, s.v));
                }
                seen += 1;
            }
            if seen != exp.series.len() {
                let mut missing = String::new();
                for l in exp.series.keys() {
                    if !vec.iter().any(|s| &s.labels == l) {
                        let _ = write!(missing, " {l}");
                    }
                }
                return Err(format!("expected metrics not found:{missing}"));
            }
            Ok(())
        }
        QueryValue::Matrix(_) => Err("received range result on instant evaluation".into()),
        QueryValue::String { s, .. } => Err(format!("received string result {s:?}")),
    }
}

/// Prometheus's test comparison: NaN equals NaN, else relative error below 1e-6.
pub fn almost_equal(a: f64, b: f64) -> bool {
    const EPSILON: f64 = 1e-6;
    let min_normal = f64::from_bits(0x0010_0000_0000_0000);
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || diff < min_normal {
        return diff < EPSILON * min_normal;
    }
    diff / (a.abs() + b.abs()) < EPSILON
}

/// Runs every `*.test` file in `dir` (sorted by name). Returns the per-file reports
/// (file name, report) and the total; a missing directory is an `Err`.
pub fn run_dir(dir: &Path, load: &mut Loader) -> Result<(Vec<(String, FileReport)>, FileReport), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<std::path::PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    let mut total = FileReport::default();
    let mut per_file = Vec::with_capacity(files.len());
    for f in &files {
        let r = run_file(f, load);
        total.passed += r.passed;
        total.failed += r.failed;
        total.failures.extend(r.failures.iter().cloned());
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        per_file.push((name, r));
    }
    Ok((per_file, total))
}
