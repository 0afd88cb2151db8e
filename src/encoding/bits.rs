//! Bit-level writer and reader used by the bit-packed integer miniblocks and the
//! Gorilla XOR float stream.
//!
//! # Bit order
//!
//! Bit `i` of a stream is bit `i % 8` (least significant = 0) of byte `i / 8`.
//! A field of width `w` starting at stream bit `s` stores its bit `j` (LSB = 0) at
//! stream bit `s + j`; in other words the stream is a little-endian bit string and
//! fields are appended least-significant bit first. The last byte is zero-padded in
//! its high bits. Equivalently, a field never needs to be byte-aligned, and reading
//! `w <= 56` bits at stream bit `s` is
//! `(u64::from_le_bytes(bytes[s/8 .. s/8+8]) >> (s % 8)) & (2^w - 1)`
//! (with missing bytes past the end read as zero).

use super::varint::DecodeError;

/// Appends bit fields to a byte vector (see the module docs for the bit order).
pub struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    /// Pending bits, LSB first; only the low `n` bits are meaningful.
    acc: u64,
    /// Number of pending bits; always < 64.
    n: u32,
}

impl<'a> BitWriter<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        BitWriter { out, acc: 0, n: 0 }
    }

    /// Appends the low `width` bits of `v` (`width <= 64`).
    #[inline]
    pub fn write(&mut self, v: u64, width: u32) {
        debug_assert!(width <= 64);
        if width == 0 {
            return;
        }
        let v = if width < 64 { v & ((1u64 << width) - 1) } else { v };
        // self.n < 64, so the shift is in range.
        self.acc |= v << self.n;
        let total = self.n + width;
        if total >= 64 {
            self.out.extend_from_slice(&self.acc.to_le_bytes());
            // The bits of `v` that did not fit: v >> (64 - n); none when n == 0.
            self.acc = if self.n == 0 { 0 } else { v >> (64 - self.n) };
            // total - 64 < width <= 64 and n < 64 before, so n stays < 64.
            self.n = total - 64;
        } else {
            self.n = total;
        }
    }

    #[inline]
    pub fn bit(&mut self, b: bool) {
        self.write(b as u64, 1);
    }

    /// Flushes the pending bits, zero-padding the last byte.
    pub fn finish(self) {
        let nbytes = self.n.div_ceil(8) as usize;
        self.out.extend_from_slice(&self.acc.to_le_bytes()[..nbytes]);
    }
}

/// Loads 8 bytes little-endian starting at `byte`; bytes past the end read as zero.
#[inline(always)]
pub fn load_le_u64(buf: &[u8], byte: usize) -> u64 {
    let mut a = [0u8; 8];
    match buf.get(byte..byte.saturating_add(8)) {
        Some(s) => a.copy_from_slice(s),
        None => {
            let tail = buf.get(byte..).unwrap_or(&[]);
            let k = tail.len().min(8);
            a[..k].copy_from_slice(&tail[..k]);
        }
    }
    u64::from_le_bytes(a)
}

/// Fills `out[k]` with `f(field k)`, the fields being `w` bits wide (1..=56) and packed
/// from bit 0 of `bytes` (which must hold all `out.len()` of them; bytes past them are
/// only ever masked off). Each field is one unaligned 8-byte load, shift and mask. The
/// last few fields, whose load would run past `bytes`, are read from a zero-padded
/// copy of the final bytes made once: loading them one by one through a partial copy
/// cost a call and a stalled store-to-load forward each, which at 3 bits per field
/// was the most of a short miniblock's decode time.
#[inline(always)]
pub fn unpack_fields<T>(bytes: &[u8], w: u32, out: &mut [T], mut f: impl FnMut(u64) -> T) {
    debug_assert!((1..=56).contains(&w));
    let w = w as usize;
    let mask = (1u64 << w) - 1;
    // Field k's load covers bytes (k*w)/8 .. (k*w)/8 + 8: inside `bytes` for k < fast.
    // (All of them, without a division, unless the fields end within 8 bytes of the
    // end: out.len() <= 2^16 and w <= 56, so no overflow.)
    let n = out.len();
    let fast = match bytes.len().checked_sub(8) {
        Some(room) if n.saturating_sub(1) * w / 8 <= room => n,
        Some(room) => (room * 8 / w + 1).min(n),
        None => 0,
    };
    let (head, tail) = out.split_at_mut(fast);
    let mut bit = 0usize;
    for slot in head {
        *slot = f((load_le_u64(bytes, bit >> 3) >> (bit & 7)) & mask);
        bit += w;
    }
    if tail.is_empty() {
        return;
    }
    // At most 8 bytes remain from the first tail field's byte (its load did not fit),
    // every tail field lies within them, so loads from a zero-padded 16-byte copy
    // see exactly the fields' bits.
    let from = bit >> 3;
    let rest = bytes.get(from..).unwrap_or(&[]);
    let mut pad = [0u8; 16];
    let k = rest.len().min(8);
    pad[..k].copy_from_slice(&rest[..k]);
    let mut bit = bit - from * 8;
    for slot in tail {
        *slot = f((load_le_u64(&pad, bit >> 3) >> (bit & 7)) & mask);
        bit += w;
    }
}

