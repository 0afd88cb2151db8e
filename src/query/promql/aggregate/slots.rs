//! Accumulators of the aggregations that keep one number per group (`sum`, `avg`,
//! `count`, `group`, `min`, `max`, `stddev`, `stdvar`), laid out group-major: every
//! group owns one slot per evaluation step, addressed by its group id and the step
//! index. Range functions hand over all steps of one series in a row, so consecutive
//! samples land in consecutive slots of the same group: no hashing per sample and no
//! cache miss per sample (a step-major layout touched a different step's table, far
//! away in memory, for every sample).
//!
//! Output order within a step is the order in which groups first appeared in that
//! step, as in Prometheus: each slot records the arrival number of its first sample.

use super::{Group, Op, StepAcc};
use crate::model::Labels;
use crate::query::promql::rows::{step_count, steps, Run};
use crate::query::promql::value::{Elem, Vector};

#[derive(Clone, Copy, Default)]
struct Slot {
    value: f64,
    mean: f64,
    /// Samples added; 0 = the group has no sample at this step. For `sum` only
    /// whether it is 0 matters (nothing reads the number), and the run fast path of
    /// [`GroupSlots::add_runs`] leaves it at 1.
    count: u64,
    /// Arrival number of the first sample (orders groups within a step).
    first: u64,
}

/// Whether `op` keeps a single number per group (and can use [`GroupSlots`]).
pub(super) fn supports(op: Op) -> bool {
    matches!(
        op,
        Op::Sum | Op::Avg | Op::Count | Op::Group | Op::Min | Op::Max | Op::Stddev | Op::Stdvar
    )
}

/// Most slots (groups × steps) kept group-major, 32 bytes each. Every group that
/// appears gets a slot for every step, so many groups each present at few steps (series
/// churn over a long range) would cost far more than the per-step tables, which hold
/// only the groups present; past this budget the aggregation moves to those.
const MAX_SLOTS: usize = 1 << 22;

pub(super) struct GroupSlots {
    op: Op,
    steps: usize,
    /// `slots[gid][step]`, allocated when the group first appears.
    slots: Vec<Vec<Slot>>,
    /// Groups whose slots are allocated.
    allocated: usize,
    /// Per group, its steps without a sample yet: at 0, adding needs no first-sample
    /// check (see `add_runs`).
    missing: Vec<usize>,
    max_slots: usize,
    arrivals: u64,
}

impl GroupSlots {
    /// Accumulators for `op` (one [`supports`]) over `steps` evaluation steps.
    pub fn new(op: Op, steps: usize) -> GroupSlots {
        GroupSlots::with_budget(op, steps, MAX_SLOTS)
    }

    /// Like [`new`](Self::new) with a budget of `max_slots` instead of [`MAX_SLOTS`].
    pub fn with_budget(op: Op, steps: usize, max_slots: usize) -> GroupSlots {
        GroupSlots {
            op,
            steps,
            max_slots,
            slots: Vec::new(),
            allocated: 0,
            missing: Vec::new(),
            arrivals: 0,
        }
    }

    /// Whether a sample of group `gid` fits the slot budget (its slots exist or may
    /// be allocated).
    #[inline]
    pub fn fits(&self, gid: u32) -> bool {
        self.slots.get(gid as usize).is_some_and(|s| !s.is_empty())
            || (self.allocated + 1).saturating_mul(self.steps) <= self.max_slots
    }

    /// Moves the accumulated state into per-step tables (same values, same
    /// first-appearance order), for when [`fits`](Self::fits) says no.
    pub fn into_step_accs(self) -> Vec<StepAcc> {
        let mut accs: Vec<StepAcc> = (0..self.steps).map(|_| StepAcc::default()).collect();
        let mut present: Vec<(u64, usize)> = Vec::new();
        for (i, acc) in accs.iter_mut().enumerate() {
            present.clear();
            for (g, slots) in self.slots.iter().enumerate() {
                if let Some(s) = slots.get(i).filter(|s| s.count > 0) {
                    present.push((s.first, g));
                }
            }
            present.sort_unstable();
            for &(_, g) in &present {
                let s = &self.slots[g][i];
                acc.push_group(Group {
                    gid: g as u32,
                    value: s.value,
                    mean: s.mean,
                    count: s.count as usize,
                    elems: Vec::new(),
                    vals: Vec::new(),
                });
            }
        }
        accs
    }

