//! TEMPORARY stand-in for the block codec (replaced by the real encodings branch).

use super::varint::{put_ivarint, put_uvarint, ByteReader, DecodeError};
use crate::model::ValueKind;

pub const MAX_BLOCK_SAMPLES: usize = 1 << 16;

#[derive(Debug, Clone, Copy, Default)]
pub struct BlockEncodeOptions {
    pub zstd_level: Option<i32>,
}

pub fn encode_block(ts: &[i64], values: &[u64], _kind: ValueKind, _opts: &BlockEncodeOptions, out: &mut Vec<u8>) {
    out.push(0);
    put_uvarint(out, ts.len() as u64);
    let mut prev = 0i64;
    for &t in ts {
        put_ivarint(out, t.wrapping_sub(prev));
        prev = t;
    }
    for &v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

pub fn decode_block(
    bytes: &[u8],
    _kind: ValueKind,
    ts_out: &mut Vec<i64>,
    vals_out: &mut Vec<u64>,
) -> Result<usize, DecodeError> {
    let mut r = ByteReader::new(bytes);
    let _flags = r.u8()?;
    let n = r.len_prefix(MAX_BLOCK_SAMPLES)?;
    let mut prev = 0i64;
    for _ in 0..n {
        prev = prev.wrapping_add(r.ivarint()?);
        ts_out.push(prev);
    }
    for _ in 0..n {
        vals_out.push(r.u64_le()?);
    }
    Ok(n)
}
