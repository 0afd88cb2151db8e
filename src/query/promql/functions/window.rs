//! One pass per series over all evaluation steps of a range function.
//!
//! The windows `[end_i - range, end_i]` of consecutive steps move forward monotonically
//! (`end_i = (at or t_i) - offset` never decreases), so their bounds are found by
//! advancing two cursors instead of two binary searches per step, and a window sum is
//! maintained by adding the points that enter and subtracting those that leave instead
//! of re-adding the whole window at every step (`sum_over_time(x[1h])` at a 60 s step
//! would otherwise add every sample 60 times).

use super::range::kahan_sum;
use crate::query::promql::engine::{Range, RangeSpec};

/// The windows of all steps of a range, when their ends are `e0 + i·step` exactly:
/// no `@` (which pins every window) and no overflow anywhere in the range (which
/// would make [`RangeSpec::end_at`] saturate). Then the steps whose windows hold the
/// same points are found by comparing times instead of evaluating each step: a
/// window changes only at the first step whose end reaches the next point or whose
/// start passes its first point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LinearWindows {
    e0: i64,
    step: i64,
    range: i64,
    n: usize,
}

impl LinearWindows {
    pub fn new(spec: &RangeSpec, rng: &Range) -> Option<LinearWindows> {
        if spec.at.is_some() || rng.step <= 0 {
            return None;
        }
        let e0 = rng.start.checked_sub(spec.offset)?;
        rng.end.checked_sub(spec.offset)?;
        e0.checked_sub(spec.range)?;
        Some(LinearWindows {
            e0,
            step: rng.step,
            range: spec.range,
            n: rng.len(),
        })
    }

    /// Calls `f(i, j, lo, hi, e)` for each maximal run of steps `i..j` whose windows
    /// hold the same non-empty points `pts[lo..hi]` (sorted by time), in step order;
    /// `e` is step `i`'s window end (step `k`'s is `e + (k - i)·step`). The windows
    /// are those [`WindowCursor`] yields step by step.
    #[inline(always)]
    pub fn for_each(&self, pts: &[(i64, f64)], mut f: impl FnMut(usize, usize, usize, usize, i64)) {
        // Every end lies in `e0..=end - offset` and every start at or above
        // `e0 - range`, all checked in `new`: the arithmetic below is exact until a
        // step past the last one, where only `saturating_add` runs.
        let (mut lo, mut hi) = (0, 0);
        let (mut i, mut e) = (0, self.e0);
        while i < self.n {
            while hi < pts.len() && pts[hi].0 <= e {
                hi += 1;
            }
            let start = e - self.range;
            while lo < hi && pts[lo].0 < start {
                lo += 1;
            }
            // An empty window changes only when `hi` does: `lo` counts the points
            // before the start, never more than `hi` counts up to the end.
            let hi_at = pts.get(hi).map_or(i64::MAX, |p| p.0);
            let lo_until = if lo < hi {
                pts[lo].0.saturating_add(self.range)
            } else {
                i64::MAX
            };
            let (mut j, mut ej) = (i + 1, e.saturating_add(self.step));
            while j < self.n && ej < hi_at && ej <= lo_until {
                j += 1;
                ej = ej.saturating_add(self.step);
            }
            if lo < hi {
                f(i, j, lo, hi, e);
            }
            (i, e) = (j, ej);
        }
    }
}

/// One distinct window yielded by [`LinearWindows::for_each`]: steps `i..j` see the
/// points `lo..hi`, and `e` is step `i`'s window end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Window {
    pub i: usize,
    pub j: usize,
    pub lo: usize,
    pub hi: usize,
    pub e: i64,
}

/// The windows of the last series a thread evaluated, with the timestamps they were
/// found from. Series written together usually share their timestamps (an exporter's
/// hourly usage, a scrape of many series, a backfill): their windows are then the
/// same, and comparing the timestamps costs a few instructions a point where walking
/// the windows costs a few tens a window.
#[derive(Debug, Default)]
pub(crate) struct WindowMemo {
    of: Option<LinearWindows>,
    times: Vec<i64>,
    windows: Vec<Window>,
    /// Bumped whenever the windows are found afresh: what callers derive from the
    /// windows and the timestamps (see `RatePlan`) is valid while it stays the same.
    generation: u64,
}

