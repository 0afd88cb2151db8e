//! Float value column codec. Values are raw f64 bit patterns (u64) and round-trip
//! bit-exactly, including NaN payloads (e.g. the stale marker 0x7ff0000000000002),
//! -0.0 and infinities.
//!
//! The sample count `n` is not stored here: the block stores it.
//!
//! # Byte layout (section "floats", version = the tag byte)
//!
//! ```text
//! u8      tag
//!
//! tag 0x00  CONST: every value has the same bits
//!   u64 LE   bits
//!
//! tag 0x01  DECIMAL: every v equals (m as f64) / 10^e bit-exactly for an integer m,
//!           |m| <= 2^53, with one e for the whole block
//!   u8       e in 0..=9
//!   "ints" section (see `ints.rs`) holding the n integers m
//!
//! tag 0x02  XOR (Gorilla)
//!   u64 LE   bits of v[0]
//!   uvarint  byte length of the bit stream that follows
//!   bit stream (LSB-first, see `bits.rs`), for each v[i], i >= 1, with x = v[i] ^ v[i-1]:
//!     '0'                                   x == 0
//!     '1' '0' <len bits>                    x fits the previous window (lead, len):
//!                                           its leading zeros >= lead and its trailing
//!                                           zeros >= 64 - lead - len; the bits are
//!                                           x >> (64 - lead - len)
//!     '1' '1' <5 bits lead> <6 bits len-1> <len bits>
//!                                           new window; lead <= 31, 1 <= len <= 64,
//!                                           lead + len <= 64
//!
//! tag 0x03  DECIMAL_PATCHED: like DECIMAL, except for a few values (NaN such as the
//!           Prometheus stale marker, infinities, -0.0, non-decimal values) stored raw
//!   u8       e in 0..=9
//!   "ints" section holding n integers m (a patched slot holds any filler; the encoder
//!            repeats the previous m)
//!   uvarint  k, the number of patches, 1 <= k <= n
//!   k times:
//!     uvarint  gap      patch index = previous index + 1 + gap (first: gap)
//!     u64 LE   bits     replaces the value at that index; index < n
//! ```
//!
//! Bits are read in the order listed (each field LSB-first). The "previous window"
//! before the first new window is (0, 64). The encoder picks DECIMAL (or, when at
//! most 1/8 of the values are not decimal, DECIMAL_PATCHED) unless XOR is smaller.

use std::ops::Range;

use super::bits::{BitReader, BitWriter};
use super::ints::{decode_ints, encode_ints};
use super::varint::{put_uvarint, ByteReader, DecodeError};

const TAG_CONST: u8 = 0;
const TAG_DECIMAL: u8 = 1;
const TAG_XOR: u8 = 2;
const TAG_DECIMAL_PATCHED: u8 = 3;
/// DECIMAL_PATCHED is tried only while at most 1/8 of the values are patches.
const MAX_PATCH_FRACTION: usize = 8;
const MAX_DECIMAL_EXP: usize = 9;
const POW10: [f64; MAX_DECIMAL_EXP + 1] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];
const MAX_MANTISSA: f64 = 9_007_199_254_740_992.0; // 2^53

/// The integer m with (m as f64) / 10^e == v bit-exactly, if any.
#[inline]
fn decimal_mantissa(bits: u64, e: usize) -> Option<i64> {
    let v = f64::from_bits(bits);
    if !v.is_finite() {
        return None;
    }
    let m = (v * POW10[e]).round();
    if m.abs() > MAX_MANTISSA {
        return None;
    }
    // |m| <= 2^53, so the cast is exact.
    let mi = m as i64;
    ((mi as f64) / POW10[e]).to_bits().eq(&bits).then_some(mi)
}

/// The smallest e in 0..=9 that makes every value decimal, if there is one.
fn decimal_exponent(vals: &[u64]) -> Option<usize> {
    let mut e = 0usize;
    for &b in vals {
        while decimal_mantissa(b, e).is_none() {
            e += 1;
            if e > MAX_DECIMAL_EXP {
                return None;
            }
        }
    }
    // A value that passed at a smaller e almost always passes at a larger one, but
    // this is not guaranteed in floating point: verify, trying larger e if needed.
    (e..=MAX_DECIMAL_EXP).find(|&e| vals.iter().all(|&b| decimal_mantissa(b, e).is_some()))
}

