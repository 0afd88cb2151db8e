//! Query results as JSON text, exactly as Prometheus 2.42 writes them.
//!
//! A range answer holds tens of thousands of points, so every number is written
//! straight into one output buffer: no `String` per value or timestamp (formatting
//! each value through `format!` cost ~9 ms for a 48k-point answer). Values keep
//! Prometheus's text: `NaN`, `+Inf`, `-Inf`, `-0`, the shortest round-trip digits in
//! fixed notation for `1e-6 <= |v| < 1e21`, and otherwise Go's exponent form with a
//! sign and at least two exponent digits (`1.5e-07`, `2e+21`). The shortest digits
//! come from `ryu` and are laid out here; a proptest checks the text against the
//! formatting through Rust's `Display`/`LowerExp` this replaced.

use crate::model::Labels;
use crate::query::promql::QueryValue;

/// Appends `s` as a JSON string literal.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        // The common case: nothing to escape.
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = std::fmt::Write::write_fmt(out, format_args!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `{"name":"value",...}`.
pub fn write_labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, &l.name);
        out.push(':');
        write_str(out, &l.value);
    }
    out.push('}');
}

/// A timestamp (ms) as Prometheus writes it: seconds with up to 3 decimals.
pub fn write_ts(out: &mut String, t: i64) {
    let (neg, t) = if t < 0 {
        (true, t.unsigned_abs())
    } else {
        (false, t as u64)
    };
    if neg {
        out.push('-');
    }
    out.push_str(itoa::Buffer::new().format(t / 1000));
    let frac = t % 1000;
    if frac != 0 {
        let d = |x: u64| char::from(b'0' + (x % 10) as u8);
        out.push('.');
        out.push(d(frac / 100));
        out.push(d(frac / 10));
        out.push(d(frac));
    }
}

/// A sample value as Prometheus formats it (see the module docs).
pub fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v == 0.0 {
        out.push_str(if v.is_sign_negative() { "-0" } else { "0" });
    } else {
        let mut buf = ryu::Buffer::new();
        let text = buf.format_finite(v);
        if (1e-5..1e16).contains(&v.abs()) {
            // Ryu writes these in fixed notation, as Go does, except for a `.0` after
            // integers. Shorter than 16 characters means fewer than 16 digits, so no
            // tie (see `Decimal::break_tie_up`), nor where the binary value has no
            // decimal expansion that could end in a tie digit.
            let text = text.strip_suffix(".0").unwrap_or(text);
            if text.len() < 16 || !Decimal::may_tie(v) {
                out.push_str(text);
                return;
            }
        }
        match Decimal::parse(text) {
            Some(mut d) => {
                d.break_tie_up(v);
                d.write(out, (1e-6..1e21).contains(&v.abs()))
            }
            // Unreachable (ryu writes finite values in the forms `Decimal` reads); the
            // slow path gives the same text.
            None => out.push_str(&slow_format(v)),
        }
    }
}

/// [`write_value`] into a new string.
pub fn format_value(v: f64) -> String {
    let mut s = String::new();
    write_value(&mut s, v);
    s
}

/// The formatting through `std::fmt` that [`write_value`] replaces: Go's text from
/// Rust's shortest `Display` and `LowerExp`.
fn slow_format(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-6..1e21).contains(&a) {
        // Rust writes `1.5e-7`; Go writes `1.5e-07` (sign and at least two digits).
        let s = format!("{v:e}");
        if let Some((m, e)) = s.split_once('e') {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            return format!("{m}e{sign}{digits:0>2}");
        }
        return s;
    }
    format!("{v}")
}

/// A finite non-zero value as significant digits `0.d1d2…dn × 10^point`.
struct Decimal {
    neg: bool,
    /// ASCII digits, no leading or trailing zeros; `len` of them used.
    digits: [u8; 24],
    len: usize,
    point: i32,
}

