//! `rate`, `increase` and `delta`: Prometheus 2.x's extrapolated change over a window,
//! with the divisions that depend only on the window's geometry remembered across
//! steps and series (bit-identical to the plain formula).

use std::cmp::Ordering;

use super::window::Window;

/// Finds whether a window holds a counter reset (a sample below its predecessor; never
/// with NaN) without scanning it at every step: `next` is the first reset at or after
/// the last asked window's `lo + 1`, and both only move forward, so a series costs one
/// pass. Windows must be asked for with non-decreasing `lo`.
#[derive(Default)]
pub(crate) struct ResetCursor {
    next: usize,
}

impl ResetCursor {
    /// Whether some `j` in `lo + 1 .. hi` has `pts[j].1 < pts[j - 1].1`.
    pub fn any(&mut self, pts: &[(i64, f64)], lo: usize, hi: usize) -> bool {
        if self.next <= lo {
            self.next = lo + 1;
            while self.next < pts.len() && pts[self.next].1.partial_cmp(&pts[self.next - 1].1) != Some(Ordering::Less) {
                self.next += 1;
            }
        }
        self.next < hi
    }
}

/// `rate`/`increase`/`delta`: the change over the samples in the window, extrapolated
/// towards the window's edges (by at most half a sample interval beyond the data, and
/// for counters never below zero), exactly as Prometheus 2.x.
pub(crate) fn extrapolated_rate(
    w: &[(i64, f64)],
    range_start: i64,
    range_end: i64,
    is_counter: bool,
    is_rate: bool,
    secs: &mut RateSecs,
) -> Option<f64> {
    extrapolated_rate_hinted(w, range_start, range_end, is_counter, is_rate, false, secs)
}

/// [`extrapolated_rate`], told by `no_resets` that no sample of `w` is below its
/// predecessor (then the counter-reset scan adds nothing, except `+ 0.0` for a
/// negative first sample, kept for bit-identity: it turns a `-0.0` change into `0.0`).
pub(crate) fn extrapolated_rate_hinted(
    w: &[(i64, f64)],
    range_start: i64,
    range_end: i64,
    is_counter: bool,
    is_rate: bool,
    no_resets: bool,
    secs: &mut RateSecs,
) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let result = change(w, is_counter, no_resets);
    Some(extrapolate_at(
        result,
        w,
        range_start,
        range_end,
        is_counter,
        is_rate,
        secs,
    ))
}

/// The change over `w` (at least two points): last minus first, for counters plus
/// the value before each reset. `no_resets` as for [`extrapolated_rate_hinted`].
#[inline]
pub(crate) fn change(w: &[(i64, f64)], is_counter: bool, no_resets: bool) -> f64 {
    let (first, last) = (w[0], w[w.len() - 1]);
    let mut result = last.1 - first.1;
    if is_counter && no_resets {
        if first.1 < 0.0 {
            result += 0.0;
        }
    } else if is_counter {
        let mut prev = 0.0;
        for p in w {
            if p.1 < prev {
                result += prev;
            }
            prev = p.1;
        }
    }
    result
}

/// The change `result` over `w` (at least two points) extrapolated to the window
/// `[range_start, range_end]`, per second when `is_rate`. A window's change does not
/// depend on the step, so callers evaluating several steps over the same points
/// compute it once ([`change`]) and extrapolate it per step (over many series sampled
/// at the same times, [`RatePlan`] does it with the geometry looked up once per step).
#[inline]
fn extrapolate_at(
    result: f64,
    w: &[(i64, f64)],
    range_start: i64,
    range_end: i64,
    is_counter: bool,
    is_rate: bool,
    secs: &mut RateSecs,
) -> f64 {
    let (first, last) = (w[0], w[w.len() - 1]);
    let key = GeometryKey::new(first.0, last.0, w.len(), range_start, range_end, is_rate);
    let g = secs.get(&key);
    apply_geometry(result, first.1, g, is_counter, is_rate)
}

/// The change `result` over a window whose first value is `first` and whose
/// geometry is `g`, extrapolated (the end of [`extrapolate_at`]).
#[inline(always)]
fn apply_geometry(result: f64, first: f64, g: &Geometry, is_counter: bool, is_rate: bool) -> f64 {
    // The zero point of a counter can only shorten the extrapolation towards the
    // start: `to_zero < duration_to_start`. That needs a division per step unless
    // `first.1` is clearly large: if first / result >= 2 d / s (d = duration to start,
    // s = sampled), the rounded `to_zero` is at least 2 d (1 - u)^2 > d. The test below
    // implies that bound with a margin (1e-9) far above the rounding of `g.k` and of the
    // product, so skipping the division changes nothing.
    if is_counter
        && result > 0.0
        && first >= 0.0
        && first.partial_cmp(&(result * g.k * (1.0 + 1e-9))) != Some(Ordering::Greater)
    {
        if let Some(v) = from_zero(result, first, g, is_rate) {
            return v;
        }
    }
    result * g.factor
}