    /// Allocates group `gid`'s slots, one per step, on its first sample.
    #[inline]
    fn ensure_group(&mut self, gid: u32) {
        let g = gid as usize;
        if g >= self.slots.len() {
            self.slots.resize_with(g + 1, Vec::new);
            self.missing.resize(g + 1, 0);
        }
        if self.slots[g].is_empty() {
            self.slots[g] = vec![Slot::default(); self.steps];
            self.missing[g] = self.steps;
            self.allocated += 1;
        }
    }

    /// Adds sample `v` of group `gid` at step `i` (`i < steps`), with the exact
    /// arithmetic of Prometheus 2.x's aggregation (incremental mean, Welford).
    #[inline]
    pub fn add(&mut self, gid: u32, i: usize, v: f64) {
        self.arrivals += 1;
        self.ensure_group(gid);
        let Some(s) = self.slots[gid as usize].get_mut(i) else {
            return;
        };
        if s.count == 0 {
            self.missing[gid as usize] -= 1;
            *s = Slot {
                value: if matches!(self.op, Op::Stddev | Op::Stdvar) {
                    0.0
                } else {
                    v
                },
                mean: v,
                count: 1,
                first: self.arrivals,
            };
            return;
        }
        s.count += 1;
        match self.op {
            Op::Sum => s.value += v,
            Op::Avg => {
                if s.mean.is_infinite() {
                    if v.is_infinite() && (s.mean > 0.0) == (v > 0.0) {
                        return;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        return;
                    }
                }
                let c = s.count as f64;
                s.mean += v / c - s.mean / c;
            }
            Op::Min if s.value > v || s.value.is_nan() => s.value = v,
            Op::Max if s.value < v || s.value.is_nan() => s.value = v,
            Op::Stddev | Op::Stdvar => {
                let delta = v - s.mean;
                s.mean += delta / s.count as f64;
                s.value += delta * (v - s.mean);
            }
            _ => {}
        }
    }

    /// Adds one series' row, given as runs of steps with one value (see `rows.rs`),
    /// exactly as [`add`](Self::add) of each step's value in turn would (same
    /// arithmetic, same arrival numbers). `sum`, the common case, runs a tight loop
    /// over the group's contiguous slots.
    pub fn add_runs(&mut self, gid: u32, runs: &[Run]) {
        match self.op {
            Op::Sum => {
                self.ensure_group(gid);
                let g = gid as usize;
                let slots = &mut self.slots[g];
                if self.missing[g] == 0 {
                    // Every step of the group has its first sample: plain additions
                    // (arrival numbers only matter for first samples).
                    self.arrivals += step_count(runs) as u64;
                    for r in runs {
                        let end = r.to.min(slots.len());
                        if let Some(run) = slots.get_mut(r.from..end) {
                            for s in run {
                                s.value += r.v;
                            }
                        }
                    }
                    return;
                }
                let missing = &mut self.missing[g];
                for r in runs {
                    // Step `r.from + k` is the `k + 1`-th arrival of this run.
                    let base = self.arrivals;
                    self.arrivals += (r.to - r.from) as u64;
                    let end = r.to.min(slots.len());
                    let Some(run) = slots.get_mut(r.from..end) else {
                        continue;
                    };
                    let v = r.v;
                    for (s, first) in run.iter_mut().zip(base + 1..) {
                        if s.count == 0 {
                            *missing -= 1;
                            *s = Slot {
                                value: v,
                                mean: v,
                                count: 1,
                                first,
                            };
                        } else {
                            s.count += 1;
                            s.value += v;
                        }
                    }
                }
            }
            _ => {
                for (i, v) in steps(runs) {
                    self.add(gid, i, v);
                }
            }
        }
    }

