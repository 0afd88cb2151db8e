//! Functions over range vectors, with Prometheus 2.42's exact formulas (rate
//! extrapolation, `irate`'s counter-reset rule, least-squares `deriv`, the 2.x
//! `holt_winters`, incremental means).

use std::cmp::Ordering;
use std::collections::HashSet;

use promql_parser::parser::Expr;

use super::histogram::quantile;
use super::window::{SlidingSum, WindowCursor};
use super::{absent_labels, arg};
use crate::model::Labels;
use crate::query::promql::engine::{dup_labelset, unparen, Ctx, Range, RangeSpec};
use crate::query::promql::rows::{OutLabels, Row, RowLabels, RowSink};
use crate::query::promql::value::{Elem, Val, Vector};
use crate::query::promql::PromError;

#[derive(Clone, Copy, PartialEq)]
enum F {
    Rate,
    Increase,
    Delta,
    Irate,
    Idelta,
    Deriv,
    PredictLinear,
    HoltWinters,
    Resets,
    Changes,
    Avg,
    Min,
    Max,
    Sum,
    Count,
    Last,
    Present,
    Quantile,
    Stddev,
    Stdvar,
}

fn lookup(name: &str) -> Option<F> {
    Some(match name {
        "rate" => F::Rate,
        "increase" => F::Increase,
        "delta" => F::Delta,
        "irate" => F::Irate,
        "idelta" => F::Idelta,
        "deriv" => F::Deriv,
        "predict_linear" => F::PredictLinear,
        "holt_winters" => F::HoltWinters,
        "resets" => F::Resets,
        "changes" => F::Changes,
        "avg_over_time" => F::Avg,
        "min_over_time" => F::Min,
        "max_over_time" => F::Max,
        "sum_over_time" => F::Sum,
        "count_over_time" => F::Count,
        "last_over_time" => F::Last,
        "present_over_time" => F::Present,
        "quantile_over_time" => F::Quantile,
        "stddev_over_time" => F::Stddev,
        "stdvar_over_time" => F::Stdvar,
        _ => return None,
    })
}

pub(super) fn is_range_fn(name: &str) -> bool {
    name == "absent_over_time" || lookup(name).is_some()
}

pub(super) fn eval(ctx: &Ctx, name: &str, args: &[&Expr], rng: &Range) -> Result<Val, PromError> {
    let mut steps: Vec<Vector> = vec![Vec::new(); rng.len()];
    stream(ctx, name, args, rng, &mut |labels, idx, vals| {
        let labels = labels.to_labels();
        for (&i, &v) in idx.iter().zip(vals) {
            steps[i].push(Elem {
                labels: labels.clone(),
                v,
            });
        }
        Ok(())
    })?;
    Ok(Val::Vector(steps))
}

