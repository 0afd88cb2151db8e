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

use super::Op;
use crate::model::Labels;
use crate::query::promql::value::{Elem, Vector};

#[derive(Clone, Copy, Default)]
struct Slot {
    value: f64,
    mean: f64,
    /// Samples added; 0 = the group has no sample at this step.
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

pub(super) struct GroupSlots {
    op: Op,
    steps: usize,
    /// `slots[gid][step]`, allocated when the group first appears.
    slots: Vec<Vec<Slot>>,
    arrivals: u64,
}

impl GroupSlots {
    /// Accumulators for `op` (one [`supports`]) over `steps` evaluation steps.
    pub fn new(op: Op, steps: usize) -> GroupSlots {
        GroupSlots {
            op,
            steps,
            slots: Vec::new(),
            arrivals: 0,
        }
    }

    /// Adds sample `v` of group `gid` at step `i` (`i < steps`), with the exact
    /// arithmetic of Prometheus 2.x's aggregation (incremental mean, Welford).
    #[inline]
    pub fn add(&mut self, gid: u32, i: usize, v: f64) {
        let g = gid as usize;
        if g >= self.slots.len() {
            self.slots.resize_with(g + 1, Vec::new);
        }
        if self.slots[g].is_empty() {
            self.slots[g] = vec![Slot::default(); self.steps];
        }
        self.arrivals += 1;
        let Some(s) = self.slots[g].get_mut(i) else {
            return;
        };
        if s.count == 0 {
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

    /// The result vector of every step, groups in first-appearance order.
    pub fn finish(self, group_labels: &[Labels]) -> Vec<Vector> {
        let mut out = Vec::with_capacity(self.steps);
        let mut present: Vec<(u64, usize)> = Vec::new();
        for i in 0..self.steps {
            present.clear();
            for (g, slots) in self.slots.iter().enumerate() {
                if let Some(s) = slots.get(i).filter(|s| s.count > 0) {
                    present.push((s.first, g));
                }
            }
            present.sort_unstable();
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