fn encode_xor(vals: &[u64], out: &mut Vec<u8>) {
    out.push(TAG_XOR);
    let first = vals.first().copied().unwrap_or(0);
    out.extend_from_slice(&first.to_le_bytes());
    let mut stream = Vec::with_capacity(vals.len() * 2);
    let mut w = BitWriter::new(&mut stream);
    let (mut lead, mut len) = (0u32, 64u32);
    let mut prev = first;
    for &v in vals.iter().skip(1) {
        let x = v ^ prev;
        prev = v;
        if x == 0 {
            w.bit(false);
            continue;
        }
        w.bit(true);
        let l = x.leading_zeros().min(31);
        let t = x.trailing_zeros();
        let prev_trail = 64 - lead - len;
        if l >= lead && t >= prev_trail {
            w.bit(false);
            w.write(x >> prev_trail, len);
        } else {
            lead = l;
            len = 64 - l - t;
            w.bit(true);
            w.write(lead as u64, 5);
            w.write((len - 1) as u64, 6);
            w.write(x >> t, len);
        }
    }
    w.finish();
    put_uvarint(out, stream.len() as u64);
    out.extend_from_slice(&stream);
}

/// Encodes a Float value column (see the module docs for the layout).
pub fn encode_floats(vals: &[u64], out: &mut Vec<u8>) {
    let first = vals.first().copied().unwrap_or(0);
    if vals.iter().all(|&v| v == first) {
        out.push(TAG_CONST);
        out.extend_from_slice(&first.to_le_bytes());
        return;
    }
    let start = out.len();
    if encode_decimal(vals, out) {
        let dec_len = out.len() - start;
        let mut xor = Vec::new();
        encode_xor(vals, &mut xor);
        if xor.len() < dec_len {
            out.truncate(start);
            out.extend_from_slice(&xor);
        }
    } else {
        encode_xor(vals, out);
    }
}

/// Writes a DECIMAL or DECIMAL_PATCHED section if the values allow it; false if not
/// (then nothing was written).
fn encode_decimal(vals: &[u64], out: &mut Vec<u8>) -> bool {
    let max_patches = vals.len() / MAX_PATCH_FRACTION;
    let mut patches: Vec<usize> = Vec::new();
    let mut decimals: Vec<u64> = Vec::with_capacity(vals.len());
    for (i, &b) in vals.iter().enumerate() {
        // Fast path: most decimal values are decimal at e = 0 or at the largest e.
        if decimal_mantissa(b, MAX_DECIMAL_EXP).is_some()
            || (0..MAX_DECIMAL_EXP).any(|e| decimal_mantissa(b, e).is_some())
        {
            decimals.push(b);
        } else {
            patches.push(i);
            if patches.len() > max_patches {
                return false;
            }
        }
    }
    let Some(e) = decimal_exponent(&decimals) else {
        return false;
    };
    // decimal_exponent verified every non-patched value at e (patched ones fail at every
    // e). A patched slot gets a filler that continues the line through its neighbours
    // (last delta extrapolated), so a stale marker in a counter costs no extra bits.
    let mant: Vec<Option<i64>> = vals.iter().map(|&b| decimal_mantissa(b, e)).collect();
    let mut ms: Vec<i64> = Vec::with_capacity(vals.len());
    let mut last: Option<(i64, i64)> = None; // (previous m, previous delta)
    for m in &mant {
        let v = match (*m, last) {
            (Some(m), Some((p, _))) => {
                last = Some((m, m.wrapping_sub(p)));
                m
            }
            (Some(m), None) => {
                last = Some((m, 0));
                m
            }
            (None, Some((p, d))) => {
                last = Some((p.wrapping_add(d), d));
                p.wrapping_add(d)
            }
            (None, None) => 0, // leading patches: filled backwards below
        };
        ms.push(v);
    }
    if let Some(f) = mant.iter().position(Option::is_some) {
        let d = match (mant.get(f), mant.get(f + 1)) {
            (Some(Some(a)), Some(Some(b))) => b.wrapping_sub(*a),
            _ => 0,
        };
        for i in (0..f).rev() {
            ms[i] = ms[i + 1].wrapping_sub(d);
        }
    }
    out.push(if patches.is_empty() {
        TAG_DECIMAL
    } else {
        TAG_DECIMAL_PATCHED
    });
    out.push(e as u8);
    encode_ints(&ms, out);
    if !patches.is_empty() {
        put_uvarint(out, patches.len() as u64);
        let mut next = 0usize;
        for &i in &patches {
            put_uvarint(out, (i - next) as u64);
            out.extend_from_slice(&vals[i].to_le_bytes());
            next = i + 1;
        }
    }
    true
}

