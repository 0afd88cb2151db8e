//! LEB128 varints, zigzag, and a bounds-checked reader over untrusted bytes.
//!
//! Every decoder in tally reads through [`ByteReader`], so a truncated or corrupt
//! input surfaces as [`DecodeError`] rather than a panic or an out-of-bounds read.

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("unexpected end of data at byte {0}")]
    Truncated(usize),
    #[error("varint too long at byte {0}")]
    VarintOverflow(usize),
    #[error("invalid data: {0}")]
    Invalid(String),
}

#[inline]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

#[inline]
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
pub fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag(v));
}

/// Length-prefixed bytes.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A cursor over untrusted bytes; every accessor checks bounds.
#[derive(Debug, Clone)]
pub struct ByteReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        ByteReader { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    #[inline]
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError::Truncated(self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn u16_le(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32_le(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64_le(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn i64_le(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    #[inline]
    pub fn uvarint(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut v: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err(DecodeError::VarintOverflow(start));
            }
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err(DecodeError::VarintOverflow(start));
            }
        }
    }

    #[inline]
    pub fn ivarint(&mut self) -> Result<i64, DecodeError> {
        self.uvarint().map(unzigzag)
    }

    /// A varint that must fit `usize` and not exceed `max` (guards allocations sized from input).
    pub fn len_prefix(&mut self, max: usize) -> Result<usize, DecodeError> {
        let at = self.pos;
        let v = self.uvarint()?;
        if v > max as u64 {
            return Err(DecodeError::Invalid(format!(
                "length {v} at byte {at} exceeds limit {max}"
            )));
        }
        Ok(v as usize)
    }

    /// Length-prefixed bytes written by [`put_bytes`].
    pub fn prefixed_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len_prefix(self.remaining())?;
        self.bytes(n)
    }

    pub fn prefixed_str(&mut self) -> Result<&'a str, DecodeError> {
        let at = self.pos;
        let b = self.prefixed_bytes()?;
        std::str::from_utf8(b).map_err(|_| DecodeError::Invalid(format!("invalid UTF-8 string at byte {at}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varints_roundtrip(vs in proptest::collection::vec(any::<i64>(), 0..64)) {
            let mut out = Vec::new();
            for &v in &vs { put_ivarint(&mut out, v); put_uvarint(&mut out, v as u64); }
            let mut r = ByteReader::new(&out);
            for &v in &vs {
                prop_assert_eq!(r.ivarint().unwrap(), v);
                prop_assert_eq!(r.uvarint().unwrap(), v as u64);
            }
            prop_assert!(r.is_empty());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = ByteReader::new(&bytes);
            while r.uvarint().is_ok() {}
            let mut r = ByteReader::new(&bytes);
            let _ = r.prefixed_str();
        }
    }

    #[test]
    fn overlong_varint_is_rejected() {
        let bytes = [0xffu8; 11];
        assert!(matches!(
            ByteReader::new(&bytes).uvarint(),
            Err(DecodeError::VarintOverflow(0))
        ));
        assert!(matches!(
            ByteReader::new(&[0x80]).uvarint(),
            Err(DecodeError::Truncated(1))
        ));
    }
}
