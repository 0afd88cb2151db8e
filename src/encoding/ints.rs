//! Integer column codec (i64), used for Money values, decimal-scaled Float values and
//! irregular timestamps.
//!
//! The sample count `n` is not stored here: the caller (the block) knows it.
//! All arithmetic is wrapping, so every i64 sequence round-trips exactly.
//!
//! # Byte layout (section "ints", version = the tag byte)
//!
//! ```text
//! u8      tag
//!
//! tag 0x00  CONST: every value equal
//!   ivarint  value
//!
//! tag 0x01  FOR: order transform, then frame-of-reference + common divisor,
//!           then bit-packed miniblocks
//!   u8       order k in 0..=2 (0 raw, 1 delta, 2 delta-of-delta); k <= n
//!   ivarint  v[0]                 (present if k >= 1)
//!   ivarint  v[1] - v[0]          (present if k == 2, wrapping)
//!   ivarint  base  B              (minimum residual)
//!   uvarint  mult  D              (greatest common divisor of all residual - B, 1 if
//!                                  they are all 0; this factors out e.g. the 1000 of
//!                                  money with 6 decimals stored as nanos, or 10^6 of
//!                                  millisecond timestamps in nanoseconds)
//!   u8       log2 of miniblock size L in 6..=16 (miniblock = 2^L residuals)
//!   then ceil((n - k) / 2^L) miniblocks; the last one may be short. Each:
//!     uvarint  qmin
//!     u8       width w in 0..=64
//!     ceil(w * len / 8) bytes: len fields of w bits, LSB-first (see `bits.rs`)
//! ```
//!
//! Residual `i` (for i in 0..n-k) is `r = B + (qmin + field_i) * D` (wrapping, u64
//! arithmetic reinterpreted as i64). For order 0, `v[i] = r[i]`; for order 1,
//! `v[i+1] = v[i] + r[i]`; for order 2, `v[i+2] = v[i+1] + (v[i+1] - v[i]) + r[i]`.
//! The encoder picks the order and miniblock size giving the smallest output.

use super::bits::{load_le_u64, BitReader, BitWriter};
use super::varint::{put_ivarint, put_uvarint, zigzag, ByteReader, DecodeError};

const TAG_CONST: u8 = 0;
const TAG_FOR: u8 = 1;
const MIN_MB_LOG2: u8 = 6;
const MAX_MB_LOG2: u8 = 16;
/// Miniblock sizes the encoder tries (the largest stands for "one miniblock").
const MB_LOG2_CANDIDATES: [u8; 6] = [6, 7, 8, 9, 10, 16];

/// An output element: decoded i64 values are stored either as i64 or as their u64 bits.
pub trait Word: Copy {
    const ZERO: Self;
    fn from_i64(v: i64) -> Self;
}
impl Word for i64 {
    const ZERO: Self = 0;
    #[inline(always)]
    fn from_i64(v: i64) -> Self {
        v
    }
}
impl Word for u64 {
    const ZERO: Self = 0;
    #[inline(always)]
    fn from_i64(v: i64) -> Self {
        v as u64
    }
}

