//! Range functions answered from rollups (see `store::rollup`) instead of raw samples.
//!
//! Used when the source offers rollups, [`EngineOptions::use_rollups`] is on, the
//! function is one of `sum/count/min/max/avg_over_time`, `rate`, `increase`, `delta`
//! over a plain matrix selector, and — for the coarsest resolution `res` that fits —
//! the step and the selector's range are multiples of `res` and every window ends on a
//! multiple of `res`. Then each step's closed window `[t - range, t]` is exactly the
//! windows starting in `[t - range, t)` plus the edge (first millisecond) of the window
//! starting at `t`, so sums, counts, minima and maxima equal the raw evaluation (money
//! sums are exact integers until the final conversion). `avg` is `sum / count`;
//! `rate`/`increase`/`delta` apply Prometheus's extrapolation to one point per window
//! (its last sample), which is the documented approximation. Anything else reads raw.
//!
//! [`EngineOptions::use_rollups`]: super::EngineOptions::use_rollups

use std::collections::HashSet;

use promql_parser::parser::Expr;

use super::engine::{dup_labelset, unparen, Ctx, Range, RangeSpec};
use super::functions::{extrapolated_rate, RateSecs};
use super::rows::{Row, RowLabels, RowSink};
use super::{PromError, NANOS_PER_MILLI};
use crate::model::Labels;
use crate::store::rollup::{counter_points, raw_to_f64, Stats, RESOLUTIONS};
use crate::store::{RollupSeries, SelectRequest};

/// `rate`/`increase`/`delta` see one point per window; with at least 4 windows at most
/// about a quarter of the range is filled in by extrapolation.
const MIN_RATE_WINDOWS: i64 = 4;

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Sum,
    Count,
    Min,
    Max,
    Avg,
    Rate,
    Increase,
    Delta,
}

fn op_of(name: &str) -> Option<Op> {
    Some(match name {
        "sum_over_time" => Op::Sum,
        "count_over_time" => Op::Count,
        "min_over_time" => Op::Min,
        "max_over_time" => Op::Max,
        "avg_over_time" => Op::Avg,
        "rate" => Op::Rate,
        "increase" => Op::Increase,
        "delta" => Op::Delta,
        _ => return None,
    })
}

/// The coarsest resolution (ms) whose windows tile every step's range exactly; rate-like
/// functions also need at least [`MIN_RATE_WINDOWS`] windows per range.
fn resolution_for(op: Op, spec: &RangeSpec, rng: &Range) -> Option<i64> {
    let min_windows = match op {
        Op::Rate | Op::Increase | Op::Delta => MIN_RATE_WINDOWS,
        _ => 1,
    };
    RESOLUTIONS.iter().rev().map(|r| r / NANOS_PER_MILLI).find(|&r| {
        spec.range >= r.saturating_mul(min_windows)
            && spec.range % r == 0
            && rng.step >= r
            && rng.step % r == 0
            && spec.end_at(rng.start).rem_euclid(r) == 0
    })
}

/// Evaluates `name(mat)` from rollups when it qualifies; `None` means "read raw".
pub(crate) fn try_stream(
    ctx: &Ctx,
    name: &str,
    mat: &Expr,
    rng: &Range,
    sink: &mut RowSink,
) -> Option<Result<(), PromError>> {
    if !ctx.opts.use_rollups || rng.len() < 2 {
        return None;
    }
    let op = op_of(name)?;
    let Expr::MatrixSelector(ms) = unparen(mat) else {
        return None;
    };
    let spec = ctx.matrix_spec(ms);
    let res_ms = resolution_for(op, &spec, rng)?;
    let matchers = match Ctx::matchers(&ms.vs) {
        Ok(m) => m,
        Err(e) => return Some(Err(e)),
    };
    let first = spec.end_at(rng.start).saturating_sub(spec.range);
    let last = spec.end_at(rng.end);
    let req = SelectRequest {
        tenant: ctx.tenant,
        matchers: &matchers,
        start: first.saturating_mul(NANOS_PER_MILLI),
        end: last.saturating_mul(NANOS_PER_MILLI),
    };
    match ctx.src.select_rollups(&req, res_ms * NANOS_PER_MILLI) {
        Ok(Some(series)) => Some(emit(ctx, op, &series, &spec, rng, sink)),
        Ok(None) => None,
        Err(e) => Some(Err(PromError::Storage(e.to_string()))),
    }
}

fn emit(
    ctx: &Ctx,
    op: Op,
    series: &[RollupSeries],
    spec: &RangeSpec,
    rng: &Range,
    sink: &mut RowSink,
) -> Result<(), PromError> {
    let mut seen: HashSet<Labels> = HashSet::new();
    for s in series {
        ctx.check_deadline()?;
        ctx.add_samples(s.windows.len())?;
        let vk = s.kind.value;
        let labels = s.labels.without_metric_name();
        let starts: Vec<i64> = s.windows.iter().map(|w| w.start.div_euclid(NANOS_PER_MILLI)).collect();
        let points: Vec<(i64, f64)> = match op {
            Op::Rate | Op::Increase => counter_points(vk, &s.windows),
            Op::Delta => s.windows.iter().map(|w| (w.last_ts, raw_to_f64(vk, w.last))).collect(),
            _ => Vec::new(),
        }
        .into_iter()
        .map(|(t, v)| (t.div_euclid(NANOS_PER_MILLI), v))
        .collect();
        let mut row = Row::default();
        let mut secs = RateSecs::default();
        for i in 0..rng.len() {
            let end = spec.end_at(rng.t(i));
            let start = end.saturating_sub(spec.range);
            let lo = starts.partition_point(|&x| x < start);
            let hi = starts.partition_point(|&x| x < end);
            let v = match op {
                Op::Rate | Op::Increase | Op::Delta => {
                    extrapolated_rate(&points[lo..hi], start, end, op != Op::Delta, op == Op::Rate, &mut secs)
                }
                _ => {
                    let edge = (starts.get(hi) == Some(&end)).then(|| s.windows[hi].edge).flatten();
                    let mut acc: Option<Stats> = None;
                    for st in s.windows[lo..hi].iter().map(|w| &w.stats).chain(edge.as_ref()) {
                        match &mut acc {
                            Some(a) => a.merge(vk, st),
                            None => acc = Some(*st),
                        }
                    }
                    acc.map(|a| match op {
                        Op::Sum => a.sum.to_f64(),
                        Op::Count => a.count as f64,
                        Op::Min => raw_to_f64(vk, a.min),
                        Op::Max => raw_to_f64(vk, a.max),
                        _ => a.sum.to_f64() / a.count as f64,
                    })
                }
            };
            if let Some(v) = v {
                row.push(i, v);
            }
        }
        if row.len() == 0 {
            continue;
        }
        sink(RowLabels::kept(&labels), &row.runs)?;
        if !seen.insert(labels) {
            return Err(dup_labelset());
        }
    }
    Ok(())
}
