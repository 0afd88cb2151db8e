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

use super::value::{stale_nan, QueryValue};
use super::{instant_query, range_query, EngineOptions};
use crate::model::{Label, Labels, METRIC_NAME};
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
    // Range mode: the middle point of [t-1m, t+1m] must give the same answer.
    let range = range_query(
        src,
        None,
        &ev.expr,
        ev.time_ms - 60_000,
        ev.time_ms + 60_000,
        60_000,
        &opts,
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

/// Prometheus durations: `1h30m`, `5m`, `10s`, `100ms`, `2d`, `1w`, `1y`; a bare
/// number is not accepted. Returns milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let b = s.as_bytes();
    let mut i = 0;
    let mut total: i64 = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!("invalid duration {s:?}"));
        }
        let n: i64 = s[start..i].parse().map_err(|_| format!("invalid duration {s:?}"))?;
        let ustart = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = match &s[ustart..i] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            u => return Err(format!("invalid duration unit {u:?} in {s:?}")),
        };
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(|| format!("duration {s:?} out of range"))?;
    }
    Ok(total)
}

/// Go's `ParseFloat` plus integers in other bases (as `strconv.ParseInt(s, 0, 64)`).
fn parse_number(s: &str) -> Option<f64> {
    let lower = s.to_ascii_lowercase();
    let (neg, body) = match lower.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, lower.strip_prefix('+').unwrap_or(&lower)),
    };
    let v = match body {
        "inf" | "infinity" => f64::INFINITY,
        "nan" => f64::NAN,
        _ if body.starts_with("0x") => i64::from_str_radix(&body[2..], 16).ok()? as f64,
        _ => {
            if !body.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
                return None;
            }
            body.parse::<f64>().ok()?
        }
    };
    Some(if neg { -v } else { v })
}

/// Parses `metric{a="b"} v1 v2 …` into labels and values (`None` = omitted).
pub fn parse_series(line: &str) -> Result<(Labels, Vec<Option<f64>>), String> {
    let mut labels: Vec<Label> = Vec::new();
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
        i += 1;
    }
    if i > 0 {
        labels.push(Label {
            name: METRIC_NAME.into(),
            value: line[..i].to_string(),
        });
    }
    let rest = line[i..].trim_start();
    let rest = if let Some(body) = rest.strip_prefix('{') {
        let (ls, after) = parse_label_body(body)?;
        for (n, v) in ls {
            labels.retain(|l| l.name != n);
            labels.push(Label { name: n, value: v });
        }
        after
    } else {
        rest
    };
    if labels.is_empty() && i == 0 && !line.starts_with('{') {
        return Err("missing metric name or labels".into());
    }
    let mut vals = Vec::new();
    for tok in rest.split_whitespace() {
        expand_value(tok, &mut vals)?;
    }
    Ok((Labels::from_sorted_unchecked(labels), vals))
}

type LabelPairs = Vec<(String, String)>;

/// Parses `a="b", c='d'}` returning the pairs and the text after `}`.
fn parse_label_body(s: &str) -> Result<(LabelPairs, &str), String> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((out, r));
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("unterminated label set")?;
        let name = rest[..end].to_string();
        if name.is_empty() {
            return Err(format!("expected label name at {rest:?}"));
        }
        rest = rest[end..].trim_start();
        rest = rest.strip_prefix('=').ok_or("expected '='")?.trim_start();
        let (value, r) = parse_quoted(rest)?;
        out.push((name, value));
        rest = r.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        }
    }
}

/// A Go-style quoted string ("…", '…' with escapes, or `…` raw).
fn parse_quoted(s: &str) -> Result<(String, &str), String> {
    let mut chars = s.char_indices();
    let q = match chars.next() {
        Some((_, c)) if c == '"' || c == '\'' || c == '`' => c,
        _ => return Err(format!("expected quoted string at {s:?}")),
    };
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        if c == q {
            return Ok((out, &s[i + c.len_utf8()..]));
        }
        if c == '\\' && q != '`' {
            let (_, e) = chars.next().ok_or("unterminated escape")?;
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                '\'' => out.push('\''),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        } else {
            out.push(c);
        }
    }
    Err("unterminated string".into())
}

/// Expands one value token: `_`, `_xN`, `stale`, `v`, `vxN`, `v+dxN`, `v-dxN`.
fn expand_value(tok: &str, out: &mut Vec<Option<f64>>) -> Result<(), String> {
    if tok == "_" {
        out.push(None);
        return Ok(());
    }
    if tok == "stale" {
        out.push(Some(stale_nan()));
        return Ok(());
    }
    if let Some(n) = tok.strip_prefix("_x") {
        let n: usize = n.parse().map_err(|_| format!("bad repeat in {tok:?}"))?;
        out.extend(std::iter::repeat_n(None, n));
        return Ok(());
    }
    let (head, times) = match tok.rfind('x') {
        Some(p) if tok[p + 1..].bytes().all(|c| c.is_ascii_digit()) && p + 1 < tok.len() => {
            let n: u64 = tok[p + 1..].parse().map_err(|_| format!("bad repeat in {tok:?}"))?;
            (&tok[..p], Some(n))
        }
        _ => (tok, None),
    };
    let Some(times) = times else {
        let v = parse_number(head).ok_or_else(|| format!("bad value {tok:?}"))?;
        out.push(Some(v));
        return Ok(());
    };
    // Split `start±delta`: the sign must not be the leading one or an exponent's.
    let hb = head.as_bytes();
    let mut split = None;
    for k in 1..hb.len() {
        if (hb[k] == b'+' || hb[k] == b'-') && !matches!(hb[k - 1], b'e' | b'E') {
            split = Some(k);
            break;
        }
    }
    let (start, delta) = match split {
        Some(k) => (
            parse_number(&head[..k]).ok_or_else(|| format!("bad value {tok:?}"))?,
            parse_number(&head[k..]).ok_or_else(|| format!("bad value {tok:?}"))?,
        ),
        None => (parse_number(head).ok_or_else(|| format!("bad value {tok:?}"))?, 0.0),
    };
    if times > 1_000_000 {
        return Err(format!("repeat too large in {tok:?}"));
    }
    let mut v = start;
    for _ in 0..=times {
        out.push(Some(v));
        v += delta;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_values() {
        let (l, v) = parse_series(r#"m{a="b", c='d'} 0+10x2 1-1x1 _ _x2 stale 5x1"#).unwrap();
        assert_eq!(l.to_string(), r#"m{a="b", c="d"}"#);
        assert_eq!(v.len(), 3 + 2 + 1 + 2 + 1 + 2);
        assert_eq!(v[..5], [Some(0.0), Some(10.0), Some(20.0), Some(1.0), Some(0.0)]);
        assert!(v[5].is_none() && v[6].is_none() && v[7].is_none());
        assert!(super::super::value::is_stale(v[8].unwrap()));
        assert_eq!(v[9..], [Some(5.0), Some(5.0)]);
        let (l, v) = parse_series("{} 3").unwrap();
        assert!(l.is_empty());
        assert_eq!(v, [Some(3.0)]);
        assert_eq!(parse_duration("1h30m").unwrap(), 5_400_000);
        assert!(parse_number("+Inf").unwrap().is_infinite());
        assert!(parse_number("foo").is_none());
    }
}