/// Like [`eval`], but hands each series' output row to `sink` as soon as the series is
/// processed (series by series, see `rows.rs`), so a consumer such as an aggregation
/// never holds the whole per-series result.
pub(crate) fn stream(ctx: &Ctx, name: &str, args: &[&Expr], rng: &Range, sink: &mut RowSink) -> Result<(), PromError> {
    let n = rng.len();
    if name == "absent_over_time" {
        let a = arg(args, 0)?;
        let mut present = vec![false; n];
        ctx.for_each_range_series(a, rng, &mut |_, pts, spec| {
            for (i, p) in present.iter_mut().enumerate() {
                if !*p && !spec.window(pts, rng.t(i)).is_empty() {
                    *p = true;
                }
            }
            Ok(())
        })?;
        let labels = absent_labels(a);
        let idx: Vec<usize> = (0..n).filter(|&i| !present[i]).collect();
        if !idx.is_empty() {
            sink(RowLabels::kept(&labels), &idx, &vec![1.0; idx.len()])?;
        }
        return Ok(());
    }
    let f = lookup(name).ok_or_else(|| PromError::BadData(format!("unknown function {name}")))?;
    let mat_idx = if f == F::Quantile { 1 } else { 0 };
    let mut scalars: Vec<Vec<f64>> = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if i != mat_idx {
            scalars.push(ctx.eval_scalar(a, rng)?);
        }
    }
    let mat = unparen(arg(args, mat_idx)?);
    if scalars.is_empty() {
        if let Some(r) = crate::query::promql::rollup::try_stream(ctx, name, mat, rng, sink) {
            return r;
        }
    }
    // Dropping the metric name can make two series' labels equal only when the
    // selector reads more than one metric name; series of one name are unique already.
    let one_name = match mat {
        Expr::MatrixSelector(ms) => Ctx::selects_one_name(&ms.vs),
        _ => false,
    };
    let eval = SeriesEval {
        f,
        rng,
        scalars: &scalars,
    };
    let mut seen: HashSet<Labels, foldhash::fast::RandomState> = HashSet::default();
    let mut checked = |labels: RowLabels<'_>, idx: &[usize], vals: &[f64]| {
        sink(labels, idx, vals)?;
        if !idx.is_empty() && !one_name && !seen.insert(labels.to_labels()) {
            return Err(dup_labelset());
        }
        Ok(())
    };
    ctx.range_rows(
        mat,
        rng,
        &|labels, pts, spec, row| eval.series(labels, pts, spec, row),
        &mut checked,
    )
}

/// One range function over the evaluation steps of one series at a time.
struct SeriesEval<'e> {
    f: F,
    rng: &'e Range,
    /// Values of the scalar arguments, per step.
    scalars: &'e [Vec<f64>],
}

impl SeriesEval<'_> {
    fn sc(&self, k: usize, i: usize) -> f64 {
        self.scalars.get(k).and_then(|v| v.get(i)).copied().unwrap_or(f64::NAN)
    }

    /// Whether the value depends on the window's points only (not on the step time or
    /// per-step parameters): then a step whose window holds the same points as the
    /// previous step's has the same value, bit for bit, and is not computed again
    /// (at a step shorter than the sample interval, most steps see the same window).
    fn window_only(&self) -> bool {
        !matches!(
            self.f,
            F::Rate | F::Increase | F::Delta | F::PredictLinear | F::HoltWinters | F::Quantile
        )
    }

    /// Appends the series' value at each step where it has one to `row`; returns the
    /// output labels (to drop the metric name from, except for `last_over_time`), or
    /// `None` when no step has a value.
    fn series(
        &self,
        labels: &Labels,
        pts: &[(i64, f64)],
        spec: &RangeSpec,
        row: &mut Row,
    ) -> Result<OutLabels, PromError> {
        let f = self.f;
        let before = row.len();
        row.reserve(self.rng.len());
        let mut cursor = WindowCursor::default();
        let mut sliding = SlidingSum::default();
        let mut secs = RateSecs::default();
        let mut resets = ResetCursor::default();
        let reuse = self.window_only();
        let mut prev: Option<(usize, usize, f64)> = None;
        for i in 0..self.rng.len() {
            let t = self.rng.t(i);
            let end = spec.end_at(t);
            let start = end.saturating_sub(spec.range);
            let (lo, hi) = cursor.advance(pts, start, end);
            if lo >= hi {
                continue;
            }
            if reuse {
                if let Some((plo, phi, v)) = prev {
                    if (plo, phi) == (lo, hi) {
                        row.push(i, v);
                        continue;
                    }
                }
            }
            let w = &pts[lo..hi];
            let v = match f {
                F::Rate | F::Increase => {
                    let no_resets = !resets.any(pts, lo, hi);
                    extrapolated_rate_hinted(w, start, end, true, f == F::Rate, no_resets, &mut secs)
                }
                F::Delta => extrapolated_rate(w, start, end, false, false, &mut secs),
                F::Irate => instant_value(w, true),
                F::Idelta => instant_value(w, false),
                F::Deriv => (w.len() >= 2).then(|| linear_regression(w, w[0].0).0),
                F::PredictLinear => (w.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(w, t);
                    slope * self.sc(0, i) + intercept
                }),
                F::HoltWinters => holt_winters(w, self.sc(0, i), self.sc(1, i))?,
                F::Resets => Some(w.windows(2).filter(|p| p[1].1 < p[0].1).count() as f64),
                F::Changes => Some(
                    w.windows(2)
                        .filter(|p| p[1].1 != p[0].1 && !(p[1].1.is_nan() && p[0].1.is_nan()))
                        .count() as f64,
                ),
                F::Avg => Some(avg(w)),
                F::Min => Some(
                    w.iter()
                        .fold(w[0].1, |m, p| if p.1 < m || m.is_nan() { p.1 } else { m }),
                ),
                F::Max => Some(
                    w.iter()
                        .fold(w[0].1, |m, p| if p.1 > m || m.is_nan() { p.1 } else { m }),
                ),
                F::Sum => Some(sliding.sum(pts, lo, hi)),
                F::Count => Some(w.len() as f64),
                F::Last => Some(w[w.len() - 1].1),
                F::Present => Some(1.0),
                F::Quantile => {
                    let mut vals: Vec<f64> = w.iter().map(|p| p.1).collect();
                    Some(quantile(self.sc(0, i), &mut vals))
                }
                F::Stddev => Some(stdvar(w).sqrt()),
                F::Stdvar => Some(stdvar(w)),
            };
            match v {
                Some(v) => {
                    row.push(i, v);
                    prev = Some((lo, hi, v));
                }
                // Only the window-dependent functions without a value for too few
                // points get here; an equal window gives `None` again.
                None => prev = None,
            }
        }
        if row.len() == before {
            return Ok(None);
        }
        Ok(Some((labels.clone(), f != F::Last)))
    }
}