    /// The result vector of every step, groups in first-appearance order.
    pub fn finish(self, group_labels: &[Labels]) -> Vec<Vector> {
        let mut out = Vec::with_capacity(self.steps);
        let mut present: Vec<(u64, usize)> = Vec::new();
        // Groups are visited in the previous step's output order (then those absent
        // from it): consecutive steps mostly order their groups alike, and checking
        // that the visit came out sorted is cheaper than sorting every step. Arrival
        // numbers are unique, so the order does not depend on how it is found.
        let mut order: Vec<usize> = (0..self.slots.len()).collect();
        let mut next: Vec<usize> = Vec::with_capacity(order.len());
        let has = |g: usize, i: usize| self.slots[g].get(i).is_some_and(|s| s.count > 0);
        for i in 0..self.steps {
            present.clear();
            for &g in &order {
                if let Some(s) = self.slots[g].get(i).filter(|s| s.count > 0) {
                    present.push((s.first, g));
                }
            }
            if !present.windows(2).all(|w| w[0] < w[1]) {
                present.sort_unstable();
            }
            next.clear();
            next.extend(present.iter().map(|&(_, g)| g));
            next.extend(order.iter().copied().filter(|&g| !has(g, i)));
            std::mem::swap(&mut order, &mut next);
            let mut vec: Vector = Vec::with_capacity(present.len());
            for &(_, g) in &present {
                let s = &self.slots[g][i];
                let v = match self.op {
                    Op::Avg => s.mean,
                    Op::Count => s.count as f64,
                    Op::Group => 1.0,
                    Op::Stdvar => s.value / s.count as f64,
                    Op::Stddev => (s.value / s.count as f64).sqrt(),
                    _ => s.value,
                };
                let labels = group_labels.get(g).cloned().unwrap_or_else(Labels::empty);
                vec.push(Elem { labels, v });
            }
            out.push(vec);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LabelLimits;

    proptest::proptest! {
        /// `sum` over whole rows (runs, with the plain-addition path once a group has a
        /// sample at every step) equals adding each step's value in turn: same values
        /// bit for bit, same first-appearance order.
        #[test]
        fn sum_of_runs_equals_sum_of_steps(
            rows in proptest::collection::vec(
                (0u32..4, proptest::collection::vec((0usize..3, 1usize..4, -1e6f64..1e6), 0..8)),
                1..40,
            ),
        ) {
            let labels: Vec<Labels> = (0..4)
                .map(|g| Labels::from_pairs([("g", g.to_string())], &LabelLimits::default()).unwrap())
                .collect();
            let steps = 12;
            let mut by_runs = GroupSlots::new(Op::Sum, steps);
            let mut by_steps = GroupSlots::new(Op::Sum, steps);
            for (g, shape) in &rows {
                // Consecutive runs from (gap, len, value): increasing, not overlapping.
                let mut runs = Vec::new();
                let mut at = 0;
                for &(gap, len, v) in shape {
                    let from = at + gap;
                    let to = (from + len).min(steps);
                    if from >= to {
                        break;
                    }
                    runs.push(Run { from, to, v });
                    at = to;
                }
                by_runs.add_runs(*g, &runs);
                for (i, v) in steps_of_runs(&runs) {
                    by_steps.add(*g, i, v);
                }
            }
            let (a, b) = (by_runs.finish(&labels), by_steps.finish(&labels));
            let bits = |x: &Vec<Vector>| -> Vec<Vec<(Labels, u64)>> {
                x.iter().map(|v| v.iter().map(|e| (e.labels.clone(), e.v.to_bits())).collect()).collect()
            };
            proptest::prop_assert_eq!(bits(&a), bits(&b));
        }
    }

    fn steps_of_runs(runs: &[Run]) -> Vec<(usize, f64)> {
        steps(runs).collect()
    }

    /// Moving to per-step tables midway gives the same vectors, in the same order, as
    /// staying group-major throughout.
    #[test]
    fn switching_to_step_tables_keeps_values_and_order() {
        let labels: Vec<Labels> = (0..6)
            .map(|g| Labels::from_pairs([("g", g.to_string())], &LabelLimits::default()).unwrap())
            .collect();
        // (gid, step, value) in stream order: groups appear in a different order per step.
        let samples: Vec<(u32, usize, f64)> = (0..40)
            .map(|k| ((k * 7 % 6) as u32, (k * 5) % 4, (k as f64) * 1.5 - 20.0))
            .collect();
        for op in [
            Op::Sum,
            Op::Avg,
            Op::Count,
            Op::Min,
            Op::Max,
            Op::Stddev,
            Op::Stdvar,
            Op::Group,
        ] {
            let mut all = GroupSlots::new(op, 4);
            for &(g, i, v) in &samples {
                all.add(g, i, v);
            }
            let want = all.finish(&labels);
            let mut part = GroupSlots::with_budget(op, 4, 3 * 4);
            let mut accs: Option<Vec<StepAcc>> = None;
            for &(g, i, v) in &samples {
                match accs.as_mut() {
                    Some(a) => a[i].add(op, g, &labels[g as usize], v, 0),
                    None if part.fits(g) => part.add(g, i, v),
                    None => {
                        let mut a = std::mem::replace(&mut part, GroupSlots::new(op, 0)).into_step_accs();
                        a[i].add(op, g, &labels[g as usize], v, 0);
                        accs = Some(a);
                    }
                }
            }
            let accs = accs.expect("the budget of 3 groups is exceeded by 6 groups");
            let got: Vec<_> = accs.into_iter().map(|a| a.finish(op, f64::NAN, &labels)).collect();
            assert_eq!(got, want);
        }
    }
}
