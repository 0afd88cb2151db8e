//! Segment header and footer. The footer is fixed-size at the end of the file so a
//! reader (local mmap or an object-store range request) finds the series table with one
//! read; it carries its own checksum and the table's.

use crate::encoding::{ByteReader, DecodeError};

pub const SEGMENT_MAGIC: &[u8; 8] = b"TALLYSEG";
pub const FOOTER_MAGIC: &[u8; 8] = b"TALLYEND";
pub const SEGMENT_VERSION: u16 = 1;
pub const HEADER_LEN: usize = 16;
pub const FOOTER_LEN: usize = 88;
/// Footer flag: the series table is zstd-compressed.
pub const FLAG_TABLE_ZSTD: u16 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub table_offset: u64,
    pub table_len: u64,
    pub table_raw_len: u64,
    pub series_count: u32,
    pub table_crc: u32,
    pub min_t: i64,
    pub max_t: i64,
    pub partition_start: i64,
    pub rank: u64,
    pub samples: u64,
    pub version: u16,
    pub flags: u16,
}

pub fn header_bytes() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..10].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = Vec::with_capacity(FOOTER_LEN);
        b.extend_from_slice(&self.table_offset.to_le_bytes());
        b.extend_from_slice(&self.table_len.to_le_bytes());
        b.extend_from_slice(&self.table_raw_len.to_le_bytes());
        b.extend_from_slice(&self.series_count.to_le_bytes());
        b.extend_from_slice(&self.table_crc.to_le_bytes());
        b.extend_from_slice(&self.min_t.to_le_bytes());
        b.extend_from_slice(&self.max_t.to_le_bytes());
        b.extend_from_slice(&self.partition_start.to_le_bytes());
        b.extend_from_slice(&self.rank.to_le_bytes());
        b.extend_from_slice(&self.samples.to_le_bytes());
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&self.flags.to_le_bytes());
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b.extend_from_slice(FOOTER_MAGIC);
        let mut out = [0u8; FOOTER_LEN];
        out.copy_from_slice(&b);
        out
    }

    /// Parses and verifies the last [`FOOTER_LEN`] bytes of a segment.
    pub fn decode(bytes: &[u8]) -> Result<Footer, DecodeError> {
        if bytes.len() != FOOTER_LEN {
            return Err(DecodeError::Invalid(format!(
                "footer must be {FOOTER_LEN} bytes, got {}",
                bytes.len()
            )));
        }
        if &bytes[80..] != FOOTER_MAGIC {
            return Err(DecodeError::Invalid(
                "footer magic missing (truncated or not a segment)".into(),
            ));
        }
        let stored = u32::from_le_bytes([bytes[76], bytes[77], bytes[78], bytes[79]]);
        if crc32c::crc32c(&bytes[..76]) != stored {
            return Err(DecodeError::Invalid("footer checksum mismatch".into()));
        }
        let mut r = ByteReader::new(&bytes[..76]);
        let f = Footer {
            table_offset: r.u64_le()?,
            table_len: r.u64_le()?,
            table_raw_len: r.u64_le()?,
            series_count: r.u32_le()?,
            table_crc: r.u32_le()?,
            min_t: r.i64_le()?,
            max_t: r.i64_le()?,
            partition_start: r.i64_le()?,
            rank: r.u64_le()?,
            samples: r.u64_le()?,
            version: r.u16_le()?,
            flags: r.u16_le()?,
        };
        if f.version != SEGMENT_VERSION {
            return Err(DecodeError::Invalid(format!(
                "unsupported segment version {}",
                f.version
            )));
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_roundtrip_and_every_flipped_bit_is_caught() {
        let f = Footer {
            table_offset: 16,
            table_len: 100,
            table_raw_len: 300,
            series_count: 3,
            table_crc: 42,
            min_t: -5,
            max_t: 99,
            partition_start: 0,
            rank: 7,
            samples: 1000,
            version: SEGMENT_VERSION,
            flags: FLAG_TABLE_ZSTD,
        };
        let b = f.encode();
        assert_eq!(Footer::decode(&b).unwrap(), f);
        for i in 0..FOOTER_LEN * 8 {
            let mut c = b;
            c[i / 8] ^= 1 << (i % 8);
            assert!(Footer::decode(&c).is_err(), "bit {i} flip undetected");
        }
    }
}
