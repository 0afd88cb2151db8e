//! Aggregation operators (`sum`, `avg`, …, `topk`, `quantile`, `count_values`) with
//! `by`/`without` grouping. Input is consumed as a stream of series rows (see
//! [`Ctx::stream_rows`]) into group accumulators, so `sum(rate(x[5m]))` holds one
//! value per group and step, not the per-series intermediate result. Group
//! output order is the order in which groups first appear, as in Prometheus.

mod keys;
mod slots;

use std::collections::HashMap;

use promql_parser::parser::token;
use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::engine::{Ctx, LabelMemo, Range};
use super::functions::histogram::quantile;
use super::rows::{step_count, steps as steps_of};
use super::value::{Elem, Val, Vector};
use super::PromError;
use crate::model::{Labels, METRIC_NAME};
use keys::GroupKeys;
use slots::GroupSlots;

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
    gid: u32,
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
    if op == Op::CountValues && !crate::model::is_label_name_syntax(&value_label) {
        return Err(PromError::Execution(format!("invalid label name {value_label:?}")));
    }
    let mut names_ref: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    if op == Op::CountValues && by {
        names_ref.push(&value_label);
    }
    if !by {
        names_ref.push(METRIC_NAME);
    }
    let n = rng.len();
    // topk/bottomk: validate k for every step first (Prometheus fails on any step).
    let mut ks = vec![0usize; n];
    if matches!(op, Op::Topk | Op::Bottomk) {
        for (i, k) in ks.iter_mut().enumerate() {
            let p = params.get(i).copied().unwrap_or(f64::NAN);
            if !(p <= i64::MAX as f64 && p >= i64::MIN as f64) {
                return Err(PromError::Execution(format!("Scalar value {p} overflows int64")));
            }
            *k = if (p as i64) < 1 { 0 } else { p as i64 as usize };
        }
    }
    // Group ids: each distinct grouping key is interned once; per series the id is
    // memoized, so the per-sample work is an integer lookup.
    let mut group_labels: Vec<Labels> = Vec::new();
    let mut interned: HashMap<Labels, u32, foldhash::fast::RandomState> = HashMap::default();
    let mut intern = |key: Labels| -> u32 {
        let n = group_labels.len() as u32;
        let id = *interned.entry(key.clone()).or_insert(n);
        if id == n {
            group_labels.push(key);
        }
        id
    };
    let mut dense = slots::supports(op).then(|| GroupSlots::new(op, n));
    let mut accs: Vec<StepAcc> = if dense.is_some() {
        Vec::new()
    } else {
        (0..n).map(|_| StepAcc::default()).collect()
    };
    {
        let mut gid = LabelMemo::new(|l: &Labels| intern(if by { l.only(&names_ref) } else { l.without(&names_ref) }));
        // Replayed expressions hand over one sample per row, each series at every step:
        // the memo computes its key once, and a one-entry cache in front of the memo
        // skips its hash lookup for consecutive rows of one series. The cached clone
        // keeps the allocation alive, so an equal address means the same labels.
        let mut last: Option<(Labels, u32)> = None;
        let mut seen = 0usize;
        let topk = matches!(op, Op::Topk | Op::Bottomk);
        // Rows may carry labels still holding the metric name that the row drops (see
        // `RowLabels`). Grouping keys never contain the name (`without` drops it, `by`
        // picks other labels) unless grouping `by (__name__)`; topk/bottomk keep element
        // labels and count_values extends them: only these build the actual labels.
        let needs_labels = topk || op == Op::CountValues || (by && names_ref.contains(&METRIC_NAME));
        let mut dropped = LabelMemo::new(Labels::without_metric_name);
        let mut keys = GroupKeys::new(by, &names_ref);
        ctx.stream_rows(&a.expr, rng, &mut |row, runs| {
            let steps = step_count(runs);
            let before = seen;
            seen += steps;
            if before / 65_536 != seen / 65_536 {
                ctx.check_deadline()?;
            }
            let owned;
            let labels = if needs_labels && row.drop_name {
                owned = dropped.get(row.labels);
                &owned
            } else {
                row.labels
            };
            if op == Op::CountValues {
                for (i, v) in steps_of(runs) {
                    // The value label differs per sample: nothing to memoize.
                    let g = gid.compute(&labels.with(&value_label, &format_value(v)));
                    add_one(&mut dense, &mut accs, op, g, i, labels, v, 0);
                }
                return Ok(());
            }
            let g = match &last {
                Some((l, g)) if std::ptr::eq(l.as_slice().as_ptr(), labels.as_slice().as_ptr()) => *g,
                // A row of several steps is a whole series, which no other row repeats,
                // and so is every row of a one-step evaluation (an instant query, or a
                // cached range query's newest step): memoizing its key would only cost
                // a label set and a map entry.
                _ if steps > 1 || n == 1 => keys.id(labels, |l| gid.compute(l)),
                _ => {
                    let g = gid.get(labels);
                    last = Some((labels.clone(), g));
                    g
                }
            };
            if let Some(d) = dense.as_mut() {
                if d.fits(g) {
                    d.add_runs(g, runs);
                    return Ok(());
                }
            }
            for (i, v) in steps_of(runs) {
                let k = ks.get(i).copied().unwrap_or(0);
                if topk && k == 0 {
                    continue;
                }
                add_one(&mut dense, &mut accs, op, g, i, labels, v, k);
            }
            Ok(())
        })?;
    }
    if let Some(d) = dense {
        return Ok(Val::Vector(d.finish(&group_labels)));
    }
    let mut out = Vec::with_capacity(n);
    for (i, acc) in accs.into_iter().enumerate() {
        let param = params.get(i).copied().unwrap_or(f64::NAN);
        out.push(acc.finish(op, param, &group_labels));
    }
    Ok(Val::Vector(out))
}