/// The extrapolation when the counter's zero point shortens it towards the start.
/// Out of line: the division is rarely needed, and inlined, the compiler would hoist
/// it out of callers' loops and pay for it on every window.
#[cold]
#[inline(never)]
fn from_zero(result: f64, first: f64, g: &Geometry, is_rate: bool) -> Option<f64> {
    let to_zero = g.sampled * (first / result);
    (to_zero < g.to_start).then(|| result * factor(to_zero, g.to_end, g.sampled, g.avg_between, g.range, is_rate))
}

/// Prometheus's extrapolation factor from the durations (s) to the window's start and
/// end, the sampled span, the average spacing and the range.
fn factor(to_start: f64, to_end: f64, sampled: f64, avg_between: f64, range: f64, is_rate: bool) -> f64 {
    let threshold = avg_between * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        avg_between / 2.0
    };
    interval += if to_end < threshold { to_end } else { avg_between / 2.0 };
    // One factor, as Prometheus >= 2.40 computes it (the order matters in the last ulp,
    // which decides ties in topk/bottomk).
    let f = interval / sampled;
    if is_rate {
        f / range
    } else {
        f
    }
}

/// What [`extrapolated_rate`]'s divisions depend on besides the sample values.
#[derive(Clone, Copy, Default, PartialEq)]
struct GeometryKey {
    to_start_ms: i64,
    to_end_ms: i64,
    sampled_ms: i64,
    points: usize,
    range_ms: i64,
    is_rate: bool,
}

impl GeometryKey {
    /// The key of a window of `points` samples from `first` to `last` (ms) in the
    /// range `start..=end`.
    fn new(first: i64, last: i64, points: usize, start: i64, end: i64, is_rate: bool) -> GeometryKey {
        GeometryKey {
            to_start_ms: first - start,
            to_end_ms: end - last,
            sampled_ms: last - first,
            points,
            range_ms: end - start,
            is_rate,
        }
    }
}

/// The value-independent quantities of [`extrapolated_rate`] for one [`GeometryKey`].
#[derive(Clone, Copy, Default)]
struct Geometry {
    to_start: f64,
    to_end: f64,
    sampled: f64,
    avg_between: f64,
    range: f64,
    /// `2 * to_start / sampled`: the zero-point bound.
    k: f64,
    /// The factor when the zero point does not shorten the extrapolation.
    factor: f64,
}

impl Geometry {
    fn new(key: &GeometryKey) -> Geometry {
        let secs = |ms: i64| ms as f64 / 1000.0;
        let (to_start, to_end, sampled, range) = (
            secs(key.to_start_ms),
            secs(key.to_end_ms),
            secs(key.sampled_ms),
            secs(key.range_ms),
        );
        // `points >= 2` for every window that gets here.
        let avg_between = sampled / (key.points - 1) as f64;
        Geometry {
            to_start,
            to_end,
            sampled,
            avg_between,
            range,
            k: 2.0 * to_start / sampled,
            factor: factor(to_start, to_end, sampled, avg_between, range, key.is_rate),
        }
    }
}

/// The geometry of every step of one set of windows over one set of timestamps (see
/// [`WindowMemo`](super::window::WindowMemo)): series sampled at the same times share
/// it, so per series and step what is left is the multiplication (and the rare
/// counter zero-point check). Holds exactly what [`extrapolate_at`] would look up.
#[derive(Default)]
pub(crate) struct RatePlan {
    /// The window memo generation and `is_rate` the plan was built for.
    built_for: Option<(u64, bool)>,
    steps: Vec<Geometry>,
}

impl RatePlan {
    /// Makes the plan hold the geometry of each step of `windows` (of memo generation
    /// `generation` over `pts`, ranges of `range` ms, consecutive ends `step` ms apart,
    /// `n` steps), unless it already does.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare(
        &mut self,
        generation: u64,
        windows: &[Window],
        pts: &[(i64, f64)],
        range: i64,
        step: i64,
        n: usize,
        is_rate: bool,
        secs: &mut RateSecs,
    ) {
        if self.built_for == Some((generation, is_rate)) {
            return;
        }
        self.steps.clear();
        self.steps.resize(n, Geometry::default());
        for w in windows {
            if w.hi - w.lo < 2 {
                continue;
            }
            let (first, last) = (pts[w.lo].0, pts[w.hi - 1].0);
            let mut end = w.e;
            for k in w.i..w.j.min(n) {
                // As `extrapolate_at` forms it for step `k` (see `rate_runs`).
                let key = GeometryKey::new(first, last, w.hi - w.lo, end - range, end, is_rate);
                self.steps[k] = *secs.get(&key);
                end = end.saturating_add(step);
            }
        }
        self.built_for = Some((generation, is_rate));
    }

    /// The extrapolated change at step `k` of a window of the planned windows whose
    /// change is `result` and first value `first`.
    #[inline(always)]
    pub fn extrapolate(&self, k: usize, result: f64, first: f64, is_counter: bool, is_rate: bool) -> f64 {
        match self.steps.get(k) {
            Some(g) => apply_geometry(result, first, g, is_counter, is_rate),
            None => f64::NAN,
        }
    }
}