impl LinearWindows {
    /// The windows [`for_each`](Self::for_each) yields for `pts`, in order, and the
    /// memo's generation; taken from `memo` when it holds those of the same windows
    /// over the same timestamps.
    pub fn windows<'m>(&self, pts: &[(i64, f64)], memo: &'m mut WindowMemo) -> (&'m [Window], u64) {
        let same = memo.of == Some(*self)
            && memo.times.len() == pts.len()
            && memo.times.iter().zip(pts).all(|(t, p)| *t == p.0);
        if !same {
            memo.of = Some(*self);
            memo.times.clear();
            memo.times.extend(pts.iter().map(|p| p.0));
            let out = &mut memo.windows;
            out.clear();
            self.for_each(pts, |i, j, lo, hi, e| out.push(Window { i, j, lo, hi, e }));
            memo.generation += 1;
        }
        (&memo.windows, memo.generation)
    }
}

/// Finds the window of each step in a time-sorted point slice. Callers must ask for
/// windows with non-decreasing `start` and `end`.
#[derive(Debug, Default)]
pub(crate) struct WindowCursor {
    lo: usize,
    hi: usize,
}

impl WindowCursor {
    /// Indices `lo..hi` of the points with `start <= t <= end`.
    #[inline]
    pub fn advance(&mut self, pts: &[(i64, f64)], start: i64, end: i64) -> (usize, usize) {
        while self.hi < pts.len() && pts[self.hi].0 <= end {
            self.hi += 1;
        }
        while self.lo < self.hi && pts[self.lo].0 < start {
            self.lo += 1;
        }
        (self.lo, self.hi)
    }
}

/// Windows shorter than this are summed directly: that is as cheap as sliding, and
/// bit-identical to Prometheus's Kahan sum over the window.
const DIRECT_MAX: usize = 16;

/// The sum of a sliding window of finite values, kept in about twice the working
/// precision, so that adding and later subtracting a point leaves no visible residue:
/// the result is the window sum rounded to f64 (up to an error far below one ulp but
/// in contrived cancellations), to which Prometheus's Kahan sum also rounds except for
/// pathological cancellations.
///
/// Invariants: `acc` holds the sum of the finite values of `pts[a..b]`; `nonfinite`
/// counts the NaN/±Inf values there. Windows holding a non-finite value, short windows
/// and windows not overlapping the previous one are summed directly with
/// [`kahan_sum`], which keeps Prometheus's exact NaN/Inf results. The accumulator is
/// rebuilt from scratch once every point it was built from has left the window, which
/// bounds the history that rounding residue can come from to two windows.
#[derive(Debug, Default)]
pub(crate) struct SlidingSum {
    a: usize,
    b: usize,
    acc: DoubleDouble,
    nonfinite: usize,
    /// `b` at the last rebuild: once `a` passes it, rebuild.
    rebuilt_to: usize,
}

impl SlidingSum {
    /// The sum of the values of `pts[lo..hi]`; windows must be asked for with
    /// non-decreasing `lo` and `hi` (as [`WindowCursor`] yields them).
    #[inline(always)]
    pub fn sum(&mut self, pts: &[(i64, f64)], lo: usize, hi: usize) -> f64 {
        if hi - lo == 1 {
            // A window of one point (sampling about as often as the step, e.g. `[1m]`
            // over minutely data): Kahan's sum of one value `v` is `v + 0.0` in every
            // case (-0 becomes +0, NaN and ±Inf stay).
            return pts[lo].1 + 0.0;
        }
        if hi - lo < DIRECT_MAX {
            return kahan_sum(pts[lo..hi].iter().map(|p| p.1));
        }
        if lo >= self.b || lo < self.a || hi < self.b || lo >= self.rebuilt_to {
            self.rebuild(pts, lo, hi);
        } else {
            // On locals: through `&mut self` every addition would store and reload the
            // accumulator, lengthening its dependency chain.
            let (mut acc, mut nonfinite) = (self.acc, self.nonfinite);
            for p in &pts[self.b..hi] {
                add(&mut acc, &mut nonfinite, p.1);
            }
            for p in &pts[self.a..lo] {
                if p.1.is_finite() {
                    acc.add(-p.1);
                } else {
                    // Counted when it entered: the count is positive.
                    nonfinite -= 1;
                }
            }
            (self.acc, self.nonfinite) = (acc, nonfinite);
            self.a = lo;
            self.b = hi;
        }
        if self.nonfinite > 0 || !self.acc.hi.is_finite() {
            // Overflow of finite values, or NaN/Inf present: Prometheus's own rules decide.
            let v = kahan_sum(pts[lo..hi].iter().map(|p| p.1));
            self.rebuilt_to = 0; // Force a rebuild next time: `acc` may be spoiled.
            return v;
        }
        self.acc.value()
    }

