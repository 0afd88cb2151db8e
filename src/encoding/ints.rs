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
//!           then miniblocks of packed quotients
//!   u8       order k in 0..=2 (0 raw, 1 delta, 2 delta-of-delta); k <= n
//!   ivarint  v[0]                 (present if k >= 1)
//!   ivarint  v[1] - v[0]          (present if k == 2, wrapping)
//!   ivarint  base  B              (minimum residual)
//!   uvarint  mult  D              (greatest common divisor of all residual - B, 1 if
//!                                  they are all 0; this factors out e.g. the 1000 of
//!                                  money with 6 decimals stored as nanos, or 10^6 of
//!                                  millisecond timestamps in nanoseconds)
//!   u8       log2 of miniblock size L in 6..=16 (miniblock = 2^L residuals)
//!   then ceil((n - k) / 2^L) miniblocks; the last one may be short. Each holds `len`
//!   fields f[0..len] and starts:
//!     uvarint  qmin
//!     u8       mode
//!   mode 0..=64  BITS, width w = mode:
//!     ceil(w * len / 8) bytes: len fields of w bits, LSB-first (see `bits.rs`)
//!   mode 0x80    RADIX:
//!     uvarint  R - 1, radix 1 <= R <= 2^16
//!     radix digits f[0..len] (each f < R), packed as below
//!   mode 0x81    SPARSE (for columns where one value is common, e.g. a flat gauge):
//!     uvarint  z, the common field value
//!     uvarint  R - 1, radix 1 <= R <= 2^16
//!     ceil(len / 8) bytes: bitmap, bit i (LSB-first) set iff f[i] != z; bits past
//!              len are padding (written 0, ignored)
//!     radix digits d[0..m], m = number of set bits, packed as below; the j-th set
//!              bit's field is f = d[j] + (1 if d[j] >= z else 0), so d = f - (f > z)
//!   other modes are invalid.
//!
//! Radix digits: with b(k) the bit width of R^k - 1, k is the count with R^k <= 2^48
//! that minimises b(k) / k, the largest such k on ties (k = 1, b = 0 if R = 1), and
//! b = b(k) <= 48. The digits are cut into
//! ceil(count / k) groups of k (the last may be short: its missing digits are 0); group g holds
//! sum_i digit[g*k + i] * R^i and is written as a b-bit field, LSB-first (see
//! `bits.rs`), for ceil(b * ceil(count / k) / 8) bytes in all. Digits are decoded as
//! repeated `% R`, `/ R` of the group value, so radix packing costs log2(R) bits per
//! field (within 1/k bit) instead of ceil(log2(R)).
//! ```
//!
//! Residual `i` (for i in 0..n-k) is `r = B + (qmin + f_i) * D` (wrapping, u64
//! arithmetic reinterpreted as i64). For order 0, `v[i] = r[i]`; for order 1,
//! `v[i+1] = v[i] + r[i]`; for order 2, `v[i+2] = v[i+1] + (v[i+1] - v[i]) + r[i]`.
//! The encoder picks the order, miniblock size and, per miniblock, the mode giving the
//! smallest output.

use super::bits::{load_le_u64, unpack_fields, BitReader, BitWriter};
use super::varint::{put_ivarint, put_uvarint, zigzag, ByteReader, DecodeError};