/// How many recent geometries [`RateSecs`] keeps: a 15 s step over 60 s samples cycles
/// through 4 window alignments, a 15 s step over 2 min samples through 8.
const RECENT: usize = 8;

/// The divisions of [`extrapolated_rate`] that depend only on sample spacing and window
/// geometry, remembered for the last [`RECENT`] geometries: with regularly spaced
/// samples they repeat step after step (cycling through a few alignments when the step
/// is shorter than the sample interval), and across series scraped at the same times;
/// divisions are the slowest part of a rate. A remembered geometry holds exactly what
/// the divisions give (same operands, same operations), so what is remembered, and
/// for how long, never changes a result.
#[derive(Default)]
pub(crate) struct RateSecs {
    entries: [(GeometryKey, Geometry); RECENT],
    used: usize,
    next: usize,
    /// The entry that answered last: geometries recur in cycles, so the entry after
    /// it is tried first.
    last: usize,
}

impl RateSecs {
    /// The geometry of `key`.
    #[inline]
    fn get(&mut self, key: &GeometryKey) -> &Geometry {
        let n = self.used;
        let mut i = self.last;
        for _ in 0..n {
            i += 1;
            if i >= n {
                i = 0;
            }
            if self.entries[i].0 == *key {
                self.last = i;
                return &self.entries[i].1;
            }
        }
        self.insert(key)
    }

    #[cold]
    fn insert(&mut self, key: &GeometryKey) -> &Geometry {
        let i = self.next;
        self.entries[i] = (*key, Geometry::new(key));
        self.last = i;
        self.next = if i + 1 == RECENT { 0 } else { i + 1 };
        self.used = (self.used + 1).min(RECENT);
        &self.entries[i].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::promql::functions::window::WindowCursor;

    /// Prometheus 2.42's `extrapolatedRate`, written plainly (every division done).
    fn reference_rate(
        w: &[(i64, f64)],
        range_start: i64,
        range_end: i64,
        is_counter: bool,
        is_rate: bool,
    ) -> Option<f64> {
        if w.len() < 2 {
            return None;
        }
        let (first, last) = (w[0], w[w.len() - 1]);
        let mut result = last.1 - first.1;
        if is_counter {
            let mut prev = 0.0;
            for p in w {
                if p.1 < prev {
                    result += prev;
                }
                prev = p.1;
            }
        }
        let mut duration_to_start = (first.0 - range_start) as f64 / 1000.0;
        let duration_to_end = (range_end - last.0) as f64 / 1000.0;
        let sampled = (last.0 - first.0) as f64 / 1000.0;
        let avg_between = sampled / (w.len() - 1) as f64;
        if is_counter && result > 0.0 && first.1 >= 0.0 {
            let to_zero = sampled * (first.1 / result);
            if to_zero < duration_to_start {
                duration_to_start = to_zero;
            }
        }
        let threshold = avg_between * 1.1;
        let mut interval = sampled;
        interval += if duration_to_start < threshold {
            duration_to_start
        } else {
            avg_between / 2.0
        };
        interval += if duration_to_end < threshold {
            duration_to_end
        } else {
            avg_between / 2.0
        };
        let mut factor = interval / sampled;
        if is_rate {
            factor /= (range_end - range_start) as f64 / 1000.0;
        }
        Some(result * factor)
    }

    /// The memos of [`RateSecs`] shared across steps (windows cycling through a few
    /// alignments, jittered samples, counter resets, counters starting near zero so
    /// that the zero-point bound matters), the reset cursor's hint and the skipped
    /// zero-point division give bit for bit what the plain computation gives.
    #[test]
    fn remembered_divisions_are_bit_identical() {
        for shift in [0.0, 1e-3, 7.5, 1e6] {
            let pts: Vec<(i64, f64)> = (0..400i64)
                .map(|k| {
                    let t = k * 60_000 + if k % 17 == 0 { 1_234 } else { 0 };
                    let v = if k % 97 == 50 {
                        3.0
                    } else {
                        (k % 150) as f64 * 0.37 + shift
                    };
                    (t, v)
                })
                .collect();
            for (range, step) in [
                (300_000i64, 15_000i64),
                (300_000, 60_000),
                (3_600_000, 15_000),
                (120_000, 7_000),
            ] {
                for (counter, rate) in [(true, true), (true, false), (false, false)] {
                    let mut shared = RateSecs::default();
                    let mut cursor = WindowCursor::default();
                    let mut resets = ResetCursor::default();
                    let mut t = range;
                    while t <= 400 * 60_000 {
                        let (lo, hi) = cursor.advance(&pts, t - range, t);
                        let w = &pts[lo..hi];
                        let no_resets = lo >= hi || !resets.any(&pts, lo, hi);
                        let a = extrapolated_rate_hinted(w, t - range, t, counter, rate, no_resets, &mut shared);
                        let b = reference_rate(w, t - range, t, counter, rate);
                        assert_eq!(
                            a.map(f64::to_bits),
                            b.map(f64::to_bits),
                            "shift {shift} range {range} step {step} t {t}"
                        );
                        t += step;
                    }
                }
            }
        }
    }
}
