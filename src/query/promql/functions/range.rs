//! Functions over range vectors, with Prometheus 2.42's exact formulas (rate
//! extrapolation, `irate`'s counter-reset rule, least-squares `deriv`, the 2.x
//! `holt_winters`, incremental means).

use std::collections::HashSet;

use promql_parser::parser::Expr;

use super::histogram::quantile;
use super::rate::{change, extrapolated_rate, extrapolated_rate_hinted, RateSecs, ResetCursor};
use super::window::{LinearWindows, SlidingSum, Window, WindowCursor, WindowMemo};
use super::{absent_labels, arg};
use crate::model::Labels;
use crate::query::promql::engine::{dup_labelset, unparen, Ctx, Range, RangeSpec};
use crate::query::promql::rows::{steps as steps_of, FnMemo, OutLabels, Row, RowLabels, RowSink, Run};
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
    stream(ctx, name, args, rng, &mut |labels, runs| {
        let labels = labels.to_labels();
        for (i, v) in steps_of(runs) {
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
        let mut row = Row::default();
        for (i, _) in present.iter().enumerate().filter(|(_, p)| !**p) {
            row.push(i, 1.0);
        }
        if row.len() > 0 {
            sink(RowLabels::kept(&labels), &row.runs)?;
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
    let mut checked = |labels: RowLabels<'_>, runs: &[Run]| {
        sink(labels, runs)?;
        if !runs.is_empty() && !one_name && !seen.insert(labels.to_labels()) {
            return Err(dup_labelset());
        }
        Ok(())
    };
    ctx.range_rows(
        mat,
        rng,
        &|labels, pts, spec, memo, row| eval.series(labels, pts, spec, memo, row),
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
        memo: &mut FnMemo,
        row: &mut Row,
    ) -> Result<OutLabels, PromError> {
        let before = row.len();
        let runs = match self.f {
            F::Rate | F::Increase | F::Delta => self.rate_runs(pts, spec, memo, row),
            _ => self.window_only() && self.window_runs(pts, spec, &mut memo.windows, row),
        };
        if !runs {
            self.per_step(pts, spec, &mut memo.rate, row)?;
        }
        if row.len() == before {
            return Ok(None);
        }
        Ok(Some((labels.clone(), self.f != F::Last)))
    }

    /// A window-only function evaluated once per distinct window instead of once per
    /// step (see [`LinearWindows`]): the steps seeing the same points get their value
    /// as one run. Returns `false` (nothing appended) when the window ends are not
    /// linear. Gives exactly the per-step values: the same windows, asked in the same
    /// order.
    fn window_runs(&self, pts: &[(i64, f64)], spec: &RangeSpec, memo: &mut WindowMemo, row: &mut Row) -> bool {
        let Some(windows) = LinearWindows::new(spec, self.rng) else {
            return false;
        };
        let (windows, _) = windows.windows(pts, memo);
        // The common live-panel functions get a loop of their own: the value is then
        // inlined into the window walk instead of a call and a jump table per window.
        // Each closure computes exactly what `window_value` does for its function.
        match self.f {
            F::Sum => {
                let mut sliding = SlidingSum::default();
                each_window(windows, row, |lo, hi| Some(sliding.sum(pts, lo, hi)));
            }
            F::Count => each_window(windows, row, |lo, hi| Some((hi - lo) as f64)),
            F::Last => each_window(windows, row, |_, hi| Some(pts[hi - 1].1)),
            F::Present => each_window(windows, row, |_, _| Some(1.0)),
            F::Avg => each_window(windows, row, |lo, hi| Some(avg(&pts[lo..hi]))),
            _ => {
                let mut sliding = SlidingSum::default();
                each_window(windows, row, |lo, hi| self.window_value(pts, lo, hi, &mut sliding));
            }
        }
        true
    }

    /// `rate`, `increase` and `delta` per distinct window: the change over the points
    /// (and the counter-reset scan) once per window, the extrapolation to each step's
    /// window bounds per step. Bit-identical to [`extrapolated_rate_hinted`] per step.
    /// Returns `false` (nothing appended) when the window ends are not linear.
    fn rate_runs(&self, pts: &[(i64, f64)], spec: &RangeSpec, memo: &mut FnMemo, row: &mut Row) -> bool {
        let Some(windows) = LinearWindows::new(spec, self.rng) else {
            return false;
        };
        let is_counter = self.f != F::Delta;
        let is_rate = self.f == F::Rate;
        let mut resets = ResetCursor::default();
        let (windows, generation) = windows.windows(pts, &mut memo.windows);
        let plan = &mut memo.rate_plan;
        let n = self.rng.len();
        plan.prepare(
            generation,
            windows,
            pts,
            spec.range,
            self.rng.step,
            n,
            is_rate,
            &mut memo.rate,
        );
        for &Window { i, j, lo, hi, .. } in windows {
            if hi - lo < 2 {
                continue;
            }
            let w = &pts[lo..hi];
            let no_resets = is_counter && !resets.any(pts, lo, hi);
            let result = change(w, is_counter, no_resets);
            let first = w[0].1;
            for k in i..j {
                row.push(k, plan.extrapolate(k, result, first, is_counter, is_rate));
            }
        }
        true
    }

    /// The value over the non-empty window `pts[lo..hi]` of a function that depends
    /// on the window's points only (see [`Self::window_only`]); windows must be asked
    /// for in non-decreasing order (`sliding`).
    fn window_value(&self, pts: &[(i64, f64)], lo: usize, hi: usize, sliding: &mut SlidingSum) -> Option<f64> {
        let w = &pts[lo..hi];
        match self.f {
            F::Irate => instant_value(w, true),
            F::Idelta => instant_value(w, false),
            F::Deriv => (w.len() >= 2).then(|| linear_regression(w, w[0].0).0),
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
            F::Stddev => Some(stdvar(w).sqrt()),
            F::Stdvar => Some(stdvar(w)),
            // Step-dependent: computed in `per_step`, never asked here.
            F::Rate | F::Increase | F::Delta | F::PredictLinear | F::HoltWinters | F::Quantile => None,
        }
    }

    /// Every function, one step at a time.
    fn per_step(
        &self,
        pts: &[(i64, f64)],
        spec: &RangeSpec,
        secs: &mut RateSecs,
        row: &mut Row,
    ) -> Result<(), PromError> {
        let f = self.f;
        let mut cursor = WindowCursor::default();
        let mut sliding = SlidingSum::default();
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
                    extrapolated_rate_hinted(w, start, end, true, f == F::Rate, no_resets, secs)
                }
                F::Delta => extrapolated_rate(w, start, end, false, false, secs),
                F::PredictLinear => (w.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(w, t);
                    slope * self.sc(0, i) + intercept
                }),
                F::HoltWinters => holt_winters(w, self.sc(0, i), self.sc(1, i))?,
                F::Quantile => {
                    let mut vals: Vec<f64> = w.iter().map(|p| p.1).collect();
                    Some(quantile(self.sc(0, i), &mut vals))
                }
                _ => self.window_value(pts, lo, hi, &mut sliding),
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
        Ok(())
    }
}