const TAG_CONST: u8 = 0;
const TAG_FOR: u8 = 1;
const MIN_MB_LOG2: u8 = 6;
const MAX_MB_LOG2: u8 = 16;
/// Miniblock sizes the encoder tries (the largest stands for "one miniblock").
const MB_LOG2_CANDIDATES: [u8; 6] = [6, 7, 8, 9, 10, 16];
/// Miniblock mode bytes above the bit widths 0..=64.
const MODE_RADIX: u8 = 0x80;
const MODE_SPARSE: u8 = 0x81;
/// Largest radix of the RADIX and SPARSE modes (so a group holds at least 2 digits).
const MAX_RADIX: u64 = 1 << 16;
/// Radix groups are below 2^48, so one multiply by a reciprocal divides them exactly.
const MAX_GROUP: u64 = 1 << 48;

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
const fn width_of(range: u64) -> u32 {
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

/// Digits per group `k` and bits per group `b` of radix `r` (1 <= r <= MAX_RADIX):
/// among the counts `k` with `r^k <= 2^48`, the one with the fewest bits per digit
/// `b / k` (the largest such `k` on ties), where `b` is the bit width of `r^k - 1`.
/// Radix 1 has only the digit 0 and takes no bits: (1, 0).
#[inline]
fn radix_params(r: u64) -> (usize, u32) {
    match SMALL_RADIX_PARAMS.get(r as usize) {
        Some(&(k, b)) => (k as usize, b as u32),
        None => radix_params_of(r),
    }
}

/// [`radix_params`] of the small radices, where its search is longest (up to 47
/// steps for radix 2) and which most miniblocks use; decoding asks once per miniblock.
const SMALL_RADIX_PARAMS: [(u8, u8); 257] = {
    let mut t = [(1u8, 0u8); 257];
    let mut r = 2;
    while r < t.len() {
        let (k, b) = radix_params_of(r as u64);
        // k <= 48 and b <= 48 fit a byte.
        t[r] = (k as u8, b as u8);
        r += 1;
    }
    t
};

const fn radix_params_of(r: u64) -> (usize, u32) {
    if r <= 1 {
        return (1, 0);
    }
    let (mut k, mut p) = (1usize, r);
    let mut best = (1usize, width_of(r - 1));
    while let Some(next) = p.checked_mul(r) {
        if next > MAX_GROUP {
            break;
        }
        p = next;
        k += 1;
        let b = width_of(p - 1);
        if b as usize * best.0 <= best.1 as usize * k {
            best = (k, b);
        }
    }
    best
}

/// Bytes of `cnt` radix-`r` digits packed in groups.
#[inline]
fn radix_bytes(cnt: usize, r: u64) -> usize {
    let (k, b) = radix_params(r);
    (cnt.div_ceil(k) * b as usize).div_ceil(8)
}

/// How one miniblock is stored (fields are quotient - qmin, in 0..=range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Fixed width `w` bits per field.
    Bits(u32),
    /// Fields as radix-`r` digits, `r = range + 1`.
    Radix(u64),
    /// A bitmap of "field != z", then the other fields as radix-`r` digits of
    /// `f - (f > z)`, `r = range`.
    Sparse { z: u64, r: u64 },
}

/// The most frequent value of `c` and its count (`c` non-empty); `scratch` is reused.
fn most_frequent(c: &[i64], scratch: &mut Vec<u64>) -> (u64, usize) {
    scratch.clear();
    scratch.extend(c.iter().map(|&x| x as u64));
    scratch.sort_unstable();
    let mut best = (scratch.first().copied().unwrap_or(0), 0usize);
    for run in scratch.chunk_by(|a, b| a == b) {
        if run.len() > best.1 {
            best = (run[0], run.len());
        }
    }
    best
}

