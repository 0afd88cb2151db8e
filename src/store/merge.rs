//! Merging sample runs of one series from several sources (segments by rank, frozen
//! heads, the live head), resolving equal timestamps by the series' duplicate policy.

use crate::model::sample::combine;
use crate::model::SeriesKind;

/// A sorted, timestamp-unique run of samples from one source.
#[derive(Debug, Default, Clone)]
pub(crate) struct Run {
    pub ts: Vec<i64>,
    pub vals: Vec<u64>,
}

/// Merges runs given in precedence order (older appends first) into one sorted, unique run.
pub(crate) fn merge_runs(kind: SeriesKind, mut runs: Vec<Run>) -> Run {
    runs.retain(|r| !r.ts.is_empty());
    match runs.len() {
        0 => return Run::default(),
        1 => return runs.pop().unwrap_or_default(),
        _ => {}
    }
    // Common case: runs cover disjoint time ranges (different partitions) — concatenate.
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by_key(|&i| runs[i].ts[0]);
    let disjoint = order
        .windows(2)
        .all(|w| runs[w[0]].ts[runs[w[0]].ts.len() - 1] < runs[w[1]].ts[0]);
    if disjoint {
        let total = runs.iter().map(|r| r.ts.len()).sum();
        let mut out = Run {
            ts: Vec::with_capacity(total),
            vals: Vec::with_capacity(total),
        };
        for i in order {
            out.ts.extend_from_slice(&runs[i].ts);
            out.vals.extend_from_slice(&runs[i].vals);
        }
        return out;
    }
    // General case: sort (ts, precedence) and fold equal timestamps in precedence order.
    let mut all: Vec<(i64, usize, u64)> = Vec::with_capacity(runs.iter().map(|r| r.ts.len()).sum());
    for (p, r) in runs.iter().enumerate() {
        all.extend(r.ts.iter().zip(&r.vals).map(|(&t, &v)| (t, p, v)));
    }
    all.sort_unstable_by_key(|&(t, p, _)| (t, p));
    let mut out = Run {
        ts: Vec::with_capacity(all.len()),
        vals: Vec::with_capacity(all.len()),
    };
    for (t, _, v) in all {
        if out.ts.last() == Some(&t) {
            let last = out.vals.len() - 1;
            out.vals[last] = combine(kind, out.vals[last], v);
        } else {
            out.ts.push(t);
            out.vals.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &[(i64, u64)]) -> Run {
        Run {
            ts: s.iter().map(|x| x.0).collect(),
            vals: s.iter().map(|x| x.1).collect(),
        }
    }

    #[test]
    fn later_precedence_wins_or_sums() {
        let a = run(&[(1, 10), (2, 20)]);
        let b = run(&[(2, 5), (3, 30)]);
        let r = merge_runs(SeriesKind::GAUGE, vec![a.clone(), b.clone()]);
        assert_eq!(r.ts, [1, 2, 3]);
        assert_eq!(r.vals, [10, 5, 30]);
        let r = merge_runs(SeriesKind::MONEY, vec![a, b]);
        assert_eq!(r.vals, [10, 25, 30]);
    }

    #[test]
    fn disjoint_runs_concatenate_in_time_order() {
        let r = merge_runs(SeriesKind::GAUGE, vec![run(&[(5, 1)]), run(&[(1, 2)])]);
        assert_eq!(r.ts, [1, 5]);
    }
}