fn decode_xor(r: &mut ByteReader<'_>, n: usize, out: &mut Vec<u64>) -> Result<(), DecodeError> {
    let first = r.u64_le()?;
    let len_at = r.pos();
    let nbytes = r.len_prefix(r.remaining())?;
    let stream = r.bytes(nbytes)?;
    let mut br = BitReader::new(stream);
    out.reserve(n);
    if n == 0 {
        return Ok(());
    }
    out.push(first);
    let (mut lead, mut len) = (0u32, 64u32);
    let mut prev = first;
    for _ in 1..n {
        if br.bit()? {
            if br.bit()? {
                lead = br.read(5)? as u32;
                len = br.read(6)? as u32 + 1;
                if lead + len > 64 {
                    return Err(DecodeError::Invalid(format!(
                        "xor window {lead}+{len} > 64 in stream at byte {len_at}"
                    )));
                }
            }
            // lead + len <= 64 holds for the initial (0, 64) and was checked above.
            let trail = 64 - lead - len;
            let bits = br.read(len)?;
            prev ^= bits << trail;
        }
        out.push(prev);
    }
    Ok(())
}

/// Decodes `n` Float values (already capped by the caller), appending their bits to `out`.
pub fn decode_floats(r: &mut ByteReader<'_>, n: usize, out: &mut Vec<u64>) -> Result<(), DecodeError> {
    decode_floats_range(r, n, 0..n, out)
}