impl Decimal {
    /// Reads ryu's text: `-`?, digits with at most one `.`, then `e`exponent or nothing.
    fn parse(s: &str) -> Option<Decimal> {
        let (neg, s) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (mant, exp) = match s.split_once('e') {
            Some((m, e)) => (m, e.parse::<i32>().ok()?),
            None => (s, 0),
        };
        let mut d = Decimal {
            neg,
            digits: [0; 24],
            len: 0,
            point: 0,
        };
        // Digits seen (zeros included), and how many of them precede the `.`.
        let mut seen = 0usize;
        let mut int_len = None;
        for b in mant.bytes() {
            match b {
                b'.' if int_len.is_none() => int_len = Some(seen),
                b'0'..=b'9' => {
                    seen += 1;
                    if d.len == 0 && b == b'0' {
                        // A leading zero moves the point left instead.
                        d.point -= 1;
                        continue;
                    }
                    *d.digits.get_mut(d.len)? = b;
                    d.len += 1;
                }
                _ => return None,
            }
        }
        let int_len = int_len.unwrap_or(seen);
        // Leading zeros were counted as -1 each; the integer part's length (its
        // leading zeros included) moves the point right.
        d.point = d.point.checked_add(i32::try_from(int_len).ok()?)?.checked_add(exp)?;
        while d.len > 0 && d.digits[d.len - 1] == b'0' {
            d.len -= 1;
        }
        (d.len > 0).then_some(d)
    }

    /// When `v` lies exactly halfway between the two nearest candidates of this
    /// length, ryu picks the even last digit; Rust's `Display` (whose text this
    /// keeps) picks the one of larger magnitude. Moves to that one.
    fn break_tie_up(&mut self, v: f64) {
        // A tie needs both neighbours to round-trip, so a decimal spacing at or below
        // the binary one: at least 16 significant digits. Ryu rounded a tie to even.
        let Some(&last) = self.digits[..self.len].last() else {
            return;
        };
        if self.len < 16 || (last - b'0') % 2 != 0 || !self.is_tie(v) {
            return;
        }
        // Add one in the last digit, carrying.
        let mut i = self.len;
        while i > 0 && self.digits[i - 1] == b'9' {
            i -= 1;
        }
        if i == 0 {
            // 99…9 + 1 = 100…0: one digit, one place further left.
            self.digits[0] = b'1';
            self.len = 1;
            self.point += 1;
        } else {
            self.digits[i - 1] += 1;
            self.len = i;
        }
    }

    /// A cheap necessary condition for a tie of a value in `[1e-5, 1e16)`: a tie is
    /// `|v| = M·10^q` with `M` odd and of 17 or 18 digits, so `q` is in `-22..=-1`,
    /// and `|v| = m·2^e` needs `e + trailing_zeros(m) == q` (see [`Self::is_tie`]).
    fn may_tie(v: f64) -> bool {
        let (m, e) = binary(v);
        m != 0 && (-22..=-1).contains(&(e + m.trailing_zeros() as i32))
    }

    /// Whether `|v|` equals exactly these digits followed by a 5, i.e. lies halfway
    /// between this decimal and the next one of the same length. Exact integer
    /// arithmetic: `m·2^e == M·10^q` with `M` odd compares 2-adic valuations and odd
    /// parts.
    fn is_tie(&self, v: f64) -> bool {
        let (m, e) = binary(v);
        if m == 0 {
            return false;
        }
        // The candidate is M·10^q with M = digits·10 + 5.
        let q = self.point - self.len as i32 - 1;
        let tz = m.trailing_zeros() as i32;
        if e + tz != q {
            return false;
        }
        // At most 24 digits + 1: fits u128.
        let mut big: u128 = 0;
        for &d in &self.digits[..self.len] {
            big = big * 10 + u128::from(d - b'0');
        }
        let big = big * 10 + 5;
        let m_odd = u128::from(m >> tz);
        let pow5 = |k: i32| 5u128.checked_pow(k.unsigned_abs());
        if q >= 0 {
            pow5(q).and_then(|p| big.checked_mul(p)) == Some(m_odd)
        } else {
            pow5(q).and_then(|p| m_odd.checked_mul(p)) == Some(big)
        }
    }

