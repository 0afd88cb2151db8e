//! Rollups: per-window aggregates of one series at a fixed resolution (5 m, 1 h).
//!
//! Windows are `[k·res, (k+1)·res)` in nanoseconds. PromQL range windows are *closed*
//! (`[t - r, t]`, millisecond precision), so a window sum is not enough to answer them
//! exactly: the samples in the first millisecond of a window (the "edge") are counted
//! by the step ending there *and* by the next one. The edge is therefore kept as its
//! own small aggregate, which makes `sum/count/min/max_over_time` exact whenever the
//! range and the evaluation times are multiples of the resolution.
//!
//! Counters: `inc` is the window's increase with resets compensated (a drop counts the
//! new value, as Prometheus does), including the step from the previous sample of the
//! same computation run; `first` is set on a run's first window so that runs computed
//! separately (one per partition) can be stitched without losing a reset at the seam.
//!
//! Money stays integral: sums of money series are `i128` nanos in memory and `i64` on
//! disk (a window whose sum does not fit is not stored; queries compute it from raw).

use std::collections::BTreeMap;

use crate::model::{Labels, SeriesKind, ValueKind, NANOS_PER_UNIT};

/// Resolutions rollups are built at, finest first (nanoseconds).
pub const RESOLUTIONS: [i64; 2] = [5 * 60 * 1_000_000_000, 3600 * 1_000_000_000];

/// Reserved label naming the aggregate a rollup series holds. Never in the series index.
pub const ROLLUP_LABEL: &str = "__rollup__";

/// Staleness marker bits (kept in sync with `query::promql::value::STALE_NAN_BITS`).
const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

const NANOS_PER_MILLI: i64 = 1_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RollupError {
    #[error("money sum of a {res_ns} ns window does not fit in i64 nanos")]
    SumOverflow { res_ns: i64 },
    #[error("malformed rollup data: {0}")]
    Malformed(String),
}

/// The aggregates stored per window (one series each in a rollup segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Agg {
    Count,
    Sum,
    Min,
    Max,
    Last,
    First,
    Counter,
    EdgeCount,
    EdgeSum,
    EdgeMin,
    EdgeMax,
}

impl Agg {
    pub const ALL: [Agg; 11] = [
        Agg::Count,
        Agg::Sum,
        Agg::Min,
        Agg::Max,
        Agg::Last,
        Agg::First,
        Agg::Counter,
        Agg::EdgeCount,
        Agg::EdgeSum,
        Agg::EdgeMin,
        Agg::EdgeMax,
    ];

    /// The value of the reserved label.
    pub fn name(self) -> &'static str {
        match self {
            Agg::Count => "count",
            Agg::Sum => "sum",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Last => "last",
            Agg::First => "first",
            Agg::Counter => "counter",
            Agg::EdgeCount => "edge_count",
            Agg::EdgeSum => "edge_sum",
            Agg::EdgeMin => "edge_min",
            Agg::EdgeMax => "edge_max",
        }
    }

    pub fn from_name(s: &str) -> Option<Agg> {
        Agg::ALL.iter().copied().find(|a| a.name() == s)
    }

    /// Kind of the stored series: value-shaped aggregates keep the raw kind's values
    /// (money stays i64 nanos); counts and counter increases are floats.
    pub fn stored_kind(self, raw: SeriesKind) -> SeriesKind {
        match self {
            Agg::Count | Agg::EdgeCount | Agg::Counter => SeriesKind::GAUGE,
            _ if raw.value == ValueKind::Money => SeriesKind::MONEY,
            _ => SeriesKind::GAUGE,
        }
    }
}

/// An exact money total or a float total.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Total {
    Money(i128),
    Float(f64),
}

impl Total {
    fn zero(kind: ValueKind) -> Total {
        match kind {
            ValueKind::Money => Total::Money(0),
            ValueKind::Float => Total::Float(0.0),
        }
    }

    fn add_raw(&mut self, raw: u64) {
        match self {
            Total::Money(s) => *s += i128::from(raw as i64),
            Total::Float(s) => *s += f64::from_bits(raw),
        }
    }

    pub fn add(&mut self, o: Total) {
        match (self, o) {
            (Total::Money(a), Total::Money(b)) => *a += b,
            (Total::Float(a), Total::Float(b)) => *a += b,
            (Total::Float(a), Total::Money(b)) => *a += b as f64 / NANOS_PER_UNIT as f64,
            (a @ Total::Money(_), Total::Float(b)) => *a = Total::Float(a.to_f64() + b),
        }
    }

