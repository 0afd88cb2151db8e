//! Aggregation operators (`sum`, `avg`, …, `topk`, `quantile`, `count_values`) with
//! `by`/`without` grouping, one evaluation step at a time. Group output order is the
//! order in which groups first appear, as in Prometheus.

use std::collections::HashMap;

use promql_parser::parser::token;
use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::engine::{Ctx, LabelMemo, Range};
use super::functions::histogram::quantile;
use super::value::{Elem, Val, Vector};
use super::PromError;
use crate::model::{Labels, METRIC_NAME};

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Sum,
    Avg,
    Count,
    Group,
    Min,
    Max,
    Stddev,
    Stdvar,
    Topk,
    Bottomk,
    Quantile,
    CountValues,
}

struct Group {
    labels: Labels,
    value: f64,
    mean: f64,
    count: usize,
    elems: Vec<Elem>,
    vals: Vec<f64>,
}

pub(crate) fn eval(ctx: &Ctx, a: &AggregateExpr, rng: &Range) -> Result<Val, PromError> {
    let op = match a.op.id() {
        token::T_SUM => Op::Sum,
        token::T_AVG => Op::Avg,
        token::T_COUNT => Op::Count,
        token::T_GROUP => Op::Group,
        token::T_MIN => Op::Min,
        token::T_MAX => Op::Max,
        token::T_STDDEV => Op::Stddev,
        token::T_STDVAR => Op::Stdvar,
        token::T_TOPK => Op::Topk,
        token::T_BOTTOMK => Op::Bottomk,
        token::T_QUANTILE => Op::Quantile,
        token::T_COUNT_VALUES => Op::CountValues,
        _ => return Err(PromError::BadData(format!("unsupported aggregation {}", a.op))),
    };
    let (by, names): (bool, Vec<String>) = match &a.modifier {
        None => (true, Vec::new()),
        Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
        Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
    };
    let mut params: Vec<f64> = Vec::new();
    let mut value_label = String::new();
    if let Some(p) = &a.param {
        match op {
            Op::Topk | Op::Bottomk | Op::Quantile => params = ctx.eval_scalar(p, rng)?,
            Op::CountValues => match ctx.eval(p, rng)? {
                Val::String(s) => value_label = s,
                other => {
                    return Err(PromError::BadData(format!(
                        "expected string parameter for count_values, got {}",
                        other.type_name()
                    )))
                }
            },
            _ => {}
        }
    }
    if op == Op::CountValues && !valid_label_name(&value_label) {
        return Err(PromError::Execution(format!("invalid label name {value_label:?}")));
    }
    let mut names_ref: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    if op == Op::CountValues && by {
        names_ref.push(&value_label);
    }
    if !by {
        names_ref.push(METRIC_NAME);
    }
    let steps = ctx.eval_vector(&a.expr, rng)?;
    let mut keys = LabelMemo::new(|l: &Labels| if by { l.only(&names_ref) } else { l.without(&names_ref) });
    let mut out = Vec::with_capacity(steps.len());
    for (i, vec) in steps.into_iter().enumerate() {
        ctx.check_deadline()?;
        let param = params.get(i).copied().unwrap_or(f64::NAN);
        out.push(aggregate_step(op, param, &value_label, &mut keys, vec)?);
    }
    Ok(Val::Vector(out))
}

fn valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`.
pub(crate) fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn nan_last(a: f64, b: f64, desc: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Equal,
        (true, false) => Greater,
        (false, true) => Less,
        _ if desc => b.total_cmp(&a),
        _ => a.total_cmp(&b),
    }
}

fn aggregate_step(
    op: Op,
    param: f64,
    value_label: &str,
    keys: &mut LabelMemo<impl Fn(&Labels) -> Labels>,
    vec: Vector,
) -> Result<Vector, PromError> {
    let mut k = 0usize;
    if matches!(op, Op::Topk | Op::Bottomk) {
        if !(param <= i64::MAX as f64 && param >= i64::MIN as f64) {
            return Err(PromError::Execution(format!("Scalar value {param} overflows int64")));
        }
        let kk = param as i64;
        if kk < 1 {
            return Ok(Vec::new());
        }
        k = kk as usize;
    }
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for e in vec {
        let key = if op == Op::CountValues {
            // The value label is new per sample: no memo.
            (keys.f_ref())(&e.labels.with(value_label, &format_value(e.v)))
        } else {
            keys.get(&e.labels)
        };
        let n = groups.len();
        let gi = *index.entry(key.clone()).or_insert(n);
        if gi == n {
            groups.push(Group {
                labels: key,
                value: if matches!(op, Op::Stddev | Op::Stdvar) {
                    0.0
                } else {
                    e.v
                },
                mean: e.v,
                count: 1,
                elems: Vec::new(),
                vals: Vec::new(),
            });
            match op {
                Op::Topk | Op::Bottomk => groups[gi].elems.push(e),
                Op::Quantile => groups[gi].vals.push(e.v),
                _ => {}
            }
            continue;
        }
        let g = &mut groups[gi];
        g.count += 1;
        let v = e.v;
        match op {
            Op::Sum => g.value += v,
            Op::Avg => {
                if g.mean.is_infinite() {
                    if v.is_infinite() && (g.mean > 0.0) == (v > 0.0) {
                        continue;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        continue;
                    }
                }
                let c = g.count as f64;
                g.mean += v / c - g.mean / c;
            }
            Op::Count | Op::Group | Op::CountValues => {}
            Op::Min => {
                if g.value > v || g.value.is_nan() {
                    g.value = v
                }
            }
            Op::Max => {
                if g.value < v || g.value.is_nan() {
                    g.value = v
                }
            }
            Op::Stddev | Op::Stdvar => {
                let delta = v - g.mean;
                g.mean += delta / g.count as f64;
                g.value += delta * (v - g.mean);
            }
            Op::Topk | Op::Bottomk => g.elems.push(e),
            Op::Quantile => g.vals.push(v),
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for mut g in groups {
        let v = match op {
            Op::Sum | Op::Min | Op::Max => g.value,
            Op::Avg => g.mean,
            Op::Count | Op::CountValues => g.count as f64,
            Op::Group => 1.0,
            Op::Stdvar => g.value / g.count as f64,
            Op::Stddev => (g.value / g.count as f64).sqrt(),
            Op::Quantile => quantile(param, &mut g.vals),
            Op::Topk | Op::Bottomk => {
                let desc = op == Op::Topk;
                g.elems.sort_by(|a, b| nan_last(a.v, b.v, desc));
                g.elems.truncate(k);
                out.extend(g.elems);
                continue;
            }
        };
        out.push(Elem { labels: g.labels, v });
    }
    Ok(out)
}