    fn write(&self, out: &mut String, fixed: bool) {
        let digits = &self.digits[..self.len];
        // Only ASCII digits were stored.
        let digits = std::str::from_utf8(digits).unwrap_or("");
        if self.neg {
            out.push('-');
        }
        if fixed {
            let p = self.point;
            if p <= 0 {
                out.push_str("0.");
                (0..-p).for_each(|_| out.push('0'));
                out.push_str(digits);
            } else if p as usize >= digits.len() {
                out.push_str(digits);
                (digits.len()..p as usize).for_each(|_| out.push('0'));
            } else {
                let (a, b) = digits.split_at(p as usize);
                out.push_str(a);
                out.push('.');
                out.push_str(b);
            }
        } else {
            let (first, rest) = digits.split_at(1);
            out.push_str(first);
            if !rest.is_empty() {
                out.push('.');
                out.push_str(rest);
            }
            let e = self.point - 1;
            out.push_str(if e < 0 { "e-" } else { "e+" });
            if e.unsigned_abs() < 10 {
                out.push('0');
            }
            out.push_str(itoa::Buffer::new().format(e.unsigned_abs()));
        }
    }
}

/// `|v| = m·2^e` exactly (`m < 2^53`; `m == 0` for zero).
fn binary(v: f64) -> (u64, i32) {
    let bits = v.abs().to_bits();
    let exp_bits = (bits >> 52) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    if exp_bits == 0 {
        (frac, -1074)
    } else {
        (frac | (1u64 << 52), exp_bits - 1075)
    }
}

fn write_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    write_ts(out, t);
    out.push_str(",\"");
    write_value(out, v);
    out.push_str("\"]");
}

/// `{"resultType":...,"result":...}` for a query value.
pub fn render_query_value(v: &QueryValue) -> String {
    let mut out = String::with_capacity(capacity(v));
    write_query_value(&mut out, v);
    out
}

/// The whole success answer `{"status":"success","data":{…}}` for a query value, in
/// one buffer (no copy of the rendered data into an envelope).
pub fn render_success(v: &QueryValue) -> String {
    const HEAD: &str = r#"{"status":"success","data":"#;
    let mut out = String::with_capacity(HEAD.len() + capacity(v) + 1);
    out.push_str(HEAD);
    write_query_value(&mut out, v);
    out.push('}');
    out
}

/// A guess at the rendered size, so that the buffer rarely grows: about 32 bytes
/// per point (`[1700000000.5,"0.123456789"],`) plus the labels.
fn capacity(v: &QueryValue) -> usize {
    match v {
        QueryValue::Matrix(ss) => ss.iter().map(|s| 64 + 24 * s.labels.len() + 32 * s.points.len()).sum(),
        QueryValue::Vector(vs) => vs.iter().map(|s| 96 + 24 * s.labels.len()).sum(),
        _ => 64,
    }
    .saturating_add(64)
}