/// Finds whether a window holds a counter reset (a sample below its predecessor; never
/// with NaN) without scanning it at every step: `next` is the first reset at or after
/// the last asked window's `lo + 1`, and both only move forward, so a series costs one
/// pass. Windows must be asked for with non-decreasing `lo`.
#[derive(Default)]
struct ResetCursor {
    next: usize,
}

impl ResetCursor {
    /// Whether some `j` in `lo + 1 .. hi` has `pts[j].1 < pts[j - 1].1`.
    fn any(&mut self, pts: &[(i64, f64)], lo: usize, hi: usize) -> bool {
        if self.next <= lo {
            self.next = lo + 1;
            while self.next < pts.len() && pts[self.next].1.partial_cmp(&pts[self.next - 1].1) != Some(Ordering::Less) {
                self.next += 1;
            }
        }
        self.next < hi
    }
}

/// `rate`/`increase`/`delta`: the change over the samples in the window, extrapolated
/// towards the window's edges (by at most half a sample interval beyond the data, and
/// for counters never below zero), exactly as Prometheus 2.x.
pub(crate) fn extrapolated_rate(
    w: &[(i64, f64)],
    range_start: i64,
    range_end: i64,
    is_counter: bool,
    is_rate: bool,
    secs: &mut RateSecs,
) -> Option<f64> {
    extrapolated_rate_hinted(w, range_start, range_end, is_counter, is_rate, false, secs)
}