/// Reads bit fields from an untrusted byte slice; every read is bounds-checked.
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    buf: &'a [u8],
    /// Next bit position.
    pos: usize,
    /// Total bits in `buf`.
    end: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        BitReader {
            buf,
            pos: 0,
            end: buf.len().saturating_mul(8),
        }
    }

    /// Bit position of the next read.
    pub fn bit_pos(&self) -> usize {
        self.pos
    }

    /// Reads `width <= 56` bits without a bounds check of its own (the caller checked
    /// that `width` bits remain; `load_le_u64` never reads out of bounds anyway).
    #[inline(always)]
    fn read_upto56(&mut self, width: u32) -> u64 {
        let w = load_le_u64(self.buf, self.pos >> 3) >> (self.pos & 7);
        self.pos += width as usize;
        w & ((1u64 << width) - 1)
    }

    /// Reads `width <= 64` bits.
    #[inline]
    pub fn read(&mut self, width: u32) -> Result<u64, DecodeError> {
        if width == 0 {
            return Ok(0);
        }
        if width > 64 || self.end - self.pos < width as usize {
            return Err(DecodeError::Truncated(self.pos / 8));
        }
        if width <= 56 {
            Ok(self.read_upto56(width))
        } else {
            // Two reads of <= 32 bits each; bounds were checked for the whole field.
            let lo = self.read_upto56(32);
            let hi = self.read_upto56(width - 32);
            Ok(lo | (hi << 32))
        }
    }

    #[inline]
    pub fn bit(&mut self) -> Result<bool, DecodeError> {
        if self.pos >= self.end {
            return Err(DecodeError::Truncated(self.pos / 8));
        }
        let b = (self.buf[self.pos >> 3] >> (self.pos & 7)) & 1;
        self.pos += 1;
        Ok(b != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Packed fields of every width 1..=56 unpack to what was written, whatever
        /// bytes follow them (the miniblock's own end or more of the stream).
        #[test]
        fn unpack_fields_reads_what_was_written(
            vals in proptest::collection::vec(any::<u64>(), 0..150),
            w in 1u32..=56,
            trailing in proptest::collection::vec(any::<u8>(), 0..12),
        ) {
            let mut bytes = Vec::new();
            let mut bw = BitWriter::new(&mut bytes);
            for &v in &vals { bw.write(v, w); }
            bw.finish();
            bytes.extend_from_slice(&trailing);
            let mut out = vec![0u64; vals.len()];
            unpack_fields(&bytes, w, &mut out, |f| f);
            let mask = (1u64 << w) - 1;
            let want: Vec<u64> = vals.iter().map(|v| v & mask).collect();
            prop_assert_eq!(out, want);
        }
    }

    proptest! {
        #[test]
        fn bits_roundtrip(fields in proptest::collection::vec((any::<u64>(), 0u32..=64), 0..200)) {
            let mut out = Vec::new();
            let mut w = BitWriter::new(&mut out);
            for &(v, width) in &fields { w.write(v, width); }
            w.finish();
            let total: usize = fields.iter().map(|f| f.1 as usize).sum();
            prop_assert_eq!(out.len(), total.div_ceil(8));
            let mut r = BitReader::new(&out);
            for &(v, width) in &fields {
                let mask = if width == 64 { u64::MAX } else { (1u64 << width) - 1 };
                prop_assert_eq!(r.read(width).unwrap(), v & mask);
            }
            prop_assert_eq!(r.bit_pos(), total);
            // Anything past the padding is an error, never a panic.
            prop_assert!(r.read(9).is_err());
        }
    }

    #[test]
    fn single_bits() {
        let mut out = Vec::new();
        let mut w = BitWriter::new(&mut out);
        for i in 0..13 {
            w.bit(i % 3 == 0);
        }
        w.finish();
        let mut r = BitReader::new(&out);
        for i in 0..13 {
            assert_eq!(r.bit().unwrap(), i % 3 == 0);
        }
        assert_eq!(r.read(3).unwrap(), 0);
        assert!(r.bit().is_err());
    }
}