/// Pushes `value(lo, hi)` for each distinct non-empty window of `windows` as one run.
#[inline(always)]
fn each_window(windows: &[Window], row: &mut Row, mut value: impl FnMut(usize, usize) -> Option<f64>) {
    for w in windows {
        if let Some(v) = value(w.lo, w.hi) {
            row.push_run(w.i, w.j, v);
        }
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
    use crate::query::promql::rows::steps;
    use proptest::prelude::*;

    const ALL: &[F] = &[
        F::Rate,
        F::Increase,
        F::Delta,
        F::Irate,
        F::Idelta,
        F::Deriv,
        F::Resets,
        F::Changes,
        F::Avg,
        F::Min,
        F::Max,
        F::Sum,
        F::Count,
        F::Last,
        F::Present,
        F::Stddev,
        F::Stdvar,
    ];

    /// Points with strictly increasing times on a grid of `unit` ms (so that window
    /// edges land exactly on points, as with aligned scrapes and steps), plus `jitter`
    /// ms on some; values with resets, negatives, NaN and ±Inf now and then.
    fn points(gaps: &[(u8, u8)], unit: i64, jitter: i64) -> Vec<(i64, f64)> {
        let mut t = -20 * unit;
        gaps.iter()
            .enumerate()
            .map(|(k, &(gap, x))| {
                t += i64::from(gap % 6 + 1) * unit;
                let j = if gap % 5 == 0 { jitter.min(unit - 1) } else { 0 };
                let v = match x {
                    0 => f64::NAN,
                    1 => f64::INFINITY,
                    2 => f64::NEG_INFINITY,
                    3..=20 => f64::from(x) - 12.5,
                    _ => k as f64 * 1.7 + f64::from(x) * 1e-3,
                };
                (t + j, v)
            })
            .collect()
    }

    /// A value's bits, with every NaN as one: the sign and payload of a NaN made by
    /// `inf - inf` depend on which operand order the compiler picked for a commutative
    /// addition, and PromQL shows every NaN as `NaN`.
    fn bits(v: f64) -> u64 {
        if v.is_nan() {
            f64::NAN.to_bits()
        } else {
            v.to_bits()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        /// Evaluating per distinct window (runs) gives bit for bit the per-step values,
        /// for every function the run paths take, whatever the step, range, offset
        /// and sample spacing.
        #[test]
        fn runs_equal_per_step(
            gaps in proptest::collection::vec((0u8..255, 0u8..60), 0..80),
            unit in prop_oneof![Just(1i64), Just(1_000), Just(15_000), Just(60_000)],
            jitter in 0i64..3_000,
            start in -40i64..40,
            len in 0i64..120,
            step in 1i64..8,
            range in 0i64..30,
            offset in -5i64..5,
        ) {
            let pts = points(&gaps, unit, jitter);
            // Everything on the grid: window edges meet points exactly.
            let (start, step, range, offset) = (start * unit, (step * unit / 4).max(1), range * unit, offset * unit);
            let rng = Range { start, end: start + len * step, step };
            let spec = RangeSpec { range, offset, at: None };
            for &f in ALL {
                let eval = SeriesEval { f, rng: &rng, scalars: &[] };
                let mut runs = Row::default();
                let mut memo = FnMemo::default();
                let out = eval.series(&Labels::empty(), &pts, &spec, &mut memo, &mut runs);
                prop_assert!(out.is_ok());
                let mut per = Row::default();
                prop_assert!(eval.per_step(&pts, &spec, &mut RateSecs::default(), &mut per).is_ok());
                let a: Vec<(usize, u64)> = steps(&runs.runs).map(|(i, v)| (i, bits(v))).collect();
                let b: Vec<(usize, u64)> = steps(&per.runs).map(|(i, v)| (i, bits(v))).collect();
                prop_assert_eq!(a, b);
            }
        }
    }
}