/// [`extrapolated_rate`], told by `no_resets` that no sample of `w` is below its
/// predecessor (then the counter-reset scan adds nothing, except `+ 0.0` for a
/// negative first sample, kept for bit-identity: it turns a `-0.0` change into `0.0`).
pub(crate) fn extrapolated_rate_hinted(
    w: &[(i64, f64)],
    range_start: i64,
    range_end: i64,
    is_counter: bool,
    is_rate: bool,
    no_resets: bool,
    secs: &mut RateSecs,
) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (first, last) = (w[0], w[w.len() - 1]);
    let mut result = last.1 - first.1;
    if is_counter && no_resets {
        if first.1 < 0.0 {
            result += 0.0;
        }
    } else if is_counter {
        let mut prev = 0.0;
        for p in w {
            if p.1 < prev {
                result += prev;
            }
            prev = p.1;
        }
    }
    let key = GeometryKey {
        to_start_ms: first.0 - range_start,
        to_end_ms: range_end - last.0,
        sampled_ms: last.0 - first.0,
        points: w.len(),
        range_ms: range_end - range_start,
        is_rate,
    };
    let g = secs.get(key);
    // The zero point of a counter can only shorten the extrapolation towards the
    // start: `to_zero < duration_to_start`. That needs a division per step unless
    // `first.1` is clearly large: if first / result >= 2 d / s (d = duration to start,
    // s = sampled), the rounded `to_zero` is at least 2 d (1 - u)^2 > d. The test below
    // implies that bound with a margin (1e-9) far above the rounding of `g.k` and of the
    // product, so skipping the division changes nothing.
    if is_counter
        && result > 0.0
        && first.1 >= 0.0
        && first.1.partial_cmp(&(result * g.k * (1.0 + 1e-9))) != Some(Ordering::Greater)
    {
        let to_zero = g.sampled * (first.1 / result);
        if to_zero < g.to_start {
            return Some(result * factor(to_zero, g.to_end, g.sampled, g.avg_between, g.range, is_rate));
        }
    }
    Some(result * g.factor)
}

/// Prometheus's extrapolation factor from the durations (s) to the window's start and
/// end, the sampled span, the average spacing and the range.
fn factor(to_start: f64, to_end: f64, sampled: f64, avg_between: f64, range: f64, is_rate: bool) -> f64 {
    let threshold = avg_between * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        avg_between / 2.0
    };
    interval += if to_end < threshold { to_end } else { avg_between / 2.0 };
    // One factor, as Prometheus >= 2.40 computes it (the order matters in the last ulp,
    // which decides ties in topk/bottomk).
    let f = interval / sampled;
    if is_rate {
        f / range
    } else {
        f
    }
}

/// What [`extrapolated_rate`]'s divisions depend on besides the sample values.
#[derive(Clone, Copy, Default, PartialEq)]
struct GeometryKey {
    to_start_ms: i64,
    to_end_ms: i64,
    sampled_ms: i64,
    points: usize,
    range_ms: i64,
    is_rate: bool,
}

/// The value-independent quantities of [`extrapolated_rate`] for one [`GeometryKey`].
#[derive(Clone, Copy, Default)]
struct Geometry {
    to_start: f64,
    to_end: f64,
    sampled: f64,
    avg_between: f64,
    range: f64,
    /// `2 * to_start / sampled`: the zero-point bound.
    k: f64,
    /// The factor when the zero point does not shorten the extrapolation.
    factor: f64,
}

impl Geometry {
    fn new(key: &GeometryKey) -> Geometry {
        let secs = |ms: i64| ms as f64 / 1000.0;
        let (to_start, to_end, sampled, range) = (
            secs(key.to_start_ms),
            secs(key.to_end_ms),
            secs(key.sampled_ms),
            secs(key.range_ms),
        );
        // `points >= 2` for every window that gets here.
        let avg_between = sampled / (key.points - 1) as f64;
        Geometry {
            to_start,
            to_end,
            sampled,
            avg_between,
            range,
            k: 2.0 * to_start / sampled,
            factor: factor(to_start, to_end, sampled, avg_between, range, key.is_rate),
        }
    }
}

/// How many recent geometries [`RateSecs`] keeps: a 15 s step over 60 s samples cycles
/// through 4 window alignments.
const RECENT: usize = 4;