    /// Units as f64 (money: one rounding of the exact total).
    pub fn to_f64(self) -> f64 {
        match self {
            Total::Money(s) => s as f64 / NANOS_PER_UNIT as f64,
            Total::Float(s) => s,
        }
    }
}

/// count/sum/min/max of a set of samples (min/max as raw values of the series' kind).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub count: u64,
    pub sum: Total,
    pub min: u64,
    pub max: u64,
}

impl Stats {
    fn one(kind: ValueKind, raw: u64) -> Stats {
        let mut sum = Total::zero(kind);
        sum.add_raw(raw);
        Stats {
            count: 1,
            sum,
            min: raw,
            max: raw,
        }
    }

    fn push(&mut self, kind: ValueKind, raw: u64) {
        self.count += 1;
        self.sum.add_raw(raw);
        self.min = pick(kind, self.min, raw, true);
        self.max = pick(kind, self.max, raw, false);
    }

    /// Merges `o` into `self` (same kind).
    pub fn merge(&mut self, kind: ValueKind, o: &Stats) {
        self.count += o.count;
        self.sum.add(o.sum);
        self.min = pick(kind, self.min, o.min, true);
        self.max = pick(kind, self.max, o.max, false);
    }
}

/// Prometheus's min/max fold: NaN only when everything is NaN.
fn pick(kind: ValueKind, cur: u64, new: u64, min: bool) -> u64 {
    match kind {
        ValueKind::Money => {
            let (c, n) = (cur as i64, new as i64);
            if (min && n < c) || (!min && n > c) {
                new
            } else {
                cur
            }
        }
        ValueKind::Float => {
            let (c, n) = (f64::from_bits(cur), f64::from_bits(new));
            if (min && n < c) || (!min && n > c) || c.is_nan() {
                new
            } else {
                cur
            }
        }
    }
}

/// A raw value as f64 units.
pub fn raw_to_f64(kind: ValueKind, raw: u64) -> f64 {
    match kind {
        ValueKind::Money => raw as i64 as f64 / NANOS_PER_UNIT as f64,
        ValueKind::Float => f64::from_bits(raw),
    }
}

/// The aggregates of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Window start (ns), a multiple of the resolution.
    pub start: i64,
    /// Timestamp of the window's last sample (ns); rollup samples are stored at it.
    pub last_ts: i64,
    pub stats: Stats,
    /// Samples in the window's first millisecond, if any.
    pub edge: Option<Stats>,
    /// Value (raw) of the last sample.
    pub last: u64,
    /// Value (raw) of the first sample, on the first window of a computation run only.
    pub first: Option<u64>,
    /// Counter increase (f64 units) with resets compensated, from the run's previous sample.
    pub inc: f64,
}

/// Rollup windows of one series at resolution `res` (ns). `ts` strictly increasing.
pub fn compute(kind: SeriesKind, ts: &[i64], vals: &[u64], res: i64) -> Vec<Window> {
    let vk = kind.value;
    let mut out: Vec<Window> = Vec::new();
    let mut prev: Option<f64> = None;
    for (&t, &raw) in ts.iter().zip(vals) {
        if vk == ValueKind::Float && raw == STALE_NAN_BITS {
            continue;
        }
        let start = t.div_euclid(res) * res;
        let v = raw_to_f64(vk, raw);
        let step = match prev {
            Some(p) if v >= p => v - p,
            Some(_) => v,
            None => 0.0,
        };
        prev = Some(v);
        let in_edge = t < start.saturating_add(NANOS_PER_MILLI);
        match out.last_mut() {
            Some(w) if w.start == start => {
                w.stats.push(vk, raw);
                if in_edge {
                    match &mut w.edge {
                        Some(e) => e.push(vk, raw),
                        None => w.edge = Some(Stats::one(vk, raw)),
                    }
                }
                w.last_ts = t;
                w.last = raw;
                w.inc += step;
            }
            _ => {
                let first = out.is_empty().then_some(raw);
                out.push(Window {
                    start,
                    last_ts: t,
                    stats: Stats::one(vk, raw),
                    edge: in_edge.then(|| Stats::one(vk, raw)),
                    last: raw,
                    first,
                    inc: step,
                });
            }
        }
    }
    out
}

/// Stored form: one `(aggregate, timestamps, raw values)` per aggregate with data.
pub type Encoded = Vec<(Agg, Vec<i64>, Vec<u64>)>;

