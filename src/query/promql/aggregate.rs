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

/// `topk`/`bottomk` of one group, reproducing Prometheus exactly, ties included: a
/// Go `container/heap` of at most `k` elements whose root is the weakest kept one (a
/// newcomer replaces it only if strictly better), then the heap sorted best-first with
/// the same comparison. Go sorts short slices (≤ 12) by insertion sort, which we mirror;
/// longer ones use a stable sort (ties may then be ordered differently; the *set*
/// selected is always identical).
fn select_k(top: bool, k: usize, elems: Vec<Elem>) -> Vec<Elem> {
    // Heap order: "less" = weaker; NaN is the weakest of all.
    let less = |a: f64, b: f64| a.is_nan() || if top { a < b } else { a > b };
    let mut h: Vec<Elem> = Vec::with_capacity(k.min(elems.len()));
    for e in elems {
        if h.len() < k {
            h.push(e);
            heap_up(&mut h, less);
        } else {
            let root = h[0].v;
            let better = if top { root < e.v } else { root > e.v };
            if better || (root.is_nan() && !e.v.is_nan()) {
                h[0] = e;
                if k > 1 {
                    heap_down(&mut h, less);
                }
            }
        }
    }
    // sort.Sort(sort.Reverse(heap)): element j goes before i when less(h[i], h[j]).
    if h.len() <= 12 {
        for i in 1..h.len() {
            let mut j = i;
            while j > 0 && less(h[j - 1].v, h[j].v) {
                h.swap(j, j - 1);
                j -= 1;
            }
        }
    } else {
        h.sort_by(|a, b| {
            if less(b.v, a.v) {
                std::cmp::Ordering::Less
            } else if less(a.v, b.v) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
    }
    h
}

/// Go's `heap.up` for the last element.
fn heap_up(h: &mut [Elem], less: impl Fn(f64, f64) -> bool) {
    let mut j = h.len() - 1;
    while j > 0 {
        let i = (j - 1) / 2;
        if !less(h[j].v, h[i].v) {
            break;
        }
        h.swap(i, j);
        j = i;
    }
}

/// Go's `heap.Fix(h, 0)` after replacing the root: sift down, else up (a no-op at 0).
fn heap_down(h: &mut [Elem], less: impl Fn(f64, f64) -> bool) {
    let n = h.len();
    let mut i = 0;
    loop {
        let j1 = 2 * i + 1;
        if j1 >= n {
            break;
        }
        let mut j = j1;
        if j1 + 1 < n && less(h[j1 + 1].v, h[j1].v) {
            j = j1 + 1;
        }
        if !less(h[j].v, h[i].v) {
            break;
        }
        h.swap(i, j);
        i = j;
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
                out.extend(select_k(op == Op::Topk, k, g.elems));
                continue;
            }
        };
        out.push(Elem { labels: g.labels, v });
    }
    Ok(out)
}