    fn rebuild(&mut self, pts: &[(i64, f64)], lo: usize, hi: usize) {
        let (mut acc, mut nonfinite) = (DoubleDouble::default(), 0);
        for p in &pts[lo..hi] {
            add(&mut acc, &mut nonfinite, p.1);
        }
        (self.acc, self.nonfinite) = (acc, nonfinite);
        self.a = lo;
        self.b = hi;
        self.rebuilt_to = hi;
    }
}

/// Adds `v` to the finite sum `acc`, or counts it in `nonfinite`.
#[inline]
fn add(acc: &mut DoubleDouble, nonfinite: &mut usize, v: f64) {
    if v.is_finite() {
        acc.add(v);
    } else {
        *nonfinite += 1;
    }
}

/// An unevaluated sum `hi + lo` (Ogita–Rump–Oishi's cascaded `Sum2`): every addition
/// to `hi` is exact up to its rounding error, which Knuth's two-sum recovers exactly
/// and `lo` collects. Unlike a renormalised double-double, the next addition needs only
/// `hi` (one add on the dependency chain instead of about ten), so a slide costs a few
/// cycles; the result is as accurate as summing in twice the working precision.
/// `lo` is folded back into `hi` every [`RENORM`] additions, which keeps it within a
/// few ulps of `hi` so that its own rounding stays at the double-double level.
#[derive(Debug, Default, Clone, Copy)]
struct DoubleDouble {
    hi: f64,
    lo: f64,
    /// Additions since the last renormalisation.
    adds: u32,
}

/// Additions between renormalisations of [`DoubleDouble`].
const RENORM: u32 = 16;

impl DoubleDouble {
    #[inline]
    fn add(&mut self, x: f64) {
        // Knuth's two-sum: s + e == hi + x exactly.
        let s = self.hi + x;
        let bb = s - self.hi;
        let e = (self.hi - (s - bb)) + (x - bb);
        self.hi = s;
        self.lo += e;
        self.adds += 1;
        if self.adds >= RENORM {
            self.adds = 0;
            let h = self.hi + self.lo;
            let bb = h - self.hi;
            self.lo = (self.hi - (h - bb)) + (self.lo - bb);
            self.hi = h;
        }
    }