/// Encodes windows as rollup series values; fails if a money sum does not fit i64.
pub fn encode(kind: SeriesKind, windows: &[Window], res: i64) -> Result<Encoded, RollupError> {
    let mut cols: BTreeMap<Agg, (Vec<i64>, Vec<u64>)> = BTreeMap::new();
    let mut put = |a: Agg, t: i64, v: u64| {
        let c = cols.entry(a).or_default();
        c.0.push(t);
        c.1.push(v);
    };
    let sum_raw = |s: Total| -> Result<u64, RollupError> {
        match s {
            Total::Money(m) => i64::try_from(m)
                .map(|m| m as u64)
                .map_err(|_| RollupError::SumOverflow { res_ns: res }),
            Total::Float(f) => Ok(f.to_bits()),
        }
    };
    let _ = kind;
    for w in windows {
        let t = w.last_ts;
        put(Agg::Count, t, (w.stats.count as f64).to_bits());
        put(Agg::Sum, t, sum_raw(w.stats.sum)?);
        put(Agg::Min, t, w.stats.min);
        put(Agg::Max, t, w.stats.max);
        put(Agg::Last, t, w.last);
        put(Agg::Counter, t, w.inc.to_bits());
        if let Some(f) = w.first {
            put(Agg::First, t, f);
        }
        if let Some(e) = &w.edge {
            // Stored at the window start: inside the window, so it decodes to it.
            put(Agg::EdgeCount, w.start, (e.count as f64).to_bits());
            put(Agg::EdgeSum, w.start, sum_raw(e.sum)?);
            put(Agg::EdgeMin, w.start, e.min);
            put(Agg::EdgeMax, w.start, e.max);
        }
    }
    Ok(cols.into_iter().map(|(a, (t, v))| (a, t, v)).collect())
}

/// Rebuilds windows from stored aggregates (inverse of [`encode`]).
pub fn decode(kind: SeriesKind, res: i64, cols: &[(Agg, Vec<i64>, Vec<u64>)]) -> Result<Vec<Window>, RollupError> {
    let vk = kind.value;
    let col = |a: Agg| cols.iter().find(|c| c.0 == a);
    let Some((_, count_ts, count_v)) = col(Agg::Count) else {
        return Ok(Vec::new());
    };
    let mut by_start: BTreeMap<i64, Window> = BTreeMap::new();
    for (&t, &c) in count_ts.iter().zip(count_v) {
        let start = t.div_euclid(res) * res;
        by_start.insert(
            start,
            Window {
                start,
                last_ts: t,
                stats: Stats {
                    count: f64::from_bits(c) as u64,
                    sum: Total::zero(vk),
                    min: 0,
                    max: 0,
                },
                edge: None,
                last: 0,
                first: None,
                inc: 0.0,
            },
        );
    }
    let sum_of = |raw: u64| match vk {
        ValueKind::Money => Total::Money(i128::from(raw as i64)),
        ValueKind::Float => Total::Float(f64::from_bits(raw)),
    };
    for (a, ts, vs) in cols {
        if ts.len() != vs.len() {
            return Err(RollupError::Malformed(format!("{} column lengths differ", a.name())));
        }
        for (&t, &v) in ts.iter().zip(vs) {
            let start = t.div_euclid(res) * res;
            let w = by_start.get_mut(&start).ok_or_else(|| {
                RollupError::Malformed(format!("{} sample at {t} has no count in its window", a.name()))
            })?;
            let edge = || Stats {
                count: 0,
                sum: Total::zero(vk),
                min: 0,
                max: 0,
            };
            match a {
                Agg::Count => {}
                Agg::Sum => w.stats.sum = sum_of(v),
                Agg::Min => w.stats.min = v,
                Agg::Max => w.stats.max = v,
                Agg::Last => w.last = v,
                Agg::First => w.first = Some(v),
                Agg::Counter => w.inc = f64::from_bits(v),
                Agg::EdgeCount => w.edge.get_or_insert_with(edge).count = f64::from_bits(v) as u64,
                Agg::EdgeSum => w.edge.get_or_insert_with(edge).sum = sum_of(v),
                Agg::EdgeMin => w.edge.get_or_insert_with(edge).min = v,
                Agg::EdgeMax => w.edge.get_or_insert_with(edge).max = v,
            }
        }
    }
    Ok(by_start.into_values().collect())
}