#[inline]
fn uvarint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
fn width_of(range: u64) -> u32 {
    64 - range.leading_zeros()
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

/// Residuals of `vals` for `order` (wrapping), written into `out` (cleared first).
fn residuals(vals: &[i64], order: usize, out: &mut Vec<i64>) {
    out.clear();
    match order {
        0 => out.extend_from_slice(vals),
        1 => out.extend(vals.windows(2).map(|w| w[1].wrapping_sub(w[0]))),
        _ => out.extend(
            vals.windows(3)
                .map(|w| w[2].wrapping_sub(w[1]).wrapping_sub(w[1].wrapping_sub(w[0]))),
        ),
    }
}

/// Turns residuals into non-negative quotients in place (as u64 bits in the i64 slots):
/// returns (base, mult).
fn normalize(res: &mut [i64]) -> (i64, u64) {
    let base = res.iter().copied().min().unwrap_or(0);
    let mut g = 0u64;
    for r in res.iter_mut() {
        // r >= base as i64, so the wrapping difference is the exact non-negative distance.
        let q = r.wrapping_sub(base) as u64;
        *r = q as i64;
        if g != 1 {
            g = gcd(g, q);
        }
    }
    let mult = if g <= 1 { 1 } else { g };
    if mult > 1 {
        for r in res.iter_mut() {
            *r = ((*r as u64) / mult) as i64;
        }
    }
    (base, mult)
}

/// Size in bytes of the miniblocks for quotients `q` with miniblock size 2^log2.
fn miniblocks_cost(q: &[i64], log2: u8) -> usize {
    q.chunks(1usize << log2)
        .map(|c| {
            let (mn, mx) = c.iter().fold((u64::MAX, 0u64), |(mn, mx), &x| {
                let x = x as u64;
                (mn.min(x), mx.max(x))
            });
            let w = width_of(mx - mn) as usize;
            uvarint_len(mn) + 1 + (w * c.len()).div_ceil(8)
        })
        .sum()
}

/// Encodes an i64 column (see the module docs for the layout).
pub fn encode_ints(vals: &[i64], out: &mut Vec<u8>) {
    let first = vals.first().copied().unwrap_or(0);
    if vals.iter().all(|&v| v == first) {
        out.push(TAG_CONST);
        put_ivarint(out, first);
        return;
    }
    // Here n >= 2. Find the cheapest (order, miniblock size).
    let n = vals.len();
    let mut res = Vec::with_capacity(n);
    let mut best: Option<(usize, usize, u8)> = None; // (cost, order, log2)
    for order in 0..=2usize {
        if order >= n {
            break;
        }
        residuals(vals, order, &mut res);
        let (base, mult) = normalize(&mut res);
        // tag + order + log2, then the varints.
        let mut header = 3 + uvarint_len(zigzag(base)) + uvarint_len(mult);
        if order >= 1 {
            header += uvarint_len(zigzag(vals[0]));
        }
        if order >= 2 {
            header += uvarint_len(zigzag(vals[1].wrapping_sub(vals[0])));
        }
        for &log2 in &MB_LOG2_CANDIDATES {
            let cost = header + miniblocks_cost(&res, log2);
            if best.is_none_or(|b| cost < b.0) {
                best = Some((cost, order, log2));
            }
            if (1usize << log2) >= res.len() {
                break; // larger miniblocks would be identical
            }
        }
    }
    // `best` is set: order 0 is always < n (n >= 2) and the candidate loop runs at least once.
    let (_, order, log2) = best.unwrap_or((0, 0, MAX_MB_LOG2));
    residuals(vals, order, &mut res);
    let (base, mult) = normalize(&mut res);
    out.push(TAG_FOR);
    out.push(order as u8);
    if order >= 1 {
        put_ivarint(out, vals[0]);
    }
    if order >= 2 {
        put_ivarint(out, vals[1].wrapping_sub(vals[0]));
    }
    put_ivarint(out, base);
    put_uvarint(out, mult);
    out.push(log2);
    for c in res.chunks(1usize << log2) {
        let (mn, mx) = c.iter().fold((u64::MAX, 0u64), |(mn, mx), &x| {
            let x = x as u64;
            (mn.min(x), mx.max(x))
        });
        let w = width_of(mx - mn);
        put_uvarint(out, mn);
        out.push(w as u8);
        if w > 0 {
            let mut bw = BitWriter::new(out);
            for &x in c {
                bw.write((x as u64) - mn, w);
            }
            bw.finish();
        }
    }
}

/// Undoes the order transform, one residual at a time.
trait Undo {
    fn step(&mut self, r: i64) -> i64;
}
struct Raw;
impl Undo for Raw {
    #[inline(always)]
    fn step(&mut self, r: i64) -> i64 {
        r
    }
}
struct Delta(i64);
impl Undo for Delta {
    #[inline(always)]
    fn step(&mut self, r: i64) -> i64 {
        self.0 = self.0.wrapping_add(r);
        self.0
    }
}
struct DoD(i64, i64);
impl Undo for DoD {
    #[inline(always)]
    fn step(&mut self, r: i64) -> i64 {
        self.1 = self.1.wrapping_add(r);
        self.0 = self.0.wrapping_add(self.1);
        self.0
    }
}

/// Unpacks `count` residuals in miniblocks of `mb`, undoes the order transform and
/// appends the values to `out`. On error `out` may hold extra values (callers truncate).
#[inline(always)]
fn unpack_miniblocks<U: Undo, W: Word>(
    r: &mut ByteReader<'_>,
    count: usize,
    (base, mult, mb): (i64, u64, usize),
    mut undo: U,
    out: &mut Vec<W>,
) -> Result<(), DecodeError> {
    // Size the output once (count <= MAX_BLOCK_SAMPLES, capped by the caller) and fill
    // it in place: plain loops over slices keep all state in registers.
    let start = out.len();
    out.resize(start + count, W::ZERO);
    for dst in out[start..].chunks_mut(mb) {
        let len = dst.len();
        let qmin = r.uvarint()?;
        let at = r.pos();
        let w = r.u8()? as u32;
        if w > 64 {
            return Err(DecodeError::Invalid(format!("bit width {w} at byte {at}")));
        }
        // w <= 64 and len <= 2^16: no overflow.
        let nbytes = (w as usize * len).div_ceil(8);
        // Reads may look past this miniblock's bytes (into later bytes of the buffer) for
        // speed; those bits are masked off. `bytes` checks the miniblock is complete.
        let ext = r.rest();
        let packed = r.bytes(nbytes)?;
        if w == 0 {
            let v = base.wrapping_add(qmin.wrapping_mul(mult) as i64);
            for slot in dst.iter_mut() {
                *slot = W::from_i64(undo.step(v));
            }
        } else if w <= 56 {
            let mask = (1u64 << w) - 1;
            let w = w as usize;
            let mut bit = 0usize;
            for slot in dst.iter_mut() {
                let f = (load_le_u64(ext, bit >> 3) >> (bit & 7)) & mask;
                bit += w;
                let q = qmin.wrapping_add(f);
                *slot = W::from_i64(undo.step(base.wrapping_add(q.wrapping_mul(mult) as i64)));
            }
        } else {
            let mut br = BitReader::new(packed);
            for slot in dst.iter_mut() {
                let q = qmin.wrapping_add(br.read(w)?);
                *slot = W::from_i64(undo.step(base.wrapping_add(q.wrapping_mul(mult) as i64)));
            }
        }
    }
    Ok(())
}

/// Decodes `n` values written by [`encode_ints`], appending them to `out`.
/// `n` must already be capped by the caller (it sizes the output). On error `out` may
/// hold some appended values; the block decoder truncates them away.
pub fn decode_ints<W: Word>(r: &mut ByteReader<'_>, n: usize, out: &mut Vec<W>) -> Result<(), DecodeError> {
    let at = r.pos();
    match r.u8()? {
        TAG_CONST => {
            let v = W::from_i64(r.ivarint()?);
            out.extend(std::iter::repeat_n(v, n));
            Ok(())
        }
        TAG_FOR => {
            let order = r.u8()? as usize;
            if order > 2 || order > n {
                return Err(DecodeError::Invalid(format!("ints order {order} at byte {at}")));
            }
            let v0 = if order >= 1 { r.ivarint()? } else { 0 };
            let d1 = if order >= 2 { r.ivarint()? } else { 0 };
            let base = r.ivarint()?;
            let mult = r.uvarint()?;
            let log2 = r.u8()?;
            if !(MIN_MB_LOG2..=MAX_MB_LOG2).contains(&log2) {
                return Err(DecodeError::Invalid(format!("miniblock size 2^{log2} at byte {at}")));
            }
            let mb = 1usize << log2;
            out.reserve(n);
            let count = n - order;
            match order {
                0 => unpack_miniblocks(r, count, (base, mult, mb), Raw, out),
                1 => {
                    out.push(W::from_i64(v0));
                    unpack_miniblocks(r, count, (base, mult, mb), Delta(v0), out)
                }
                _ => {
                    let v1 = v0.wrapping_add(d1);
                    out.push(W::from_i64(v0));
                    out.push(W::from_i64(v1));
                    unpack_miniblocks(r, count, (base, mult, mb), DoD(v1, d1), out)
                }
            }
        }
        t => Err(DecodeError::Invalid(format!("unknown ints tag {t} at byte {at}"))),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn roundtrip(vals: &[i64]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_ints(vals, &mut out);
        let mut r = ByteReader::new(&out);
        let mut dec: Vec<i64> = vec![42];
        decode_ints(&mut r, vals.len(), &mut dec).unwrap();
        assert!(r.is_empty(), "trailing bytes");
        assert_eq!(&dec[1..], vals);
        out
    }

    /// Interesting i64 columns: arbitrary, extremes, counters, walks, multiples of 1000.
    pub(crate) fn int_column() -> impl Strategy<Value = Vec<i64>> {
        let extreme = prop_oneof![
            Just(i64::MIN),
            Just(i64::MAX),
            Just(0i64),
            Just(-1i64),
            Just(i64::MIN + 1),
            Just(i64::MAX - 1)
        ];
        prop_oneof![
            proptest::collection::vec(any::<i64>(), 1..300),
            proptest::collection::vec(extreme, 1..300),
            (any::<i64>(), any::<i64>(), 1usize..300)
                .prop_map(|(s, d, n)| (0..n as i64).map(|i| s.wrapping_add(d.wrapping_mul(i))).collect()),
            (any::<i64>(), proptest::collection::vec(-1000i64..1000, 1..3000)).prop_map(|(s, steps)| {
                let mut v = s;
                steps
                    .iter()
                    .map(|d| {
                        v = v.wrapping_add(*d);
                        v
                    })
                    .collect()
            }),
            (
                -1_000_000i64..1_000_000,
                proptest::collection::vec(0i64..10_000, 1..600)
            )
                .prop_map(|(s, steps)| {
                    let mut v = s * 1000;
                    steps
                        .iter()
                        .map(|d| {
                            v += d * 1000;
                            v
                        })
                        .collect()
                }),
            (any::<i64>(), 1usize..200).prop_map(|(v, n)| vec![v; n]),
        ]
    }

    proptest! {
        #[test]
        fn ints_roundtrip(vals in int_column()) {
            roundtrip(&vals);
        }

        #[test]
        fn ints_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), n in 0usize..5000) {
            let mut out: Vec<i64> = Vec::new();
            let _ = decode_ints(&mut ByteReader::new(&bytes), n, &mut out);
            prop_assert!(out.len() <= n);
        }
    }

    #[test]
    fn ints_shapes() {
        // A constant-step counter: order 1 with zero-width miniblocks.
        let c: Vec<i64> = (0..2048).map(|i| 1_000 + 7 * i).collect();
        let b = roundtrip(&c);
        assert!(b.len() < 12, "{}", b.len());
        // Money with 6 decimals stored in nanos: the factor 1000 is divided out.
        let m: Vec<i64> = (0..1000).map(|i| ((i * 37) % 101) * 1000).collect();
        let b = roundtrip(&m);
        assert!(b.len() < 1000, "{}", b.len());
        roundtrip(&[i64::MIN, i64::MAX]);
        roundtrip(&[i64::MAX, i64::MIN, i64::MAX, 0]);
        roundtrip(&[5]);
    }
}
