//! Function calls: dispatch by name to the family that implements them.
//!
//! * [`range`] — functions over range vectors (`rate`, `*_over_time`, …);
//! * [`math`] — element-wise math, clamping, rounding and calendar functions;
//! * [`labels`] — `label_replace`, `label_join`;
//! * [`histogram`] — `histogram_quantile` and the shared `quantile` helper.
//!
//! Everything else (`time`, `vector`, `scalar`, `absent`, `sort`, `timestamp`) is small
//! and lives here.

pub(crate) mod histogram;
mod labels;
mod math;
mod range;
mod rate;
mod window;

pub(crate) use rate::{extrapolated_rate, RatePlan, RateSecs};
pub(crate) use window::WindowMemo;

use promql_parser::parser::{Call, Expr};

use super::engine::{check_dups, unparen, Ctx, LabelMemo, Range};
use super::rows::RowSink;
use super::value::{Elem, Val, Vector};
use super::PromError;
use crate::index::MatchOp;
use crate::model::{Label, Labels, METRIC_NAME};

pub(crate) fn eval_call(ctx: &Ctx, c: &Call, rng: &Range) -> Result<Val, PromError> {
    let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
    let name = c.func.name;
    let n = rng.len();
    match name {
        "time" => Ok(Val::Scalar((0..n).map(|i| rng.t(i) as f64 / 1000.0).collect())),
        "pi" => Ok(Val::Scalar(vec![std::f64::consts::PI; n])),
        "vector" => {
            let s = ctx.eval_scalar(arg(&args, 0)?, rng)?;
            Ok(Val::Vector(
                s.into_iter()
                    .map(|v| {
                        vec![Elem {
                            labels: Labels::empty(),
                            v,
                        }]
                    })
                    .collect(),
            ))
        }
        "scalar" => {
            let steps = ctx.eval_vector(arg(&args, 0)?, rng)?;
            Ok(Val::Scalar(
                steps
                    .iter()
                    .map(|v| if v.len() == 1 { v[0].v } else { f64::NAN })
                    .collect(),
            ))
        }
        "timestamp" => timestamp(ctx, arg(&args, 0)?, rng),
        "absent" => {
            let a = arg(&args, 0)?;
            let steps = ctx.eval_vector(a, rng)?;
            let labels = absent_labels(a);
            Ok(Val::Vector(
                steps
                    .into_iter()
                    .map(|v| {
                        if v.is_empty() {
                            vec![Elem {
                                labels: labels.clone(),
                                v: 1.0,
                            }]
                        } else {
                            Vec::new()
                        }
                    })
                    .collect(),
            ))
        }
        "sort" | "sort_desc" => {
            let mut steps = ctx.eval_vector(arg(&args, 0)?, rng)?;
            let desc = name == "sort_desc";
            for v in &mut steps {
                // NaN sorts last either way, as in Prometheus 2.x.
                v.sort_by(|a, b| match (a.v.is_nan(), b.v.is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    _ if desc => b.v.total_cmp(&a.v),
                    _ => a.v.total_cmp(&b.v),
                });
            }
            Ok(Val::Vector(steps))
        }
        "label_replace" => labels::label_replace(ctx, &args, rng),
        "label_join" => labels::label_join(ctx, &args, rng),
        "histogram_quantile" => histogram::histogram_quantile(ctx, &args, rng),
        // Native histograms do not exist in tally: over float series these are empty.
        "histogram_count" | "histogram_sum" | "histogram_fraction" => {
            let _ = ctx.eval_vector(args.last().copied().ok_or_else(|| missing(name))?, rng)?;
            Ok(Val::Vector(vec![Vec::new(); n]))
        }
        _ if range::is_range_fn(name) => range::eval(ctx, name, &args, rng),
        _ => math::eval(ctx, name, &args, rng),
    }
}

/// Streams a call's output if it is a range-vector function (see [`range::stream`]);
/// `None` for other functions.
pub(crate) fn stream_range(ctx: &Ctx, c: &Call, rng: &Range, sink: &mut RowSink) -> Option<Result<(), PromError>> {
    if !range::is_range_fn(c.func.name) {
        return None;
    }
    let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
    Some(range::stream(ctx, c.func.name, &args, rng, sink))
}

fn missing(name: &str) -> PromError {
    PromError::BadData(format!("missing argument to {name}()"))
}

pub(super) fn arg<'e>(args: &[&'e Expr], i: usize) -> Result<&'e Expr, PromError> {
    args.get(i)
        .copied()
        .ok_or_else(|| PromError::BadData(format!("missing argument {}", i + 1)))
}

/// Evaluates a string-literal argument.
pub(super) fn string_arg(ctx: &Ctx, args: &[&Expr], i: usize, rng: &Range) -> Result<String, PromError> {
    match ctx.eval(arg(args, i)?, rng)? {
        Val::String(s) => Ok(s),
        other => Err(PromError::BadData(format!(
            "expected string argument, got {}",
            other.type_name()
        ))),
    }
}

/// Applies `f` to every element of every step, dropping the metric name; rejects
/// steps where that makes two elements identical.
pub(super) fn map_values(steps: Vec<Vector>, mut f: impl FnMut(usize, f64) -> Option<f64>) -> Result<Val, PromError> {
    let mut names = LabelMemo::new(Labels::without_metric_name);
    let mut out = Vec::with_capacity(steps.len());
    for (i, vec) in steps.into_iter().enumerate() {
        let mut o: Vector = Vec::with_capacity(vec.len());
        for e in vec {
            if let Some(v) = f(i, e.v) {
                o.push(Elem {
                    labels: names.get(&e.labels),
                    v,
                });
            }
        }
        check_dups(&o)?;
        out.push(o);
    }
    Ok(Val::Vector(out))
}

/// `timestamp(v)`: the sample's own timestamp for a plain selector (Prometheus
/// special-cases this), otherwise the evaluation time.
fn timestamp(ctx: &Ctx, a: &Expr, rng: &Range) -> Result<Val, PromError> {
    if let Expr::VectorSelector(vs) = unparen(a) {
        let mut steps: Vec<Vector> = vec![Vec::new(); rng.len()];
        ctx.select_instant(vs, rng, &mut |i, labels, t, _| {
            steps[i].push(Elem {
                labels: labels.without_metric_name(),
                v: t as f64 / 1000.0,
            });
            Ok(())
        })?;
        for v in &steps {
            check_dups(v)?;
        }
        return Ok(Val::Vector(steps));
    }
    let steps = ctx.eval_vector(a, rng)?;
    map_values(steps, |i, _| Some(rng.t(i) as f64 / 1000.0))
}

/// The labels `absent(x)` reports: the selector's equality matchers, minus names
/// that also appear in another matcher (whose value would be ambiguous).
pub(super) fn absent_labels(e: &Expr) -> Labels {
    let vs = match unparen(e) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::empty(),
    };
    let ms = match Ctx::matchers(vs) {
        Ok(m) => m,
        Err(_) => return Labels::empty(),
    };
    let mut set: Vec<Label> = Vec::new();
    let mut drop: Vec<&str> = Vec::new();
    for m in &ms {
        if m.name == METRIC_NAME {
            continue;
        }
        if m.op == MatchOp::Equal && !set.iter().any(|l| l.name == m.name) {
            set.push(Label {
                name: m.name.as_str().into(),
                value: m.value.as_str().into(),
            });
        } else {
            drop.push(&m.name);
        }
    }
    set.retain(|l| !drop.contains(&l.name.as_str()));
    Labels::from_sorted_unchecked(set)
}