#[cfg(test)]
thread_local! {
    /// Tests set this to encode with the fixed-width mode only (the previous format).
    pub(crate) static BITS_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[inline]
fn bits_only() -> bool {
    #[cfg(test)]
    {
        BITS_ONLY.with(|b| b.get())
    }
    #[cfg(not(test))]
    {
        false
    }
}

/// The cheapest mode for quotients `c` (non-empty): (qmin, mode, size in bytes).
fn plan_miniblock(c: &[i64], scratch: &mut Vec<u64>) -> (u64, Mode, usize) {
    let (mn, mx) = c.iter().fold((u64::MAX, 0u64), |(mn, mx), &x| {
        let x = x as u64;
        (mn.min(x), mx.max(x))
    });
    let range = mx - mn;
    let w = width_of(range);
    let head = uvarint_len(mn) + 1;
    let mut best = (Mode::Bits(w), (w as usize * c.len()).div_ceil(8));
    if bits_only() {
        return (mn, best.0, head + best.1);
    }
    if (2..MAX_RADIX).contains(&range) {
        let r = range + 1;
        let cost = uvarint_len(r - 1) + radix_bytes(c.len(), r);
        if cost < best.1 {
            best = (Mode::Radix(r), cost);
        }
    }
    // A bitmap costs 1 bit per field: worth trying only if some value is common.
    if (1..=MAX_RADIX).contains(&range) && c.len() >= 16 {
        let (zq, zc) = most_frequent(c, scratch);
        let z = zq - mn;
        let r = range;
        let cost = uvarint_len(z) + uvarint_len(r - 1) + c.len().div_ceil(8) + radix_bytes(c.len() - zc, r);
        if cost < best.1 {
            best = (Mode::Sparse { z, r }, cost);
        }
    }
    (mn, best.0, head + best.1)
}

/// Writes radix-`r` digits (each < r) in groups of `k`, `b` bits per group.
fn write_radix(digits: impl Iterator<Item = u64>, r: u64, out: &mut Vec<u8>) {
    let (k, b) = radix_params(r);
    if b == 0 {
        return;
    }
    let mut bw = BitWriter::new(out);
    let (mut g, mut p, mut i) = (0u64, 1u64, 0usize);
    for d in digits {
        // d * p + g < r^(i+1) <= 2^48.
        g += d * p;
        p *= r;
        i += 1;
        if i == k {
            bw.write(g, b);
            (g, p, i) = (0, 1, 0);
        }
    }
    if i > 0 {
        bw.write(g, b);
    }
    bw.finish();
}

/// Writes one miniblock of quotients `c` as planned.
fn write_miniblock(c: &[i64], mn: u64, mode: Mode, out: &mut Vec<u8>) {
    put_uvarint(out, mn);
    match mode {
        Mode::Bits(w) => {
            out.push(w as u8);
            if w > 0 {
                let mut bw = BitWriter::new(out);
                for &x in c {
                    bw.write((x as u64) - mn, w);
                }
                bw.finish();
            }
        }
        Mode::Radix(r) => {
            out.push(MODE_RADIX);
            put_uvarint(out, r - 1);
            write_radix(c.iter().map(|&x| (x as u64) - mn), r, out);
        }
        Mode::Sparse { z, r } => {
            out.push(MODE_SPARSE);
            put_uvarint(out, z);
            put_uvarint(out, r - 1);
            let mut bw = BitWriter::new(out);
            for &x in c {
                bw.bit((x as u64) - mn != z);
            }
            bw.finish();
            let digits = c
                .iter()
                .map(|&x| (x as u64) - mn)
                .filter(|&f| f != z)
                .map(|f| if f > z { f - 1 } else { f });
            write_radix(digits, r, out);
        }
    }
}

/// Size in bytes of the miniblocks for quotients `q` with miniblock size 2^log2.
fn miniblocks_cost(q: &[i64], log2: u8, scratch: &mut Vec<u64>) -> usize {
    q.chunks(1usize << log2).map(|c| plan_miniblock(c, scratch).2).sum()
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
    let mut scratch = Vec::new();
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
            let cost = header + miniblocks_cost(&res, log2, &mut scratch);
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
        let (mn, mode, _) = plan_miniblock(c, &mut scratch);
        write_miniblock(c, mn, mode, out);
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
        let mode = r.u8()?;
        match mode {
            MODE_RADIX => {
                let radix = read_radix(r, at)?;
                let mut digits = RadixReader::new(r, radix, len)?;
                for slot in dst.iter_mut() {
                    let q = qmin.wrapping_add(digits.next());
                    *slot = W::from_i64(undo.step(base.wrapping_add(q.wrapping_mul(mult) as i64)));
                }
                continue;
            }
            MODE_SPARSE => {
                let z = r.uvarint()?;
                let radix = read_radix(r, at)?;
                let bitmap = r.bytes(len.div_ceil(8))?;
                let mut ones = bitmap.iter().map(|b| b.count_ones() as usize).sum::<usize>();
                if len % 8 != 0 {
                    // Bits past `len` in the last byte are padding and do not count.
                    if let Some(&last) = bitmap.last() {
                        ones -= (last >> (len % 8)).count_ones() as usize;
                    }
                }
                let mut digits = RadixReader::new(r, radix, ones)?;
                let vz = base.wrapping_add(qmin.wrapping_add(z).wrapping_mul(mult) as i64);
                for (slot, i) in dst.iter_mut().zip(0usize..) {
                    // i < len, and bitmap holds ceil(len / 8) bytes.
                    let v = if (bitmap[i >> 3] >> (i & 7)) & 1 != 0 {
                        let d = digits.next();
                        let f = d + u64::from(d >= z);
                        base.wrapping_add(qmin.wrapping_add(f).wrapping_mul(mult) as i64)
                    } else {
                        vz
                    };
                    *slot = W::from_i64(undo.step(v));
                }
                continue;
            }
            _ => {}
        }
        let w = mode as u32;
        if w > 64 {
            return Err(DecodeError::Invalid(format!("miniblock mode {w} at byte {at}")));
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
            unpack_fields(ext, w, dst, |f| {
                let q = qmin.wrapping_add(f);
                W::from_i64(undo.step(base.wrapping_add(q.wrapping_mul(mult) as i64)))
            });
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

/// Reads a radix `r - 1` (uvarint) and checks 1 <= r <= MAX_RADIX.
#[inline]
fn read_radix(r: &mut ByteReader<'_>, at: usize) -> Result<u64, DecodeError> {
    let rm1 = r.uvarint()?;
    if rm1 >= MAX_RADIX {
        return Err(DecodeError::Invalid(format!("radix {rm1} + 1 at byte {at}")));
    }
    Ok(rm1 + 1)
}

/// Yields radix digits packed by `write_radix`, lowest digit of each group first.
struct RadixReader<'a> {
    ext: &'a [u8],
    bit: usize,
    b: u32,
    mask: u64,
    k: usize,
    radix: u64,
    /// floor(2^64 / radix) + 1 (u64::MAX for radix 1): `(x * recip) >> 64 == x / radix`
    /// for every x < 2^48 (every group), since the error x * (recip - 2^64 / radix) / 2^64 < 2^-16
    /// cannot carry a fraction of at most 1 - 1/radix (radix <= 2^16) past an integer.
    recip: u64,
    group: u64,
    left: usize,
}

impl<'a> RadixReader<'a> {
    /// Takes the bytes of `cnt` digits of radix `radix` (1..=MAX_RADIX) from `r`.
    #[inline]
    fn new(r: &mut ByteReader<'a>, radix: u64, cnt: usize) -> Result<Self, DecodeError> {
        let (k, b) = radix_params(radix);
        // Reads may look past the digits' bytes; `bytes` checks they are complete.
        let ext = r.rest();
        r.bytes((cnt.div_ceil(k) * b as usize).div_ceil(8))?;
        Ok(RadixReader {
            ext,
            bit: 0,
            b,
            mask: (1u64 << b) - 1,
            k,
            radix,
            recip: if radix <= 1 { u64::MAX } else { u64::MAX / radix + 1 },
            group: 0,
            left: 0,
        })
    }

    /// `x / radix` for x < 2^48 (see `recip`).
    #[inline(always)]
    fn div(&self, x: u64) -> u64 {
        ((u128::from(self.recip) * u128::from(x)) >> 64) as u64
    }

    /// The next digit (a corrupt group may give a last digit >= radix; callers wrap).
    #[inline(always)]
    fn next(&mut self) -> u64 {
        if self.left == 0 {
            let (byte, sh) = (self.bit >> 3, (self.bit & 7) as u32);
            // b <= 48, so one load holds the group.
            self.group = (load_le_u64(self.ext, byte) >> sh) & self.mask;
            self.bit += self.b as usize;
            self.left = self.k;
        }
        self.left -= 1;
        // The group is < 2^b <= 2^48, so the division is exact (see `recip`).
        let g = self.group;
        let q = self.div(g);
        self.group = q;
        g - q * self.radix
    }
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
            // Small uniform steps (RADIX miniblocks).
            (
                any::<i64>(),
                1u64..300,
                proptest::collection::vec(any::<u64>(), 1..3000)
            )
                .prop_map(|(s, m, steps)| {
                    let mut v = s;
                    steps
                        .iter()
                        .map(|d| {
                            v = v.wrapping_add((d % m) as i64);
                            v
                        })
                        .collect()
                }),
            // Often-flat walks (SPARSE miniblocks), also with rare far outliers.
            (
                any::<i64>(),
                0u32..4,
                proptest::collection::vec((0u8..4, -300i64..300), 1..3000)
            )
                .prop_map(|(s, flat, steps)| {
                    let mut v = s;
                    steps
                        .iter()
                        .map(|&(c, d)| {
                            if u32::from(c) >= flat {
                                v = v.wrapping_add(if d == 299 { 1 << 20 } else { d });
                            }
                            v
                        })
                        .collect()
                }),
        ]
    }

    pub(crate) fn with_bits_only<T>(on: bool, f: impl FnOnce() -> T) -> T {
        BITS_ONLY.with(|b| b.set(on));
        let r = f();
        BITS_ONLY.with(|b| b.set(false));
        r
    }

    /// The miniblock modes used in an encoding (walks the layout).
    fn modes_of(bytes: &[u8], n: usize) -> Vec<u8> {
        let mut r = ByteReader::new(bytes);
        assert_eq!(r.u8().unwrap(), TAG_FOR);
        let order = r.u8().unwrap() as usize;
        for _ in 0..order.min(2) {
            r.ivarint().unwrap();
        }
        r.ivarint().unwrap();
        r.uvarint().unwrap();
        let mb = 1usize << r.u8().unwrap();
        let mut modes = Vec::new();
        let mut left = n - order;
        while left > 0 {
            let len = left.min(mb);
            left -= len;
            r.uvarint().unwrap();
            let m = r.u8().unwrap();
            modes.push(m);
            match m {
                MODE_RADIX => {
                    let radix = r.uvarint().unwrap() + 1;
                    r.bytes(radix_bytes(len, radix)).unwrap();
                }
                MODE_SPARSE => {
                    r.uvarint().unwrap();
                    let radix = r.uvarint().unwrap() + 1;
                    let bm = r.bytes(len.div_ceil(8)).unwrap();
                    let mut ones: usize = bm.iter().map(|b| b.count_ones() as usize).sum();
                    if len % 8 != 0 {
                        ones -= (bm[bm.len() - 1] >> (len % 8)).count_ones() as usize;
                    }
                    r.bytes(radix_bytes(ones, radix)).unwrap();
                }
                w => {
                    r.bytes((w as usize * len).div_ceil(8)).unwrap();
                }
            }
        }
        assert!(r.is_empty());
        modes
    }

    proptest! {
        #[test]
        fn ints_roundtrip(vals in int_column()) {
            roundtrip(&vals);
        }

        #[test]
        fn ints_roundtrip_bits_only(vals in int_column()) {
            let plain = with_bits_only(true, || roundtrip(&vals));
            let best = roundtrip(&vals);
            prop_assert!(best.len() <= plain.len(), "{} > {}", best.len(), plain.len());
        }

        #[test]
        fn ints_corrupted_never_panic(vals in int_column(), pos in any::<prop::sample::Index>(),
                                      flip in 1u8..=255, cut in any::<prop::sample::Index>()) {
            let mut b = Vec::new();
            encode_ints(&vals, &mut b);
            let mut flipped = b.clone();
            flipped[pos.index(b.len())] ^= flip;
            for bytes in [&flipped[..], &b[..cut.index(b.len())]] {
                let mut out: Vec<i64> = Vec::new();
                let _ = decode_ints(&mut ByteReader::new(bytes), vals.len(), &mut out);
                prop_assert!(out.len() <= vals.len());
            }
        }

        #[test]
        fn radix_packing_roundtrips(radix in 1u64..=MAX_RADIX, seed in any::<u64>(), cnt in 0usize..200) {
            let digits: Vec<u64> = (0..cnt as u64)
                .map(|i| (seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).rotate_left(17) % radix)
                .collect();
            let mut b = Vec::new();
            write_radix(digits.iter().copied(), radix, &mut b);
            prop_assert_eq!(b.len(), radix_bytes(cnt, radix));
            let mut r = ByteReader::new(&b);
            let mut rr = RadixReader::new(&mut r, radix, cnt).unwrap();
            let got: Vec<u64> = (0..cnt).map(|_| rr.next()).collect();
            prop_assert_eq!(got, digits);
            prop_assert!(r.is_empty());
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

    #[test]
    fn radix_params_minimise_bits_per_digit() {
        assert_eq!(radix_params(1), (1, 0));
        assert_eq!(radix_params(2), (48, 48));
        assert_eq!(radix_params(MAX_RADIX), (3, 48));
        for r in 2..=MAX_RADIX {
            let (k, b) = radix_params(r);
            let valid: Vec<(usize, u32)> = (1..=48u32)
                .take_while(|&j| r.checked_pow(j).is_some_and(|p| p <= MAX_GROUP))
                .map(|j| (j as usize, width_of(r.pow(j) - 1)))
                .collect();
            assert!(valid.contains(&(k, b)), "{r}: {k} {b}");
            for (j, c) in valid {
                assert!(b as usize * j <= c as usize * k, "{r}: {k} {b} vs {j} {c}");
            }
        }
        // Fewer bits than fixed width for the workload's shapes.
        assert!(radix_params(21).1 as f64 / radix_params(21).0 as f64 <= 4.4);
        assert!(radix_params(100).1 as f64 / radix_params(100).0 as f64 <= 6.67);
    }

    #[test]
    fn radix_reciprocal_is_exact() {
        for radix in (2..=MAX_RADIX).step_by(7).chain([2, 3, 10, 255, 256, 65535, 65536]) {
            let b: Vec<u8> = Vec::new();
            let rd = RadixReader::new(&mut ByteReader::new(&b), radix, 0).unwrap();
            let lim = 1u64 << 48;
            let mut xs = vec![0u64, 1, lim - 1, lim - 2, radix - 1, radix, radix + 1];
            for q in [(lim - 1) / radix, (lim - 1) / radix - 1, lim / radix / 2, 12345] {
                xs.extend([q * radix, q * radix + radix - 1, (q * radix).saturating_sub(1)]);
            }
            for x in xs {
                assert_eq!(rd.div(x), x / radix, "{x} / {radix}");
            }
        }
    }

    #[test]
    fn new_modes_are_chosen_and_smaller() {
        let mut x = 12345u64;
        let mut rnd = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        // Counter with steps 0..=20: 21 values need 5 bits, radix 21 packs 7 in 31 bits.
        let mut v = 1_000_000i64;
        let c: Vec<i64> = (0..2048)
            .map(|_| {
                v += rnd(21) as i64;
                v
            })
            .collect();
        let b = roundtrip(&c);
        assert!(modes_of(&b, c.len()).contains(&MODE_RADIX));
        let plain = with_bits_only(true, || roundtrip(&c));
        assert!(b.len() * 100 < plain.len() * 90, "{} vs {}", b.len(), plain.len());
        // A gauge that is flat half the time: SPARSE.
        let mut v = 5_000i64;
        let g: Vec<i64> = (0..2048)
            .map(|_| {
                if rnd(2) == 0 {
                    v += rnd(101) as i64 - 50;
                }
                v
            })
            .collect();
        let b = roundtrip(&g);
        assert!(modes_of(&b, g.len()).contains(&MODE_SPARSE));
        let plain = with_bits_only(true, || roundtrip(&g));
        assert!(b.len() * 100 < plain.len() * 70, "{} vs {}", b.len(), plain.len());
        // Partial last groups, short miniblocks and a flat run at the end.
        for n in [2, 3, 17, 65, 129, 1000] {
            let mut v = 0i64;
            let s: Vec<i64> = (0..n)
                .map(|i| {
                    if i < n - 5 && rnd(3) == 0 {
                        v += rnd(7) as i64 - 3;
                    }
                    v
                })
                .collect();
            roundtrip(&s);
        }
    }

    #[test]
    fn bad_modes_are_rejected() {
        // FOR, order 0, base 0, mult 1, miniblocks of 64; one miniblock, qmin 0.
        let head = [TAG_FOR, 0, 0, 1, 6, 0];
        let decode = |tail: &[u8], n: usize| {
            let mut b = head.to_vec();
            b.extend_from_slice(tail);
            let mut out: Vec<i64> = Vec::new();
            decode_ints(&mut ByteReader::new(&b), n, &mut out)
        };
        // Width 65 and an unknown mode.
        assert!(decode(&[65], 1).is_err());
        assert!(decode(&[0x82], 1).is_err());
        // Radix 2^16 + 1 is over the cap; 2^16 is fine (3 digits per 48-bit group).
        assert!(decode(&[MODE_RADIX, 0x80, 0x80, 0x04, 1, 0, 0, 0], 1).is_err());
        assert_eq!(decode(&[MODE_RADIX, 0xff, 0xff, 0x03, 7, 0, 0, 0, 0, 0], 1), Ok(()));
        assert!(decode(&[MODE_RADIX, 0xff, 0xff, 0x03, 7, 0, 0, 0, 0], 1).is_err());
        // Truncated digits and bitmaps.
        assert!(decode(&[MODE_RADIX, 2, 0, 0, 0], 8).is_err());
        assert!(decode(&[MODE_SPARSE, 0, 2], 8).is_err());
        assert!(decode(&[MODE_SPARSE, 0, 2, 0xff], 8).is_err());
        assert_eq!(decode(&[MODE_SPARSE, 0, 2, 0x00], 8), Ok(()));
    }
}