    /// The value rounded to f64.
    #[inline]
    fn value(&self) -> f64 {
        self.hi + self.lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(vals: &[f64]) -> Vec<(i64, f64)> {
        vals.iter().enumerate().map(|(i, &v)| (i as i64 * 10, v)).collect()
    }

    #[test]
    fn cursor_yields_closed_windows() {
        let p = pts(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        let mut c = WindowCursor::default();
        assert_eq!(c.advance(&p, -5, 5), (0, 1));
        assert_eq!(c.advance(&p, 10, 30), (1, 4));
        assert_eq!(c.advance(&p, 31, 39), (4, 4));
        assert_eq!(c.advance(&p, 40, 100), (4, 5));
    }

    /// Sliding sums agree with direct summation over every window, including values
    /// of wildly different magnitude whose residue must not linger.
    #[test]
    fn sliding_sum_matches_direct_sum() {
        let mut vals: Vec<f64> = (0..400).map(|i| ((i * 37) % 101) as f64 / 7.0 + 0.001).collect();
        vals[50] = 1e20;
        vals[51] = -3e15;
        vals[200] = 1e-9;
        let p = pts(&vals);
        for w in [16usize, 17, 40, 60, 150] {
            let mut s = SlidingSum::default();
            for lo in 0..p.len() - w {
                let got = s.sum(&p, lo, lo + w);
                let want = kahan_sum(p[lo..lo + w].iter().map(|x| x.1));
                let tol = want.abs() * 1e-15;
                assert!((got - want).abs() <= tol, "w={w} lo={lo}: {got} vs {want}");
            }
        }
    }

    proptest::proptest! {
        /// Random values of mixed magnitude and sign, windows of random length moving by
        /// random strides: the sliding sum stays within a tiny fraction of an ulp of the
        /// magnitude sum from Kahan's direct sum of each window.
        #[test]
        fn sliding_sum_tracks_direct_sums(
            vals in proptest::collection::vec(
                proptest::prop_oneof![-1e3f64..1e3, -1e12f64..1e12, -1e-3f64..1e-3],
                40..400,
            ),
            len in 16usize..80,
            strides in proptest::collection::vec(0usize..4, 1..200),
        ) {
            let p = pts(&vals);
            let mut s = SlidingSum::default();
            let mut lo = 0;
            for st in strides {
                lo += st;
                let hi = (lo + len).min(p.len());
                if lo >= hi {
                    break;
                }
                let got = s.sum(&p, lo, hi);
                let want = kahan_sum(p[lo..hi].iter().map(|x| x.1));
                let mag: f64 = p[lo..hi].iter().map(|x| x.1.abs()).sum();
                proptest::prop_assert!((got - want).abs() <= mag * 1e-15, "lo={lo} hi={hi}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn non_finite_values_follow_the_direct_rules() {
        let mut vals = vec![1.0; 100];
        vals[30] = f64::NAN;
        vals[60] = f64::INFINITY;
        vals[61] = f64::NEG_INFINITY;
        let p = pts(&vals);
        let mut s = SlidingSum::default();
        for lo in 0..80 {
            let got = s.sum(&p, lo, lo + 20);
            let want = kahan_sum(p[lo..lo + 20].iter().map(|x| x.1));
            assert!(
                got == want || (got.is_nan() && want.is_nan()),
                "lo={lo}: {got} vs {want}"
            );
        }
        // After the non-finite values left, the sliding sum is exact again.
        assert_eq!(s.sum(&p, 79, 99), 20.0);
    }

    fn walked(w: &LinearWindows, p: &[(i64, f64)]) -> Vec<Window> {
        let mut out = Vec::new();
        w.for_each(p, |i, j, lo, hi, e| out.push(Window { i, j, lo, hi, e }));
        out
    }

    proptest::proptest! {
        /// A sequence of series, each either repeating an earlier one's timestamps or
        /// not (a shifted, shortened or lengthened copy), asked of one memo under one or
        /// two window geometries: the memo always gives exactly the windows walked afresh.
        #[test]
        fn memoized_windows_equal_walked_ones(
            base in proptest::collection::vec(1i64..90, 1..120),
            series in proptest::collection::vec((0usize..4, 0usize..2), 1..12),
        ) {
            let times: Vec<i64> = base.iter().scan(0i64, |t, d| { *t += d; Some(*t) }).collect();
            let geometries = [
                LinearWindows { e0: 100, step: 15, range: 60, n: 300 },
                LinearWindows { e0: 0, step: 7, range: 200, n: 900 },
            ];
            let mut memo = WindowMemo::default();
            for (shape, g) in series {
                let p: Vec<(i64, f64)> = match shape {
                    0 => times.iter().map(|&t| (t, 1.0)).collect(),
                    1 => times.iter().map(|&t| (t + 1, 2.0)).collect(),
                    2 => times[..times.len() / 2].iter().map(|&t| (t, 3.0)).collect(),
                    _ => times.iter().chain(&[i64::MAX / 4]).map(|&t| (t, 4.0)).collect(),
                };
                let w = geometries[g];
                let want = walked(&w, &p);
                proptest::prop_assert_eq!(w.windows(&p, &mut memo).0, &want[..]);
            }
        }
    }

    /// A one-point window's shortcut gives Kahan's sum bit for bit, specials included.
    #[test]
    fn one_point_windows_equal_kahan_sums() {
        let vals = [
            0.0,
            -0.0,
            1.5,
            -2.25,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            1e308,
        ];
        let p = pts(&vals);
        let mut s = SlidingSum::default();
        for i in 0..p.len() {
            let want = kahan_sum(std::iter::once(p[i].1));
            assert_eq!(s.sum(&p, i, i + 1).to_bits(), want.to_bits(), "value {}", p[i].1);
        }
    }

    #[test]
    fn windows_may_jump_and_shrink() {
        let p = pts(&(0..200).map(|i| i as f64).collect::<Vec<_>>());
        let mut s = SlidingSum::default();
        assert_eq!(s.sum(&p, 0, 20), (0..20).sum::<i32>() as f64);
        assert_eq!(s.sum(&p, 5, 20), (5..20).sum::<i32>() as f64);
        assert_eq!(s.sum(&p, 100, 130), (100..130).sum::<i32>() as f64);
        assert_eq!(s.sum(&p, 101, 131), (101..131).sum::<i32>() as f64);
        assert_eq!(s.sum(&p, 131, 131), 0.0);
        assert_eq!(s.sum(&p, 131, 160), (131..160).sum::<i32>() as f64);
    }
}