/// Adds one sample to the group-major slots while they fit the budget, else (moving
/// the slots' state there first) to the per-step tables.
#[allow(clippy::too_many_arguments)]
fn add_one(
    dense: &mut Option<GroupSlots>,
    accs: &mut Vec<StepAcc>,
    op: Op,
    g: u32,
    i: usize,
    labels: &Labels,
    v: f64,
    k: usize,
) {
    match dense.as_mut() {
        Some(d) if d.fits(g) => d.add(g, i, v),
        Some(_) => {
            if let Some(d) = dense.take() {
                *accs = d.into_step_accs();
            }
            if let Some(acc) = accs.get_mut(i) {
                acc.add(op, g, labels, v, k);
            }
        }
        None => {
            if let Some(acc) = accs.get_mut(i) {
                acc.add(op, g, labels, v, k);
            }
        }
    }
}

/// A multiplicative hasher for the small integer group ids (SipHash would dominate).
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The groups of one evaluation step, in first-appearance order.
#[derive(Default)]
struct StepAcc {
    index: HashMap<u32, u32, std::hash::BuildHasherDefault<IdHasher>>,
    groups: Vec<Group>,
}

impl StepAcc {
    /// Appends a group not yet present at this step.
    fn push_group(&mut self, g: Group) {
        self.index.insert(g.gid, self.groups.len() as u32);
        self.groups.push(g);
    }

    fn add(&mut self, op: Op, gid: u32, labels: &Labels, v: f64, k: usize) {
        let n = self.groups.len() as u32;
        let gi = *self.index.entry(gid).or_insert(n);
        if gi == n {
            let mut g = Group {
                gid,
                value: if matches!(op, Op::Stddev | Op::Stdvar) { 0.0 } else { v },
                mean: v,
                count: 1,
                elems: Vec::new(),
                vals: Vec::new(),
            };
            match op {
                Op::Topk | Op::Bottomk => g.elems.push(Elem {
                    labels: labels.clone(),
                    v,
                }),
                Op::Quantile => g.vals.push(v),
                _ => {}
            }
            self.groups.push(g);
            return;
        }
        let g = &mut self.groups[gi as usize];
        g.count += 1;
        match op {
            Op::Sum => g.value += v,
            Op::Avg => {
                if g.mean.is_infinite() {
                    if v.is_infinite() && (g.mean > 0.0) == (v > 0.0) {
                        return;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        return;
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
            Op::Topk | Op::Bottomk => heap_offer(&mut g.elems, op == Op::Topk, k, labels, v),
            Op::Quantile => g.vals.push(v),
        }
    }

    fn finish(self, op: Op, param: f64, group_labels: &[Labels]) -> Vector {
        let mut out = Vec::with_capacity(self.groups.len());
        for mut g in self.groups {
            let v = match op {
                Op::Sum | Op::Min | Op::Max => g.value,
                Op::Avg => g.mean,
                Op::Count | Op::CountValues => g.count as f64,
                Op::Group => 1.0,
                Op::Stdvar => g.value / g.count as f64,
                Op::Stddev => (g.value / g.count as f64).sqrt(),
                Op::Quantile => quantile(param, &mut g.vals),
                Op::Topk | Op::Bottomk => {
                    out.extend(heap_finish(g.elems, op == Op::Topk));
                    continue;
                }
            };
            let labels = group_labels.get(g.gid as usize).cloned().unwrap_or_else(Labels::empty);
            out.push(Elem { labels, v });
        }
        out
    }
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

/// Heap "less" for `topk`/`bottomk`: the weaker element; NaN is the weakest of all.
fn weaker(top: bool, a: f64, b: f64) -> bool {
    a.is_nan() || if top { a < b } else { a > b }
}

/// Offers a sample to a `topk`/`bottomk` group, reproducing Prometheus exactly, ties
/// included: a Go `container/heap` of at most `k` elements whose root is the weakest
/// kept one; a newcomer replaces the root only if strictly better.
fn heap_offer(h: &mut Vec<Elem>, top: bool, k: usize, labels: &Labels, v: f64) {
    let less = |a: f64, b: f64| weaker(top, a, b);
    if h.len() < k {
        h.push(Elem {
            labels: labels.clone(),
            v,
        });
        heap_up(h, less);
        return;
    }
    let root = h[0].v;
    let better = if top { root < v } else { root > v };
    if better || (root.is_nan() && !v.is_nan()) {
        h[0] = Elem {
            labels: labels.clone(),
            v,
        };
        if k > 1 {
            heap_down(h, less);
        }
    }
}

/// The heap sorted best-first with the same comparison (`sort.Sort(sort.Reverse(h))`).
/// Go sorts short slices (≤ 12) by insertion sort, which we mirror; longer ones use a
/// stable sort (ties may then be ordered differently; the *set* is always identical).
fn heap_finish(mut h: Vec<Elem>, top: bool) -> Vec<Elem> {
    let less = |a: f64, b: f64| weaker(top, a, b);
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
