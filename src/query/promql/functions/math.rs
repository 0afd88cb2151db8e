//! Element-wise functions: math, trigonometry, clamping, rounding and the calendar
//! functions (`hour`, `month`, …; UTC). Min/max follow Go's `math.Max`/`math.Min`
//! (NaN wins), which is what Prometheus computes with.

use promql_parser::parser::Expr;

use super::{arg, map_values};
use crate::query::promql::engine::{Ctx, Range};
use crate::query::promql::value::{Elem, Val};
use crate::query::promql::PromError;

/// Go's `math.Max`: +Inf wins, then NaN, then the larger.
pub(crate) fn go_max(a: f64, b: f64) -> f64 {
    if a == f64::INFINITY || b == f64::INFINITY {
        f64::INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a > b {
        a
    } else {
        b
    }
}

/// Go's `math.Min`: -Inf wins, then NaN, then the smaller.
pub(crate) fn go_min(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY || b == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a < b {
        a
    } else {
        b
    }
}

fn simple(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => |v| v * 180.0 / std::f64::consts::PI,
        "rad" => |v| v * std::f64::consts::PI / 180.0,
        "sgn" => |v: f64| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        },
        _ => return None,
    })
}

pub(super) fn eval(ctx: &Ctx, name: &str, args: &[&Expr], rng: &Range) -> Result<Val, PromError> {
    if let Some(f) = simple(name) {
        let steps = ctx.eval_vector(arg(args, 0)?, rng)?;
        return map_values(steps, |_, v| Some(f(v)));
    }
    if let Some(f) = calendar(name) {
        let steps = match args.first() {
            Some(a) => ctx.eval_vector(a, rng)?,
            None => (0..rng.len())
                .map(|i| {
                    vec![Elem {
                        labels: crate::model::Labels::empty(),
                        v: rng.t(i) as f64 / 1000.0,
                    }]
                })
                .collect(),
        };
        return map_values(steps, |_, v| Some(f(v)));
    }
    let scalar = |i: usize| -> Result<Vec<f64>, PromError> { ctx.eval_scalar(arg(args, i)?, rng) };
    match name {
        "round" => {
            let steps = ctx.eval_vector(arg(args, 0)?, rng)?;
            let to = if args.len() > 1 {
                scalar(1)?
            } else {
                vec![1.0; rng.len()]
            };
            map_values(steps, |i, v| {
                let inv = 1.0 / to[i];
                Some((v * inv + 0.5).floor() / inv)
            })
        }
        "clamp" => {
            let steps = ctx.eval_vector(arg(args, 0)?, rng)?;
            let (lo, hi) = (scalar(1)?, scalar(2)?);
            map_values(steps, |i, v| {
                if hi[i] < lo[i] {
                    None
                } else {
                    Some(go_max(lo[i], go_min(hi[i], v)))
                }
            })
        }
        "clamp_min" => {
            let steps = ctx.eval_vector(arg(args, 0)?, rng)?;
            let lo = scalar(1)?;
            map_values(steps, |i, v| Some(go_max(lo[i], v)))
        }
        "clamp_max" => {
            let steps = ctx.eval_vector(arg(args, 0)?, rng)?;
            let hi = scalar(1)?;
            map_values(steps, |i, v| Some(go_min(hi[i], v)))
        }
        _ => Err(PromError::BadData(format!("unknown function with name {name:?}"))),
    }
}

fn calendar(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "minute" => |v| with_civil(v, |c| c.minute as f64),
        "hour" => |v| with_civil(v, |c| c.hour as f64),
        "day_of_month" => |v| with_civil(v, |c| c.day as f64),
        "day_of_week" => |v| with_civil(v, |c| c.weekday as f64),
        "day_of_year" => |v| with_civil(v, |c| c.yday as f64),
        "days_in_month" => |v| with_civil(v, |c| days_in_month(c.year, c.month) as f64),
        "month" => |v| with_civil(v, |c| c.month as f64),
        "year" => |v| with_civil(v, |c| c.year as f64),
        _ => return None,
    })
}

/// A UTC calendar breakdown of a Unix time.
pub(crate) struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    /// 0 = Sunday.
    pub weekday: u32,
    /// 1-based day of the year.
    pub yday: u32,
}

fn with_civil(v: f64, f: fn(&Civil) -> f64) -> f64 {
    if !v.is_finite() || v.abs() > 1e15 {
        return f64::NAN;
    }
    // Go: time.Unix(int64(v), 0) truncates toward zero.
    f(&civil(v.trunc() as i64))
}

pub(crate) fn civil(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut yday = 0;
    for m in 1..month {
        yday += days_in_month(year, m);
    }
    Civil {
        year,
        month,
        day,
        hour: (sod / 3600) as u32,
        minute: ((sod % 3600) / 60) as u32,
        weekday: (days + 4).rem_euclid(7) as u32,
        yday: yday + day,
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        let c = civil(0);
        assert_eq!((c.year, c.month, c.day, c.weekday, c.yday), (1970, 1, 1, 4, 1));
        // 2020-02-29T13:45:00Z
        let c = civil(1_582_983_900);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.minute, c.weekday, c.yday),
            (2020, 2, 29, 13, 45, 6, 60)
        );
        let c = civil(-1);
        assert_eq!((c.year, c.month, c.day, c.hour), (1969, 12, 31, 23));
    }
}
