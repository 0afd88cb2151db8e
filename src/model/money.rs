//! Exact money: integer nano-units of a currency.
//!
//! A single sample is an `i64` count of 1e-9 currency units (±9.2 billion units per
//! sample); sums are carried in `i128` so that no realistic total can overflow.
//! Nothing here goes through floating point except the explicit `to_f64` rendering.

use std::fmt;
use std::str::FromStr;

/// Nano-units per currency unit.
pub const NANOS_PER_UNIT: i64 = 1_000_000_000;
const SCALE_DIGITS: usize = 9;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum MoneyError {
    #[error("invalid decimal {0:?}: expected digits with an optional sign and decimal point")]
    Invalid(String),
    #[error("decimal {0:?} has more than 9 fractional digits (tally stores nano-units exactly)")]
    TooPrecise(String),
    #[error("decimal {0:?} is out of range (|value| must be below 9.2e9)")]
    OutOfRange(String),
}

/// One exact amount in nano-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(pub i64);

impl Money {
    pub const ZERO: Money = Money(0);

    pub fn from_nanos(n: i64) -> Money {
        Money(n)
    }

    pub fn nanos(self) -> i64 {
        self.0
    }

    /// The float rendering used by PromQL (f64 by nature).
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / NANOS_PER_UNIT as f64
    }

    pub fn checked_add(self, o: Money) -> Option<Money> {
        self.0.checked_add(o.0).map(Money)
    }

    /// Exact product of a quantity and a unit price, both decimals given in nano-units.
    /// Rounds half away from zero to a nano-unit (the only rounding, at 1e-9).
    pub fn mul_decimal(qty_nanos: i64, price: Money) -> Option<Money> {
        let p = qty_nanos as i128 * price.0 as i128;
        let scale = NANOS_PER_UNIT as i128;
        let q = p / scale;
        let r = p % scale;
        let rounded = if r.abs() * 2 >= scale { q + p.signum() } else { q };
        i64::try_from(rounded).ok().map(Money)
    }
}

impl FromStr for Money {
    type Err = MoneyError;

    /// Parses `-12.345`, `+7`, `0.000000001`; no exponents, at most 9 fractional digits.
    fn from_str(s: &str) -> Result<Money, MoneyError> {
        parse_nanos(s).map(Money)
    }
}

fn parse_nanos(s: &str) -> Result<i64, MoneyError> {
    let t = s.trim();
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|c| c.is_ascii_digit())
        || !frac_part.bytes().all(|c| c.is_ascii_digit())
    {
        return Err(MoneyError::Invalid(s.to_string()));
    }
    let frac_trimmed = frac_part.trim_end_matches('0');
    if frac_trimmed.len() > SCALE_DIGITS {
        return Err(MoneyError::TooPrecise(s.to_string()));
    }
    let range = || MoneyError::OutOfRange(s.to_string());
    let mut units: i128 = 0;
    for c in int_part.bytes() {
        units = units * 10 + (c - b'0') as i128;
        if units > i64::MAX as i128 {
            return Err(range());
        }
    }
    let mut frac: i128 = 0;
    for i in 0..SCALE_DIGITS {
        let d = frac_trimmed.as_bytes().get(i).map_or(0, |c| (c - b'0') as i128);
        frac = frac * 10 + d;
    }
    let total = units * NANOS_PER_UNIT as i128 + frac;
    let total = if neg { -total } else { total };
    i64::try_from(total).map_err(|_| range())
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_decimal(f, self.0 as i128)
    }
}

/// An exact running total of money samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MoneySum(pub i128);

impl MoneySum {
    pub fn add(&mut self, m: Money) {
        self.0 += m.0 as i128;
    }

    pub fn nanos(self) -> i128 {
        self.0
    }

    pub fn to_f64(self) -> f64 {
        self.0 as f64 / NANOS_PER_UNIT as f64
    }
}

impl fmt::Display for MoneySum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_decimal(f, self.0)
    }
}

impl std::iter::Sum<Money> for MoneySum {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> MoneySum {
        let mut s = MoneySum::default();
        for m in iter {
            s.add(m);
        }
        s
    }
}

/// Canonical decimal text: no trailing fractional zeros, no exponent.
fn write_decimal(f: &mut fmt::Formatter<'_>, nanos: i128) -> fmt::Result {
    let neg = nanos < 0;
    let a = nanos.unsigned_abs();
    let scale = NANOS_PER_UNIT as u128;
    let (units, frac) = (a / scale, a % scale);
    if neg {
        f.write_str("-")?;
    }
    write!(f, "{units}")?;
    if frac != 0 {
        let s = format!("{frac:09}");
        write!(f, ".{}", s.trim_end_matches('0'))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_render_roundtrip() {
        for (s, n, out) in [
            ("1", 1_000_000_000, "1"),
            ("-0.5", -500_000_000, "-0.5"),
            ("0.000000001", 1, "0.000000001"),
            ("12.340000000000", 12_340_000_000, "12.34"),
            ("+.25", 250_000_000, "0.25"),
        ] {
            let m: Money = s.parse().unwrap();
            assert_eq!(m.nanos(), n, "{s}");
            assert_eq!(m.to_string(), out);
        }
    }

    #[test]
    fn rejects_bad_decimals() {
        assert!(matches!("1e5".parse::<Money>(), Err(MoneyError::Invalid(_))));
        assert!(matches!("".parse::<Money>(), Err(MoneyError::Invalid(_))));
        assert!(matches!(
            "0.0000000001".parse::<Money>(),
            Err(MoneyError::TooPrecise(_))
        ));
        assert!(matches!("99999999999".parse::<Money>(), Err(MoneyError::OutOfRange(_))));
    }

    #[test]
    fn exact_product() {
        // 3.5 units at 0.000123 per unit = 0.0004305
        let q = "3.5".parse::<Money>().unwrap().nanos();
        let p: Money = "0.000123".parse().unwrap();
        assert_eq!(Money::mul_decimal(q, p).unwrap().to_string(), "0.0004305");
    }

    #[test]
    fn sums_are_exact_where_floats_drift() {
        let tenth: Money = "0.1".parse().unwrap();
        let s: MoneySum = std::iter::repeat_n(tenth, 1_000_000).sum();
        assert_eq!(s.to_string(), "100000");
    }
}
