//! `histogram_quantile` over classic (`le`-labelled) bucket series, and the
//! interpolating `quantile` shared with `quantile_over_time` and the `quantile`
//! aggregation. Both follow Prometheus 2.42 (`bucketQuantile`, `quantile`).

use std::collections::HashMap;

use promql_parser::parser::Expr;

use super::arg;
use crate::model::{Labels, METRIC_NAME};
use crate::query::promql::engine::{Ctx, Range};
use crate::query::promql::value::{Elem, Val, Vector};
use crate::query::promql::PromError;

/// φ-quantile of `vals` (sorted in place) with linear interpolation between ranks.
pub(crate) fn quantile(q: f64, vals: &mut [f64]) -> f64 {
    if vals.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // NaN sorts first, as Prometheus's `vectorByValueHeap`.
    vals.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.total_cmp(b),
    });
    let n = vals.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    vals[lower as usize] * (1.0 - weight) + vals[upper as usize] * weight
}

/// Quantile from cumulative buckets `(upper_bound, count)`.
fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    match buckets.last() {
        Some(b) if b.0 == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    // Coalesce buckets with the same bound.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(ub, c) in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => merged.push((ub, c)),
        }
    }
    // Force monotonic counts (buckets scraped at slightly different times).
    let mut max = f64::NEG_INFINITY;
    for b in merged.iter_mut() {
        if b.1 > max {
            max = b.1;
        } else if b.1 < max {
            b.1 = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = merged[..merged.len() - 1].partition_point(|x| x.1 < rank);
    if b == merged.len() - 1 {
        return merged[merged.len() - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let mut start = 0.0;
    let end = merged[b].0;
    let mut count = merged[b].1;
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

pub(super) fn histogram_quantile(ctx: &Ctx, args: &[&Expr], rng: &Range) -> Result<Val, PromError> {
    let qs = ctx.eval_scalar(arg(args, 0)?, rng)?;
    let steps = ctx.eval_vector(arg(args, 1)?, rng)?;
    let mut out = Vec::with_capacity(steps.len());
    for (i, vec) in steps.into_iter().enumerate() {
        let mut groups: HashMap<Labels, usize> = HashMap::new();
        let mut data: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
        for e in vec {
            let Some(ub) = e.labels.get("le").and_then(parse_le) else {
                continue;
            };
            let key = e.labels.without(&[METRIC_NAME, "le"]);
            let n = data.len();
            let k = *groups.entry(key.clone()).or_insert(n);
            if k == n {
                data.push((key, Vec::new()));
            }
            data[k].1.push((ub, e.v));
        }
        let o: Vector = data
            .into_iter()
            .map(|(labels, mut b)| Elem {
                labels,
                v: bucket_quantile(qs[i], &mut b),
            })
            .collect();
        out.push(o);
    }
    Ok(Val::Vector(out))
}

/// Parses an `le` value the way Go's `strconv.ParseFloat` accepts it.
fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => s.trim().parse::<f64>().ok(),
    }
}
