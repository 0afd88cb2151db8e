//! One series' samples on their way from storage into a per-series function.
//!
//! Storage lends nanosecond times and raw values ([`SeriesView`]); PromQL works in
//! milliseconds and f64. Range functions want `(time, value)` points without staleness
//! markers, instant selectors want the two columns with the markers. Each gets its
//! shape in one pass over the lent samples: converting to columns first and then
//! zipping them into points wrote and read every sample twice more.

use super::value::{is_stale, STALE_NAN_BITS};
use super::PromError;
use super::NANOS_PER_MILLI;
use crate::model::{Money, ValueKind};
use crate::store::SeriesView;

/// Storage nanoseconds as PromQL milliseconds (floor, as for negative times too).
#[inline(always)]
fn ms(t: i64) -> i64 {
    t.div_euclid(NANOS_PER_MILLI)
}

/// [`ms`] of a time known to be non-negative.
#[inline(always)]
fn ms_nonneg(t: i64) -> i64 {
    debug_assert!(t >= 0);
    (t as u64 / NANOS_PER_MILLI as u64) as i64
}

#[inline(always)]
fn money(raw: u64) -> f64 {
    Money::from_nanos(raw as i64).to_f64()
}

/// One series' samples as a per-series function receives them.
#[derive(Clone, Copy)]
pub(crate) enum SeriesInput<'a> {
    /// As lent by storage.
    View(&'a SeriesView<'a>),
    /// Already times in ms and f64 values (from a source that only scans in order).
    Columns(&'a [i64], &'a [f64]),
}

impl<'a> SeriesInput<'a> {
    /// Times (ms) and values, markers included: the input's own columns, or the view
    /// converted into `ts` / `vals`.
    pub fn columns<'s>(&self, ts: &'s mut Vec<i64>, vals: &'s mut Vec<f64>) -> Result<(&'s [i64], &'s [f64]), PromError>
    where
        'a: 's,
    {
        match *self {
            SeriesInput::View(s) => {
                convert_view(s, ts, vals)?;
                Ok((ts, vals))
            }
            SeriesInput::Columns(t, v) => Ok((t, v)),
        }
    }

    /// The `(time ms, value)` points without staleness markers, into `out` (cleared
    /// first): what range functions read.
    pub fn points(&self, out: &mut Vec<(i64, f64)>) -> Result<(), PromError> {
        out.clear();
        match *self {
            SeriesInput::View(s) => {
                check_lengths(s)?;
                // Sorted times: all of them are non-negative when the first is, and
                // then an unsigned division (a multiply and a shift) does.
                let nonneg = s.ts.first().is_none_or(|&t| t >= 0);
                match s.kind.value {
                    ValueKind::Float => {
                        // Markers are rare: one exact-size pass notes whether there was
                        // one (filtering as it goes pushed point by point, checking
                        // capacity and storing the length each time), and only then a
                        // second pass drops them.
                        let mut stale = false;
                        let mut point = |(&t, &v): (&i64, &u64)| {
                            stale |= v == STALE_NAN_BITS;
                            (t, f64::from_bits(v))
                        };
                        if nonneg {
                            out.extend(s.ts.iter().zip(s.raw).map(|p| {
                                let (t, v) = point(p);
                                (ms_nonneg(t), v)
                            }));
                        } else {
                            out.extend(s.ts.iter().zip(s.raw).map(|p| {
                                let (t, v) = point(p);
                                (ms(t), v)
                            }));
                        }
                        if stale {
                            out.retain(|p| !is_stale(p.1));
                        }
                    }
                    // Money values are integers: never a staleness marker.
                    ValueKind::Money if nonneg => {
                        out.extend(s.ts.iter().zip(s.raw).map(|(&t, &v)| (ms_nonneg(t), money(v))))
                    }
                    ValueKind::Money => out.extend(s.ts.iter().zip(s.raw).map(|(&t, &v)| (ms(t), money(v)))),
                }
            }
            SeriesInput::Columns(ts, vals) => out.extend(
                ts.iter()
                    .zip(vals)
                    .filter(|(_, v)| !is_stale(**v))
                    .map(|(t, v)| (*t, *v)),
            ),
        }
        Ok(())
    }
}

fn check_lengths(s: &SeriesView<'_>) -> Result<(), PromError> {
    if s.raw.len() != s.ts.len() {
        return Err(PromError::Storage(format!(
            "series {} has {} timestamps but {} values",
            s.labels,
            s.ts.len(),
            s.raw.len()
        )));
    }
    Ok(())
}

/// Converts one series' samples to times in ms and f64 values in `ts_ms` / `vals`.
pub(crate) fn convert_view(s: &SeriesView<'_>, ts_ms: &mut Vec<i64>, vals: &mut Vec<f64>) -> Result<(), PromError> {
    check_lengths(s)?;
    ts_ms.clear();
    ts_ms.extend(s.ts.iter().map(|&t| ms(t)));
    vals.clear();
    s.extend_f64(vals);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Labels, SeriesKind};

    /// Points straight from a view equal columns zipped with markers dropped, for both
    /// value kinds and negative times.
    #[test]
    fn points_equal_converted_columns_without_markers() {
        let labels = Labels::empty();
        let signed = [-1_500_000i64, -1, 0, 999_999, 1_000_000, 7_000_123_456];
        let nonneg = [0i64, 1, 999_999, 1_000_000, 1_999_999, i64::MAX];
        let floats = [
            1.5f64.to_bits(),
            STALE_NAN_BITS,
            f64::NAN.to_bits(),
            (-0.0f64).to_bits(),
            3.0f64.to_bits(),
            STALE_NAN_BITS,
        ];
        let moneys = [5_000_000_000u64, (-1i64) as u64, 0, STALE_NAN_BITS, 1, 42];
        let cases = [signed, nonneg]
            .into_iter()
            .flat_map(|ts| [(ts, SeriesKind::GAUGE, floats), (ts, SeriesKind::MONEY, moneys)]);
        for (ts, kind, raw) in cases {
            let view = SeriesView {
                labels: &labels,
                kind,
                ts: &ts,
                raw: &raw,
            };
            let (mut t, mut v) = (Vec::new(), Vec::new());
            convert_view(&view, &mut t, &mut v).unwrap();
            let want: Vec<(i64, u64)> = t
                .iter()
                .zip(&v)
                .filter(|(_, v)| !is_stale(**v))
                .map(|(t, v)| (*t, v.to_bits()))
                .collect();
            let mut pts = Vec::new();
            SeriesInput::View(&view).points(&mut pts).unwrap();
            let got: Vec<(i64, u64)> = pts.iter().map(|(t, v)| (*t, v.to_bits())).collect();
            assert_eq!(got, want, "{kind:?} {ts:?}");
            let mut again = Vec::new();
            SeriesInput::Columns(&t, &v).points(&mut again).unwrap();
            assert_eq!(again.iter().map(|(t, v)| (*t, v.to_bits())).collect::<Vec<_>>(), want);
        }
        assert_eq!(ms(-1), -1);
        assert_eq!(ms(-1_500_000), -2);
    }

    #[test]
    fn mismatched_columns_are_an_error() {
        let labels = Labels::empty();
        let view = SeriesView {
            labels: &labels,
            kind: SeriesKind::GAUGE,
            ts: &[1, 2],
            raw: &[0],
        };
        assert!(SeriesInput::View(&view).points(&mut Vec::new()).is_err());
    }
}