/// The divisions of [`extrapolated_rate`] that depend only on sample spacing and window
/// geometry, remembered for the last [`RECENT`] geometries: with regularly spaced
/// samples they repeat step after step (cycling through a few alignments when the step
/// is shorter than the sample interval), and divisions are the slowest part of a rate.
/// A remembered geometry holds exactly what the divisions give (same operands, same
/// operations).
#[derive(Default)]
pub(crate) struct RateSecs {
    entries: [(GeometryKey, Geometry); RECENT],
    used: usize,
    next: usize,
    /// The entry that answered last: geometries recur in cycles, so the entry after
    /// it is tried first.
    last: usize,
}

impl RateSecs {
    #[inline]
    fn get(&mut self, key: GeometryKey) -> Geometry {
        let n = self.used;
        for k in 1..=n {
            let i = (self.last + k) % n;
            if self.entries[i].0 == key {
                self.last = i;
                return self.entries[i].1;
            }
        }
        let g = Geometry::new(&key);
        let i = self.next;
        self.entries[i] = (key, g);
        self.last = i;
        self.next = (i + 1) % RECENT;
        self.used = (self.used + 1).min(RECENT);
        g
    }
}

/// `irate`/`idelta`: from the last two samples only.
fn instant_value(w: &[(i64, f64)], is_rate: bool) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (prev, last) = (w[w.len() - 2], w[w.len() - 1]);
    let mut result = if is_rate && last.1 < prev.1 {
        last.1
    } else {
        last.1 - prev.1
    };
    let interval = last.0 - prev.0;
    if interval == 0 {
        return None;
    }
    if is_rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// Least-squares fit of value over time (seconds relative to `intercept_time`):