/// The labels of a rollup series for `raw` and `agg`.
pub fn rollup_labels(raw: &Labels, agg: Agg) -> Labels {
    raw.with(ROLLUP_LABEL, agg.name())
}

/// Splits a rollup series' labels into the raw labels and the aggregate.
pub fn split_labels(labels: &Labels) -> Option<(Labels, Agg)> {
    let agg = Agg::from_name(labels.get(ROLLUP_LABEL)?)?;
    Some((labels.without(&[ROLLUP_LABEL]), agg))
}

/// Cumulative, reset-free counter points `(last_ts ns, value)` over consecutive windows
/// (possibly from several runs): each run's first window is joined to the previous
/// window through its `first` value, treating a drop as a reset.
pub fn counter_points(kind: ValueKind, windows: &[Window]) -> Vec<(i64, f64)> {
    let mut out = Vec::with_capacity(windows.len());
    let mut acc: Option<(f64, f64)> = None; // (cumulative value, previous window's last raw value)
    for w in windows {
        let last = raw_to_f64(kind, w.last);
        let c = match (acc, w.first) {
            (None, _) => last,
            (Some((c, prev_last)), Some(first)) => {
                let f = raw_to_f64(kind, first);
                let gap = if f >= prev_last { f - prev_last } else { f };
                c + gap + w.inc
            }
            (Some((c, _)), None) => c + w.inc,
        };
        acc = Some((c, last));
        out.push((w.last_ts, c));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const M: i64 = 60 * 1_000_000_000;
    const RES: i64 = 5 * M;

    fn money(v: &[i64]) -> Vec<u64> {
        v.iter().map(|&x| x as u64).collect()
    }

    fn floats(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn windows_are_aligned_and_edges_are_the_first_millisecond() {
        let ts = [0, 1, M, 5 * M - 1, 5 * M, 5 * M + 999_999, 5 * M + 1_000_000, 11 * M];
        let vals = floats(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let w = compute(SeriesKind::GAUGE, &ts, &vals, RES);
        assert_eq!(w.iter().map(|w| w.start).collect::<Vec<_>>(), [0, 5 * M, 10 * M]);
        assert_eq!(w[0].stats.count, 4);
        assert_eq!(w[0].last_ts, 5 * M - 1);
        assert_eq!(w[0].edge.map(|e| e.count), Some(2));
        assert_eq!(w[1].edge.map(|e| e.sum), Some(Total::Float(11.0)));
        assert_eq!(w[1].stats.count, 3);
        assert_eq!(w[2].edge, None);
        assert_eq!(f64::from_bits(w[1].stats.min), 5.0);
        assert_eq!(f64::from_bits(w[1].stats.max), 7.0);
        assert_eq!(w[0].first, Some(1f64.to_bits()));
        assert_eq!(w[1].first, None);
    }

    #[test]
    fn money_sums_are_exact_and_overflow_is_refused() {
        // 0.1 + 0.2 style values: exact in nanos, inexact in f64.
        let ts: Vec<i64> = (0..10).map(|i| i * M).collect();
        let vals = money(&[100_000_000, 200_000_000, 300_000_001, 1, 2, 3, 4, 5, 6, 7]);
        let w = compute(SeriesKind::MONEY, &ts, &vals, RES);
        assert_eq!(w[0].stats.sum, Total::Money(600_000_004));
        assert_eq!(w[1].stats.sum, Total::Money(25));
        let enc = encode(SeriesKind::MONEY, &w, RES).unwrap();
        assert_eq!(decode(SeriesKind::MONEY, RES, &enc).unwrap(), w);
        let big = compute(SeriesKind::MONEY, &[0, 1], &money(&[i64::MAX, i64::MAX]), RES);
        assert_eq!(big[0].stats.sum, Total::Money(2 * i128::from(i64::MAX)));
        assert_eq!(
            encode(SeriesKind::MONEY, &big, RES),
            Err(RollupError::SumOverflow { res_ns: RES })
        );
    }

    #[test]
    fn counter_resets_are_compensated_within_and_across_runs() {
        // 10 → 20 | reset → 5 → 8 | (next run) reset at the seam → 3
        let ts = [0, M, 5 * M, 6 * M];
        let vals = floats(&[10.0, 20.0, 5.0, 8.0]);
        let mut w = compute(SeriesKind::GAUGE, &ts, &vals, RES);
        assert_eq!(w[0].inc, 10.0);
        assert_eq!(w[1].inc, 5.0 + 3.0);
        w.extend(compute(SeriesKind::GAUGE, &[10 * M, 11 * M], &floats(&[3.0, 4.0]), RES));
        let c = counter_points(ValueKind::Float, &w);
        // Start at the last value (20), +8 (reset then 5→8), +3 (reset at the seam) +1.
        assert_eq!(c.iter().map(|p| p.1).collect::<Vec<_>>(), [20.0, 28.0, 32.0]);
        assert!(c.windows(2).all(|p| p[1].1 >= p[0].1));
        // Without a reset at the seam the gap is the plain difference.
        let mut w2 = compute(SeriesKind::GAUGE, &[0], &floats(&[1.0]), RES);
        w2.extend(compute(SeriesKind::GAUGE, &[5 * M], &floats(&[4.0]), RES));
        assert_eq!(counter_points(ValueKind::Float, &w2)[1].1, 4.0);
    }

    #[test]
    fn stale_markers_are_skipped() {
        let w = compute(SeriesKind::GAUGE, &[0, M], &[1f64.to_bits(), STALE_NAN_BITS], RES);
        assert_eq!(w[0].stats.count, 1);
    }

    #[test]
    fn labels_roundtrip() {
        let l = Labels::from_pairs(
            [("__name__", "cost"), ("tenant", "a")],
            &crate::model::LabelLimits::default(),
        )
        .unwrap();
        let r = rollup_labels(&l, Agg::EdgeSum);
        assert_eq!(split_labels(&r), Some((l.clone(), Agg::EdgeSum)));
        assert_eq!(split_labels(&l), None);
    }

    proptest! {
        /// Against a naive model: every window's aggregates equal a direct computation
        /// over the samples whose floor(ts / res) is that window; encode/decode is lossless.
        #[test]
        fn matches_naive_model(
            deltas in proptest::collection::vec(1i64..(3 * M), 1..200),
            vals in proptest::collection::vec(-1_000_000_000_000i64..1_000_000_000_000, 200),
        ) {
            let mut ts = Vec::new();
            let mut t = -7 * M;
            for d in &deltas { t += d; ts.push(t); }
            let v: Vec<u64> = ts.iter().enumerate().map(|(i, _)| vals[i] as u64).collect();
            let w = compute(SeriesKind::MONEY, &ts, &v, RES);
            let mut groups: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
            for (i, &t) in ts.iter().enumerate() {
                groups.entry(t.div_euclid(RES)).or_default().push((t, vals[i]));
            }
            prop_assert_eq!(w.len(), groups.len());
            for (win, (k, g)) in w.iter().zip(&groups) {
                prop_assert_eq!(win.start, k * RES);
                prop_assert_eq!(win.stats.count, g.len() as u64);
                prop_assert_eq!(win.stats.sum, Total::Money(g.iter().map(|x| i128::from(x.1)).sum()));
                prop_assert_eq!(win.stats.min as i64, g.iter().map(|x| x.1).min().unwrap());
                prop_assert_eq!(win.stats.max as i64, g.iter().map(|x| x.1).max().unwrap());
                prop_assert_eq!(win.last as i64, g.last().unwrap().1);
                prop_assert_eq!(win.last_ts, g.last().unwrap().0);
                let edge: Vec<i64> = g.iter().filter(|x| x.0 < k * RES + NANOS_PER_MILLI).map(|x| x.1).collect();
                prop_assert_eq!(win.edge.map(|e| e.count).unwrap_or(0), edge.len() as u64);
            }
            // The cumulative counter never decreases (for counter-like data) and its total equals the naive
            // reset-compensated increase over all samples.
            let f: Vec<f64> = vals[..ts.len()].iter().map(|&x| x as f64 / 1e9).collect();
            let naive: f64 = f.windows(2).map(|p| if p[1] >= p[0] { p[1] - p[0] } else { p[1] }).sum();
            let c = counter_points(ValueKind::Money, &w);
            // Counters are non-negative; a "reset" to a negative value would credit it.
            if f.iter().all(|&x| x >= 0.0) {
                prop_assert!(c.windows(2).all(|p| p[1].1 >= p[0].1));
            }
            let got = c.last().unwrap().1 - c[0].1 + w[0].inc;
            prop_assert!((got - naive).abs() <= 1e-6 * (1.0 + naive.abs()), "{} vs {}", got, naive);
            if let Ok(enc) = encode(SeriesKind::MONEY, &w, RES) {
                prop_assert_eq!(decode(SeriesKind::MONEY, RES, &enc).unwrap(), w);
            }
        }
    }
}