/// Like [`decode_floats`], appending only values `keep` (`keep.end <= n`) of the `n`.
/// The whole section is still read and checked; decimal values outside `keep` are
/// not converted to floats (a division each).
pub fn decode_floats_range(
    r: &mut ByteReader<'_>,
    n: usize,
    keep: Range<usize>,
    out: &mut Vec<u64>,
) -> Result<(), DecodeError> {
    let at = r.pos();
    if keep.start > keep.end || keep.end > n {
        return Err(DecodeError::Invalid(format!(
            "values {keep:?} asked of {n} at byte {at}"
        )));
    }
    let tag = r.u8()?;
    match tag {
        TAG_CONST => {
            let v = r.u64_le()?;
            out.extend(std::iter::repeat_n(v, keep.len()));
            Ok(())
        }
        TAG_DECIMAL | TAG_DECIMAL_PATCHED => {
            let e = r.u8()? as usize;
            let Some(&scale) = POW10.get(e) else {
                return Err(DecodeError::Invalid(format!("decimal exponent {e} at byte {at}")));
            };
            let start = out.len();
            decode_ints(r, n, out)?;
            // Convert the kept values, moving them down to `start` (reads stay at or
            // ahead of writes).
            let len = keep.len();
            let col = &mut out[start..];
            if e == 0 {
                for k in 0..len {
                    col[k] = ((col[keep.start + k] as i64) as f64).to_bits();
                }
            } else {
                for k in 0..len {
                    col[k] = ((col[keep.start + k] as i64) as f64 / scale).to_bits();
                }
            }
            out.truncate(start + len);
            if tag == TAG_DECIMAL_PATCHED {
                let k_at = r.pos();
                let k = r.len_prefix(n)?;
                if k == 0 {
                    return Err(DecodeError::Invalid(format!("no patches at byte {k_at}")));
                }
                let dst = &mut out[start..];
                let mut next = 0usize;
                for _ in 0..k {
                    let at = r.pos();
                    let gap = r.len_prefix(n)?;
                    let bits = r.u64_le()?;
                    // next <= n and gap <= n: no overflow.
                    let i = next + gap;
                    if i >= n {
                        return Err(DecodeError::Invalid(format!("patch index {i} >= {n} at byte {at}")));
                    }
                    if keep.contains(&i) {
                        dst[i - keep.start] = bits;
                    }
                    next = i + 1;
                }
            }
            Ok(())
        }
        TAG_XOR => {
            let start = out.len();
            decode_xor(r, n, out)?;
            super::keep_only(out, start, keep);
            Ok(())
        }
        t => Err(DecodeError::Invalid(format!("unknown floats tag {t} at byte {at}"))),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn roundtrip(vals: &[u64]) -> usize {
        let mut out = Vec::new();
        encode_floats(vals, &mut out);
        let mut r = ByteReader::new(&out);
        let mut dec = vec![7u64];
        decode_floats(&mut r, vals.len(), &mut dec).unwrap();
        assert!(r.is_empty());
        assert_eq!(&dec[1..], vals);
        out.len()
    }

    pub(crate) fn special() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0x7ff0000000000002u64), // Prometheus stale marker
            Just(f64::NAN.to_bits()),
            Just((-0.0f64).to_bits()),
            Just(0.0f64.to_bits()),
            Just(f64::INFINITY.to_bits()),
            Just(f64::NEG_INFINITY.to_bits()),
            Just(f64::MAX.to_bits()),
            Just(f64::MIN_POSITIVE.to_bits()),
            Just(1u64),
            Just(u64::MAX),
        ]
    }

    /// Interesting f64 columns as bit patterns.
    pub(crate) fn float_column() -> impl Strategy<Value = Vec<u64>> {
        prop_oneof![
            proptest::collection::vec(any::<u64>(), 1..300),
            proptest::collection::vec(any::<f64>().prop_map(f64::to_bits), 1..300),
            proptest::collection::vec(special(), 1..100),
            proptest::collection::vec(
                prop_oneof![special(), (-1000i64..1000).prop_map(|m| (m as f64 / 100.0).to_bits())],
                1..100
            ),
            (
                0usize..=9,
                proptest::collection::vec(-(1i64 << 53)..(1i64 << 53), 1..300)
            )
                .prop_map(|(e, ms)| ms
                    .iter()
                    .map(|&m| (m as f64 / 10f64.powi(e as i32)).to_bits())
                    .collect()),
            (0u32..6, proptest::collection::vec(-50i64..=50, 1..3000)).prop_map(|(e, steps)| {
                let mut m = 10_000i64;
                steps
                    .iter()
                    .map(|s| {
                        m += s;
                        (m as f64 / 10f64.powi(e as i32)).to_bits()
                    })
                    .collect()
            }),
            proptest::collection::vec(0.0f64..1e6, 1..300).prop_map(|v| {
                let mut acc = 0.0;
                v.iter()
                    .map(|x| {
                        acc += x;
                        f64::to_bits(acc)
                    })
                    .collect()
            }),
            (any::<u64>(), 1usize..100).prop_map(|(v, n)| vec![v; n]),
            // Mostly decimal with a few patches.
            proptest::collection::vec(
                prop_oneof![20 => (-100_000i64..100_000).prop_map(|m| (m as f64 / 1000.0).to_bits()), 1 => special()],
                1..1000
            ),
        ]
    }

    proptest! {
        #[test]
        fn floats_roundtrip(vals in float_column()) {
            roundtrip(&vals);
        }

        #[test]
        fn floats_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), n in 0usize..3000) {
            let mut out = Vec::new();
            let _ = decode_floats(&mut ByteReader::new(&bytes), n, &mut out);
            prop_assert!(out.len() <= n);
        }
    }

    #[test]
    fn decimal_detection() {
        let b = |v: f64| v.to_bits();
        assert_eq!(decimal_exponent(&[b(1.0), b(2.0)]), Some(0));
        assert_eq!(decimal_exponent(&[b(1.25), b(0.1)]), Some(2));
        assert_eq!(decimal_exponent(&[b(-0.0)]), None);
        assert_eq!(decimal_exponent(&[b(f64::NAN)]), None);
        assert_eq!(decimal_exponent(&[b(f64::INFINITY)]), None);
        assert_eq!(decimal_exponent(&[b(1e300)]), None);
        assert_eq!(decimal_exponent(&[b(std::f64::consts::PI)]), None);
        roundtrip(&[b(-0.0), b(0.0), b(-0.0)]);
        roundtrip(&[0x7ff0000000000002, b(1.5), 0x7ff0000000000002]);
    }

    #[test]
    fn decimal_with_patches() {
        let b = |v: f64| v.to_bits();
        let mut vals: Vec<u64> = (0..1000).map(|i| b(i as f64 * 0.25)).collect();
        let plain = roundtrip(&vals);
        vals[0] = 0x7ff0000000000002;
        vals[500] = b(-0.0);
        vals[501] = b(f64::INFINITY);
        vals[999] = 0x7ff0000000000002;
        let patched = roundtrip(&vals);
        let mut out = Vec::new();
        encode_floats(&vals, &mut out);
        assert_eq!(out[0], TAG_DECIMAL_PATCHED);
        assert!(patched <= plain + 4 * 9 + 4, "{patched} vs {plain}");
        // Patch indices out of range are rejected.
        let mut bad = out.clone();
        let last_gap_at = bad.len() - 9;
        bad[last_gap_at] = 0x7f;
        assert!(decode_floats(&mut ByteReader::new(&bad), 1000, &mut Vec::new()).is_err());
    }
}