/// returns (slope, intercept). A constant series has slope 0 (NaN if infinite).
fn linear_regression(w: &[(i64, f64)], intercept_time: i64) -> (f64, f64) {
    let init = w[0].1;
    let const_y = w.iter().all(|p| p.1 == init);
    if const_y {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    let n = w.len() as f64;
    let (mut sx, mut sy, mut sxy, mut sx2) = (0.0, 0.0, 0.0, 0.0);
    let (mut cx, mut cy, mut cxy, mut cx2) = (0.0, 0.0, 0.0, 0.0);
    for p in w {
        let x = (p.0 - intercept_time) as f64 / 1000.0;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(p.1, sy, cy);
        (sxy, cxy) = kahan_inc(x * p.1, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

/// Prometheus 2.x `holt_winters` (double exponential smoothing).
fn holt_winters(w: &[(i64, f64)], sf: f64, tf: f64) -> Result<Option<f64>, PromError> {
    if sf.is_nan() || sf <= 0.0 || sf >= 1.0 {
        return Err(PromError::Execution(format!(
            "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}"
        )));
    }
    if tf.is_nan() || tf <= 0.0 || tf >= 1.0 {
        return Err(PromError::Execution(format!(
            "invalid trend factor. Expected: 0 < tf < 1, got: {tf}"
        )));
    }
    if w.len() < 2 {
        return Ok(None);
    }
    let mut s0 = 0.0;
    let mut s1 = w[0].1;
    let mut b = w[1].1 - w[0].1;
    for (i, p) in w.iter().enumerate().skip(1) {
        let x = sf * p.1;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Ok(Some(s1))
}

/// One Kahan–Neumaier step (Prometheus's `kahanSumInc`): returns (sum, compensation).
fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

pub(crate) fn kahan_sum(vals: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut c) = (0.0f64, 0.0f64);
    for v in vals {
        let t = sum + v;
        if t.is_infinite() {
            c = 0.0;
        } else if sum.abs() >= v.abs() {
            c += (sum - t) + v;
        } else {
            c += (v - t) + sum;
        }
        sum = t;
    }
    if sum.is_infinite() {
        sum
    } else {
        sum + c
    }
}

/// Incremental mean that avoids overflow and keeps an infinite mean stable.
fn avg(w: &[(i64, f64)]) -> f64 {
    let mut mean = 0.0f64;
    let mut count = 0.0;
    for p in w {
        count += 1.0;
        if mean.is_infinite() {
            if p.1.is_infinite() && (mean > 0.0) == (p.1 > 0.0) {
                continue;
            }
            if !p.1.is_infinite() && !p.1.is_nan() {
                continue;
            }
        }
        mean += p.1 / count - mean / count;
    }
    mean
}

/// Population variance (Welford).
fn stdvar(w: &[(i64, f64)]) -> f64 {
    let (mut count, mut mean, mut aux) = (0.0f64, 0.0f64, 0.0f64);
    for p in w {
        count += 1.0;
        let delta = p.1 - mean;
        mean += delta / count;
        aux += delta * (p.1 - mean);
    }
    aux / count
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prometheus 2.42's `extrapolatedRate`, written plainly (every division done).
    fn reference_rate(
        w: &[(i64, f64)],
        range_start: i64,
        range_end: i64,
        is_counter: bool,
        is_rate: bool,
    ) -> Option<f64> {
        if w.len() < 2 {
            return None;
        }
        let (first, last) = (w[0], w[w.len() - 1]);
        let mut result = last.1 - first.1;
        if is_counter {
            let mut prev = 0.0;
            for p in w {
                if p.1 < prev {
                    result += prev;
                }
                prev = p.1;
            }
        }
        let mut duration_to_start = (first.0 - range_start) as f64 / 1000.0;
        let duration_to_end = (range_end - last.0) as f64 / 1000.0;
        let sampled = (last.0 - first.0) as f64 / 1000.0;
        let avg_between = sampled / (w.len() - 1) as f64;
        if is_counter && result > 0.0 && first.1 >= 0.0 {
            let to_zero = sampled * (first.1 / result);
            if to_zero < duration_to_start {
                duration_to_start = to_zero;
            }
        }
        let threshold = avg_between * 1.1;
        let mut interval = sampled;
        interval += if duration_to_start < threshold {
            duration_to_start
        } else {
            avg_between / 2.0
        };
        interval += if duration_to_end < threshold {
            duration_to_end
        } else {
            avg_between / 2.0
        };
        let mut factor = interval / sampled;
        if is_rate {
            factor /= (range_end - range_start) as f64 / 1000.0;
        }
        Some(result * factor)
    }

    /// The memos of [`RateSecs`] shared across steps (windows cycling through a few
    /// alignments, jittered samples, counter resets, counters starting near zero so
    /// that the zero-point bound matters), the reset cursor's hint and the skipped
    /// zero-point division give bit for bit what the plain computation gives.
    #[test]
    fn remembered_divisions_are_bit_identical() {
        for shift in [0.0, 1e-3, 7.5, 1e6] {
            let pts: Vec<(i64, f64)> = (0..400i64)
                .map(|k| {
                    let t = k * 60_000 + if k % 17 == 0 { 1_234 } else { 0 };
                    let v = if k % 97 == 50 {
                        3.0
                    } else {
                        (k % 150) as f64 * 0.37 + shift
                    };
                    (t, v)
                })
                .collect();
            for (range, step) in [
                (300_000i64, 15_000i64),
                (300_000, 60_000),
                (3_600_000, 15_000),
                (120_000, 7_000),
            ] {
                for (counter, rate) in [(true, true), (true, false), (false, false)] {
                    let mut shared = RateSecs::default();
                    let mut cursor = WindowCursor::default();
                    let mut resets = ResetCursor::default();
                    let mut t = range;
                    while t <= 400 * 60_000 {
                        let (lo, hi) = cursor.advance(&pts, t - range, t);
                        let w = &pts[lo..hi];
                        let no_resets = lo >= hi || !resets.any(&pts, lo, hi);
                        let a = extrapolated_rate_hinted(w, t - range, t, counter, rate, no_resets, &mut shared);
                        let b = reference_rate(w, t - range, t, counter, rate);
                        assert_eq!(
                            a.map(f64::to_bits),
                            b.map(f64::to_bits),
                            "shift {shift} range {range} step {step} t {t}"
                        );
                        t += step;
                    }
                }
            }
        }
    }
}
