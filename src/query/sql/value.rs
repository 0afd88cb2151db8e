//! Scalar values and types of the SQL engine, and the one definition of their
//! semantics (arithmetic, comparison, time functions) that every execution path uses.
//!
//! DECIMAL is exact: an `i128` count of nano-units (scale 9), like [`crate::model::Money`].

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Utc};

use super::SqlError;

/// Nano-units per unit for DECIMAL(38, 9).
pub const SCALE: i128 = 1_000_000_000;
pub const NS_PER_SEC: i64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type {
    Null,
    Bool,
    Int,
    Float,
    /// DECIMAL(38, 9) — exact money.
    Dec,
    Str,
    /// TIMESTAMP in UTC nanoseconds.
    Ts,
    /// A fixed-length interval in nanoseconds.
    Interval,
}

impl Type {
    pub fn sql_name(self) -> &'static str {
        match self {
            Type::Null => "NULL",
            Type::Bool => "BOOLEAN",
            Type::Int => "BIGINT",
            Type::Float => "DOUBLE",
            Type::Dec => "DECIMAL(38,9)",
            Type::Str => "VARCHAR",
            Type::Ts => "TIMESTAMP",
            Type::Interval => "INTERVAL",
        }
    }

    pub fn is_numeric(self) -> bool {
        matches!(self, Type::Int | Type::Float | Type::Dec | Type::Null)
    }

    /// The common type of two branches (CASE, IN lists, comparisons), if any.
    pub fn unify(a: Type, b: Type) -> Option<Type> {
        use Type::*;
        Some(match (a, b) {
            (x, y) if x == y => x,
            (Null, x) | (x, Null) => x,
            (Int, Float) | (Float, Int) | (Dec, Float) | (Float, Dec) => Float,
            (Int, Dec) | (Dec, Int) => Dec,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub enum Val {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Dec(i128),
    Str(Arc<str>),
    Ts(i64),
    Interval(i64),
}

impl Val {
    pub fn ty(&self) -> Type {
        match self {
            Val::Null => Type::Null,
            Val::Bool(_) => Type::Bool,
            Val::Int(_) => Type::Int,
            Val::Float(_) => Type::Float,
            Val::Dec(_) => Type::Dec,
            Val::Str(_) => Type::Str,
            Val::Ts(_) => Type::Ts,
            Val::Interval(_) => Type::Interval,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }

    pub fn str(s: &str) -> Val {
        Val::Str(Arc::from(s))
    }

    /// Three-valued truth: `None` is SQL NULL.
    pub fn truth(&self) -> Option<bool> {
        match self {
            Val::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Float(f) => Some(*f),
            Val::Dec(d) => Some(dec_to_f64(*d)),
            _ => None,
        }
    }

    fn as_dec(&self) -> Option<i128> {
        match self {
            Val::Int(i) => Some(*i as i128 * SCALE),
            Val::Dec(d) => Some(*d),
            _ => None,
        }
    }

    /// Converts to `ty` (numeric widening only; used to give a column one type).
    pub fn cast_to(self, ty: Type) -> Val {
        match (ty, &self) {
            (Type::Float, Val::Int(_) | Val::Dec(_)) => Val::Float(self.as_f64().unwrap_or(f64::NAN)),
            (Type::Dec, Val::Int(i)) => Val::Dec(*i as i128 * SCALE),
            _ => self,
        }
    }
}

pub fn dec_to_f64(d: i128) -> f64 {
    let (q, r) = (d / SCALE, d % SCALE);
    q as f64 + r as f64 / SCALE as f64
}

/// Division rounding half away from zero (the only rounding DECIMAL ever does, at 1e-9).
pub fn div_round(n: i128, d: i128) -> i128 {
    let q = n / d;
    let r = n % d;
    if r != 0 && r.unsigned_abs() * 2 >= d.unsigned_abs() {
        q + if (n < 0) == (d < 0) { 1 } else { -1 }
    } else {
        q
    }
}

/// Equality and hashing for grouping keys: floats by bit pattern (with -0.0 == 0.0).
impl PartialEq for Val {
    fn eq(&self, o: &Val) -> bool {
        use Val::*;
        match (self, o) {
            (Null, Null) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) | (Ts(a), Ts(b)) | (Interval(a), Interval(b)) => a == b,
            (Float(a), Float(b)) => norm(*a) == norm(*b),
            (Dec(a), Dec(b)) => a == b,
            (Str(a), Str(b)) => a == b,
            _ => false,
        }
    }
}
impl Eq for Val {}

fn norm(f: f64) -> u64 {
    if f == 0.0 {
        0
    } else if f.is_nan() {
        f64::NAN.to_bits()
    } else {
        f.to_bits()
    }
}

impl Hash for Val {
    fn hash<H: Hasher>(&self, h: &mut H) {
        std::mem::discriminant(self).hash(h);
        match self {
            Val::Null => {}
            Val::Bool(b) => b.hash(h),
            Val::Int(i) | Val::Ts(i) | Val::Interval(i) => i.hash(h),
            Val::Float(f) => norm(*f).hash(h),
            Val::Dec(d) => d.hash(h),
            Val::Str(s) => s.hash(h),
        }
    }
}

/// SQL comparison of two non-null values of comparable types; `None` if incomparable or NULL.
pub fn compare(a: &Val, b: &Val) -> Option<Ordering> {
    use Val::*;
    match (a, b) {
        (Null, _) | (_, Null) => None,
        (Int(x), Int(y)) | (Ts(x), Ts(y)) | (Interval(x), Interval(y)) => Some(x.cmp(y)),
        (Dec(_) | Int(_), Dec(_) | Int(_)) => Some(a.as_dec()?.cmp(&b.as_dec()?)),
        (Float(_), _) | (_, Float(_)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Str(x), Str(y)) => Some(x.cmp(y)),
        (Bool(x), Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Total order for ORDER BY: NULLs compare greater than everything (NULLS LAST for ASC).
pub fn order(a: &Val, b: &Val) -> Ordering {
    match (a.is_null(), b.is_null()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => compare(a, b).unwrap_or_else(|| match (a, b) {
            (Val::Float(x), Val::Float(y)) => x.total_cmp(y),
            _ => a.ty().sql_name().cmp(b.ty().sql_name()),
        }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

impl ArithOp {
    pub fn symbol(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
            ArithOp::Mod => "%",
        }
    }
}

/// Result type of `a op b`, or `None` when the operation is not defined.
pub fn arith_type(op: ArithOp, a: Type, b: Type) -> Option<Type> {
    use Type::*;
    Some(match (a, b) {
        (Null, x) | (x, Null) if x.is_numeric() || matches!(x, Ts | Interval) => match (op, x) {
            (ArithOp::Div, Int) => Float,
            _ => x,
        },
        (Int, Int) => {
            if op == ArithOp::Div {
                Float
            } else {
                Int
            }
        }
        (Float, Int | Float | Dec) | (Int | Dec, Float) => Float,
        (Dec, Dec | Int) | (Int, Dec) => Dec,
        (Ts, Ts) if op == ArithOp::Sub => Interval,
        (Ts, Interval) if matches!(op, ArithOp::Add | ArithOp::Sub) => Ts,
        (Interval, Ts) if op == ArithOp::Add => Ts,
        (Interval, Interval) if matches!(op, ArithOp::Add | ArithOp::Sub) => Interval,
        (Interval, Int) | (Int, Interval) if op == ArithOp::Mul => Interval,
        (Interval, Int) if op == ArithOp::Div => Interval,
        _ => return None,
    })
}

fn overflow(op: ArithOp) -> SqlError {
    SqlError::Exec(format!("numeric overflow in `{}`", op.symbol()))
}

/// `a op b` on scalars. Division by zero yields NULL (as in DuckDB).
pub fn arith(op: ArithOp, a: &Val, b: &Val) -> Result<Val, SqlError> {
    use Val::*;
    if a.is_null() || b.is_null() {
        return Ok(Null);
    }
    let ov = || overflow(op);
    Ok(match (a, b) {
        (Int(x), Int(y)) => match op {
            ArithOp::Add => Int(x.checked_add(*y).ok_or_else(ov)?),
            ArithOp::Sub => Int(x.checked_sub(*y).ok_or_else(ov)?),
            ArithOp::Mul => Int(x.checked_mul(*y).ok_or_else(ov)?),
            ArithOp::Div if *y == 0 => Null,
            ArithOp::Div => Float(*x as f64 / *y as f64),
            ArithOp::Mod if *y == 0 => Null,
            ArithOp::Mod => Int(x.wrapping_rem(*y)),
        },
        (Float(_), Int(_) | Float(_) | Dec(_)) | (Int(_) | Dec(_), Float(_)) => {
            let (x, y) = (a.as_f64().unwrap_or(f64::NAN), b.as_f64().unwrap_or(f64::NAN));
            match op {
                ArithOp::Add => Float(x + y),
                ArithOp::Sub => Float(x - y),
                ArithOp::Mul => Float(x * y),
                ArithOp::Div if y == 0.0 => Null,
                ArithOp::Div => Float(x / y),
                ArithOp::Mod if y == 0.0 => Null,
                ArithOp::Mod => Float(x % y),
            }
        }
        (Dec(_) | Int(_), Dec(_) | Int(_)) => {
            let (x, y) = (a.as_dec().unwrap_or(0), b.as_dec().unwrap_or(0));
            match op {
                ArithOp::Add => Dec(x.checked_add(y).ok_or_else(ov)?),
                ArithOp::Sub => Dec(x.checked_sub(y).ok_or_else(ov)?),
                ArithOp::Mul => {
                    // Exact when one side is an integer; otherwise rounded at 1e-9.
                    if let Int(i) = a {
                        Dec(y.checked_mul(*i as i128).ok_or_else(ov)?)
                    } else if let Int(i) = b {
                        Dec(x.checked_mul(*i as i128).ok_or_else(ov)?)
                    } else {
                        Dec(div_round(x.checked_mul(y).ok_or_else(ov)?, SCALE))
                    }
                }
                ArithOp::Div if y == 0 => Null,
                ArithOp::Div => Dec(div_round(x.checked_mul(SCALE).ok_or_else(ov)?, y)),
                ArithOp::Mod if y == 0 => Null,
                ArithOp::Mod => Dec(x % y),
            }
        }
        (Ts(t), Ts(u)) if op == ArithOp::Sub => Interval(t.checked_sub(*u).ok_or_else(ov)?),
        (Ts(t), Interval(i)) | (Interval(i), Ts(t)) => match op {
            ArithOp::Add => Ts(t.checked_add(*i).ok_or_else(ov)?),
            ArithOp::Sub if matches!(a, Ts(_)) => Ts(t.checked_sub(*i).ok_or_else(ov)?),
            _ => return Err(type_err(op, a, b)),
        },
        (Interval(x), Interval(y)) => match op {
            ArithOp::Add => Interval(x.checked_add(*y).ok_or_else(ov)?),
            ArithOp::Sub => Interval(x.checked_sub(*y).ok_or_else(ov)?),
            _ => return Err(type_err(op, a, b)),
        },
        (Interval(x), Int(y)) | (Int(y), Interval(x)) if op == ArithOp::Mul => {
            Interval(x.checked_mul(*y).ok_or_else(ov)?)
        }
        (Interval(x), Int(y)) if op == ArithOp::Div => {
            if *y == 0 {
                Null
            } else {
                Interval(x / y)
            }
        }
        _ => return Err(type_err(op, a, b)),
    })
}

fn type_err(op: ArithOp, a: &Val, b: &Val) -> SqlError {
    SqlError::Exec(format!(
        "operator `{}` is not defined for {} and {}",
        op.symbol(),
        a.ty().sql_name(),
        b.ty().sql_name()
    ))
}

/// SQL LIKE with `%` and `_` (no escape character), compiled to a regex.
pub fn like_regex(pattern: &str, case_insensitive: bool) -> Result<regex::Regex, SqlError> {
    let mut re = String::from(if case_insensitive { "(?is)^" } else { "(?s)^" });
    for c in pattern.chars() {
        match c {
            '%' => re.push_str(".*"),
            '_' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|e| SqlError::Exec(format!("LIKE pattern {pattern:?}: {e}")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TruncUnit {
    Minute,
    Hour,
    Day,
    Week,
    Month,
}

impl TruncUnit {
    pub fn parse(s: &str) -> Option<TruncUnit> {
        Some(match s.to_ascii_lowercase().as_str() {
            "minute" => TruncUnit::Minute,
            "hour" => TruncUnit::Hour,
            "day" => TruncUnit::Day,
            "week" => TruncUnit::Week,
            "month" => TruncUnit::Month,
            _ => return None,
        })
    }

    /// The fixed width in ns, for all but `month`.
    pub fn fixed_width(self) -> Option<i64> {
        Some(match self {
            TruncUnit::Minute => 60 * NS_PER_SEC,
            TruncUnit::Hour => 3600 * NS_PER_SEC,
            TruncUnit::Day => 86_400 * NS_PER_SEC,
            TruncUnit::Week | TruncUnit::Month => return None,
        })
    }
}

/// `date_trunc(unit, ts)` in UTC (weeks start on Monday, as in ISO 8601).
pub fn date_trunc(unit: TruncUnit, ts: i64) -> i64 {
    if let Some(w) = unit.fixed_width() {
        return ts.div_euclid(w) * w;
    }
    let day = 86_400 * NS_PER_SEC;
    match unit {
        // 1970-01-01 was a Thursday: shift by 3 days so buckets start on Mondays.
        TruncUnit::Week => (ts + 3 * day).div_euclid(7 * day) * 7 * day - 3 * day,
        _ => month_start(ts),
    }
}

/// Start of the UTC month containing `ts`.
pub fn month_start(ts: i64) -> i64 {
    let dt = Utc.timestamp_nanos(ts);
    NaiveDate::from_ymd_opt(dt.year(), dt.month(), 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(|d| d.and_utc().timestamp_nanos_opt())
        .unwrap_or(ts)
}

/// Start of the month after the one starting at `start` (both UTC ns).
pub fn next_month(start: i64) -> i64 {
    let dt = Utc.timestamp_nanos(start);
    let (y, m) = if dt.month() == 12 {
        (dt.year() + 1, 1)
    } else {
        (dt.year(), dt.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(|d| d.and_utc().timestamp_nanos_opt())
        .unwrap_or(i64::MAX)
}

/// `time_bucket(width, ts)`: floor to a multiple of `width` since the epoch.
pub fn time_bucket(width: i64, ts: i64) -> i64 {
    ts.div_euclid(width) * width
}

/// Parses `2026-10-01`, `2026-10-01 12:00:00[.fff]`, RFC 3339 (`...T...Z`, offsets).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let t = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return dt.timestamp_nanos_opt();
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(t.trim_end_matches('Z'), f) {
            return dt.and_utc().timestamp_nanos_opt();
        }
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(|d| d.and_utc().timestamp_nanos_opt())
}

/// Parses a month `2026-10` into `[start, end)` in UTC ns.
pub fn parse_month(s: &str) -> Option<(i64, i64)> {
    let start = parse_timestamp(&format!("{}-01", s.trim()))?;
    (month_start(start) == start).then(|| (start, next_month(start)))
}

/// RFC 3339 in UTC with as many fractional digits as needed.
pub fn format_ts(ts: i64) -> String {
    Utc.timestamp_nanos(ts)
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Parses an interval such as `7 days`, `1 hour 30 minutes`, `15m`, `1 day`.
pub fn parse_interval(s: &str, unit: Option<&str>) -> Result<i64, String> {
    let text = match unit {
        Some(u) => format!("{s} {u}"),
        None => s.to_string(),
    };
    let mut total: i64 = 0;
    let mut toks = text.split_whitespace().peekable();
    let mut any = false;
    while let Some(tok) = toks.next() {
        let split = tok
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
            .unwrap_or(tok.len());
        let (num, mut u) = (&tok[..split], tok[split..].to_string());
        if u.is_empty() {
            u = toks
                .next()
                .ok_or_else(|| format!("interval {text:?}: missing unit after {num}"))?
                .to_string();
        }
        let n: f64 = num
            .parse()
            .map_err(|_| format!("interval {text:?}: bad number {num:?}"))?;
        let width: i64 = match u.to_ascii_lowercase().trim_end_matches('s') {
            "n" | "ns" | "nanosecond" => 1,
            "u" | "us" | "microsecond" => 1_000,
            "m" if u == "ms" => 1_000_000,
            "millisecond" => 1_000_000,
            "" | "sec" | "second" => NS_PER_SEC,
            "m" | "min" | "minute" => 60 * NS_PER_SEC,
            "h" | "hour" => 3600 * NS_PER_SEC,
            "d" | "day" => 86_400 * NS_PER_SEC,
            "w" | "week" => 7 * 86_400 * NS_PER_SEC,
            "month" | "mon" | "year" | "y" => {
                return Err(format!(
                    "interval {text:?}: months and years have no fixed length; use date_trunc('month', ts) or days"
                ))
            }
            other => return Err(format!("interval {text:?}: unknown unit {other:?}")),
        };
        total = total
            .checked_add((n * width as f64).round() as i64)
            .ok_or_else(|| format!("interval {text:?} overflows"))?;
        any = true;
    }
    if !any {
        return Err(format!("empty interval {text:?}"));
    }
    Ok(total)
}

/// Text rendering (CSV, tables): decimals exact, timestamps RFC 3339.
impl fmt::Display for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Null => Ok(()),
            Val::Bool(b) => write!(f, "{b}"),
            Val::Int(i) => write!(f, "{i}"),
            Val::Float(x) => write!(f, "{x}"),
            Val::Dec(d) => f.write_str(&format_dec(*d)),
            Val::Str(s) => f.write_str(s),
            Val::Ts(t) => f.write_str(&format_ts(*t)),
            Val::Interval(i) => write!(
                f,
                "{}",
                humantime::format_duration(std::time::Duration::from_nanos(i.unsigned_abs()))
            ),
        }
    }
}

/// Canonical decimal text of nano-units (no exponent, trailing zeros trimmed).
pub fn format_dec(d: i128) -> String {
    let a = d.unsigned_abs();
    let (u, fr) = (a / SCALE as u128, a % SCALE as u128);
    let sign = if d < 0 { "-" } else { "" };
    if fr == 0 {
        format!("{sign}{u}")
    } else {
        let s = format!("{fr:09}");
        format!("{sign}{u}.{}", s.trim_end_matches('0'))
    }
}

/// Parses a numeric literal exactly: integers as BIGINT, `1.25` as DECIMAL, exponents as DOUBLE.
pub fn parse_number(s: &str) -> Option<Val> {
    if let Ok(i) = s.parse::<i64>() {
        return Some(Val::Int(i));
    }
    if !s.contains(['e', 'E']) {
        if let Ok(m) = s.parse::<crate::model::Money>() {
            return Some(Val::Dec(m.nanos() as i128));
        }
    }
    s.parse::<f64>().ok().map(Val::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_arith_is_exact() {
        let a = Val::Dec(100_000_000); // 0.1
        let mut s = Val::Dec(0);
        for _ in 0..10 {
            s = arith(ArithOp::Add, &s, &a).unwrap();
        }
        assert_eq!(s, Val::Dec(SCALE));
        assert_eq!(
            arith(ArithOp::Div, &Val::Dec(SCALE), &Val::Int(3)).unwrap(),
            Val::Dec(333_333_333)
        );
        assert_eq!(
            arith(ArithOp::Div, &Val::Dec(2 * SCALE), &Val::Int(3)).unwrap(),
            Val::Dec(666_666_667)
        );
    }

    #[test]
    fn time_helpers() {
        let t = parse_timestamp("2026-10-15T13:45:00Z").unwrap();
        assert_eq!(format_ts(date_trunc(TruncUnit::Month, t)), "2026-10-01T00:00:00Z");
        assert_eq!(format_ts(date_trunc(TruncUnit::Day, t)), "2026-10-15T00:00:00Z");
        assert_eq!(format_ts(date_trunc(TruncUnit::Week, t)), "2026-10-12T00:00:00Z");
        assert_eq!(parse_interval("7 days", None).unwrap(), 7 * 86_400 * NS_PER_SEC);
        assert_eq!(parse_interval("1", Some("HOUR")).unwrap(), 3600 * NS_PER_SEC);
        assert!(parse_interval("1 month", None).is_err());
        let (s, e) = parse_month("2026-12").unwrap();
        assert_eq!(format_ts(s), "2026-12-01T00:00:00Z");
        assert_eq!(format_ts(e), "2027-01-01T00:00:00Z");
    }
}