fn write_query_value(out: &mut String, v: &QueryValue) {
    out.push_str(r#"{"resultType":""#);
    out.push_str(v.type_name());
    out.push_str(r#"","result":"#);
    match v {
        QueryValue::Scalar { t, v } => write_point(out, *t, *v),
        QueryValue::String { t, s } => {
            out.push('[');
            write_ts(out, *t);
            out.push(',');
            write_str(out, s);
            out.push(']');
        }
        QueryValue::Vector(vs) => write_list(out, vs, |out, s| {
            out.push_str(r#"{"metric":"#);
            write_labels(out, &s.labels);
            out.push_str(r#","value":"#);
            write_point(out, s.t, s.v);
            out.push('}');
        }),
        QueryValue::Matrix(ss) => write_list(out, ss, |out, s| {
            out.push_str(r#"{"metric":"#);
            write_labels(out, &s.labels);
            out.push_str(r#","values":"#);
            write_list(out, &s.points, |out, &(t, v)| write_point(out, t, v));
            out.push('}');
        }),
    }
    out.push('}');
}

/// `[item,item,...]`, each written by `item`.
#[inline]
fn write_list<T>(out: &mut String, items: impl IntoIterator<Item = T>, mut item: impl FnMut(&mut String, T)) {
    out.push('[');
    for (i, x) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        item(out, x);
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn values_and_timestamps_format_like_prometheus() {
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(1.5e-7), "1.5e-07");
        assert_eq!(format_value(2e21), "2e+21");
        assert_eq!(format_value(-0.0), "-0");
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(1e20), "100000000000000000000");
        assert_eq!(format_value(0.000001), "0.000001");
        assert_eq!(format_value(-123.456), "-123.456");
        assert_eq!(format_value(1e100), "1e+100");
        assert_eq!(format_value(5e-324), "5e-324");
        let mut s = String::new();
        write_ts(&mut s, 1_435_781_451_781);
        s.push(' ');
        write_ts(&mut s, 1_500);
        s.push(' ');
        write_ts(&mut s, 2_000);
        s.push(' ');
        write_ts(&mut s, -1_050);
        s.push(' ');
        write_ts(&mut s, 7);
        s.push(' ');
        write_ts(&mut s, i64::MIN);
        assert_eq!(s, "1435781451.781 1.500 2 -1.050 0.007 -9223372036854775.808");
    }

    /// The shape of the values that a fast path could get wrong: both sides of the
    /// notation thresholds, powers of ten, integers around 2^53, subnormals.
    #[test]
    fn edge_values_format_like_the_slow_path() {
        let mut vals = vec![
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            f64::EPSILON,
            9007199254740992.0,
            9007199254740993.0,
            123456789012345680.0,
            0.30000000000000004,
            f64::from_bits(1),
            f64::from_bits(0x000f_ffff_ffff_ffff),
        ];
        for e in -330..310 {
            let p = 10f64.powi(e);
            for x in [p, p * 1.5, p * 9.999_999, p * 0.123_456_789_012_345] {
                vals.extend([x, x.next_up(), x.next_down(), -x]);
            }
        }
        // Values exactly halfway between two shortest candidates (ties).
        for k in [1u64 << 50, 1 << 51, 1 << 52, 999_999_900_000_000, 1_837_819_780_798_014] {
            for f in [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875] {
                let x = k as f64 + f;
                vals.extend([x, -x, x * 1e-10, x * 1e10, x * 1e-300]);
            }
        }
        for k in (0..2000u64).map(|i| 10_000_000_000_000_005 + 10 * i * 7919) {
            vals.push(k as f64);
        }
        for x in [1e-6, 1e21] {
            let (mut lo, mut hi) = (x, x);
            for _ in 0..5 {
                vals.extend([lo, hi]);
                lo = lo.next_down();
                hi = hi.next_up();
            }
        }
        for v in vals {
            assert_eq!(format_value(v), slow_format_nonfinite(v), "{v:e} ({:#x})", v.to_bits());
        }
    }

    /// [`slow_format`] plus the non-finite cases `write_value` handles first.
    fn slow_format_nonfinite(v: f64) -> String {
        if v.is_nan() {
            "NaN".into()
        } else if v.is_infinite() {
            if v > 0.0 { "+Inf" } else { "-Inf" }.into()
        } else {
            slow_format(v)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        /// Every bit pattern (normal, subnormal, ±0, ±Inf, NaNs, any exponent) gives
        /// the text of the `std::fmt` formatting.
        #[test]
        fn fast_values_equal_slow_values(bits in any::<u64>()) {
            let v = f64::from_bits(bits);
            prop_assert_eq!(format_value(v), slow_format_nonfinite(v));
        }

        #[test]
        fn fast_values_equal_slow_values_by_class(v in proptest::num::f64::ANY) {
            prop_assert_eq!(format_value(v), slow_format_nonfinite(v));
        }

        /// Decimal-looking values (money, prices) near every threshold.
        #[test]
        fn decimal_values_equal_slow_values(m in -10_000_000_000i64..10_000_000_000, e in -40i32..40) {
            let v = m as f64 * 10f64.powi(e);
            prop_assert_eq!(format_value(v), slow_format_nonfinite(v));
        }

        #[test]
        fn timestamps_equal_slow_timestamps(t in any::<i64>()) {
            let mut s = String::new();
            write_ts(&mut s, t);
            let (neg, u) = if t < 0 { ("-", t.unsigned_abs()) } else { ("", t as u64) };
            let want = if u % 1000 == 0 {
                format!("{neg}{}", u / 1000)
            } else {
                format!("{neg}{}.{:03}", u / 1000, u % 1000)
            };
            prop_assert_eq!(s, want);
        }
    }
}
