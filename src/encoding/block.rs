//! Sample blocks: one encoded run of (timestamp, value) samples of a single series.
//!
//! # Byte layout
//!
//! ```text
//! u8       flags: bit 0 = payload is zstd-compressed; bits 1..=7 reserved, must be 0
//! if bit 0 is clear:
//!   payload (the rest of the block)
//! if bit 0 is set:
//!   uvarint  payload length P in bytes (<= MAX_BLOCK_PAYLOAD)
//!   one zstd frame (the rest of the block) decompressing to exactly P bytes
//!
//! payload:
//!   uvarint  sample count n, 1 <= n <= MAX_BLOCK_SAMPLES
//!   timestamps section (starts with its tag byte; see `timestamps.rs`)
//!   values section (starts with its tag byte):
//!     ValueKind::Float -> "floats" section (see `floats.rs`), raw f64 bits
//!     ValueKind::Money -> "ints" section (see `ints.rs`), i64 nano-units
//!   nothing else: trailing bytes are an error
//! ```
//!
//! The value kind is not stored in the block; the series knows it. Decoding checks
//! that the timestamps are strictly increasing.

use std::cell::RefCell;

use super::floats::{decode_floats, encode_floats};
use super::ints::{decode_ints, encode_ints};
use super::timestamps::{decode_timestamps, encode_timestamps};
use super::varint::{put_uvarint, ByteReader, DecodeError};
use crate::model::ValueKind;

/// Most samples one block may hold; decoding rejects larger counts.
pub const MAX_BLOCK_SAMPLES: usize = 1 << 16;
/// Most bytes an uncompressed payload may have. The worst case per sample is 8 bytes
/// of timestamp (64-bit fields) plus under 10 bytes of value (a Gorilla new window:
/// 2 + 5 + 6 + 64 bits), plus per-miniblock and section headers; 24 bytes per sample
/// plus 1 KiB bounds it with room to spare.
pub const MAX_BLOCK_PAYLOAD: usize = MAX_BLOCK_SAMPLES * 24 + 1024;

const FLAG_ZSTD: u8 = 1;

/// Encoding choices for [`encode_block`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockEncodeOptions {
    /// `None`: never zstd. `Some(l)`: try zstd at level `l`; keep it only if the block
    /// shrinks by at least 10%.
    pub zstd_level: Option<i32>,
}

/// Encodes one block, appending it to `out`.
///
/// Preconditions (caller guarantees): `ts.len() == values.len()`, `1 <= len <=
/// MAX_BLOCK_SAMPLES`, `ts` strictly increasing. `values` are raw u64: for
/// [`ValueKind::Float`] the f64 bit pattern (round-trips bit-exactly, NaN payloads
/// included); for [`ValueKind::Money`] an i64 count of nano-units cast to u64.
pub fn encode_block(ts: &[i64], values: &[u64], kind: ValueKind, opts: &BlockEncodeOptions, out: &mut Vec<u8>) {
    debug_assert_eq!(ts.len(), values.len());
    debug_assert!(!ts.is_empty() && ts.len() <= MAX_BLOCK_SAMPLES);
    debug_assert!(ts.windows(2).all(|w| w[0] < w[1]));
    let start = out.len();
    out.push(0);
    put_uvarint(out, ts.len() as u64);
    encode_timestamps(ts, out);
    match kind {
        ValueKind::Float => encode_floats(values, out),
        ValueKind::Money => {
            let ints: Vec<i64> = values.iter().map(|&v| v as i64).collect();
            encode_ints(&ints, out);
        }
    }
    if let Some(level) = opts.zstd_level {
        let payload = &out[start + 1..];
        let plen = payload.len();
        if let Ok(frame) = zstd::bulk::compress(payload, level) {
            let mut hdr = Vec::with_capacity(10);
            put_uvarint(&mut hdr, plen as u64);
            // Keep zstd only if it saves at least 10% of the block.
            if (1 + hdr.len() + frame.len()) * 10 <= (1 + plen) * 9 {
                out.truncate(start);
                out.push(FLAG_ZSTD);
                out.extend_from_slice(&hdr);
                out.extend_from_slice(&frame);
            }
        }
    }
}

thread_local! {
    /// A reusable decompression context and buffer (creating a context per block is costly).
    static ZSTD_SCRATCH: RefCell<Option<(zstd::bulk::Decompressor<'static>, Vec<u8>)>> =
        const { RefCell::new(None) };
}

/// Decodes a block produced by [`encode_block`], appending to `ts_out` / `vals_out`;
/// returns the sample count. Never panics on any input: corrupt bytes give a
/// [`DecodeError`], and on error both outputs are left as they were.
pub fn decode_block(
    bytes: &[u8],
    kind: ValueKind,
    ts_out: &mut Vec<i64>,
    vals_out: &mut Vec<u64>,
) -> Result<usize, DecodeError> {
    let (t0, v0) = (ts_out.len(), vals_out.len());
    let res = decode_block_inner(bytes, kind, ts_out, vals_out);
    if res.is_err() {
        ts_out.truncate(t0);
        vals_out.truncate(v0);
    }
    res
}

fn decode_block_inner(
    bytes: &[u8],
    kind: ValueKind,
    ts_out: &mut Vec<i64>,
    vals_out: &mut Vec<u64>,
) -> Result<usize, DecodeError> {
    let mut r = ByteReader::new(bytes);
    let flags = r.u8()?;
    if flags & !FLAG_ZSTD != 0 {
        return Err(DecodeError::Invalid(format!("unknown block flags {flags:#04x}")));
    }
    if flags & FLAG_ZSTD == 0 {
        return decode_payload(r.rest(), kind, ts_out, vals_out);
    }
    let plen = r.len_prefix(MAX_BLOCK_PAYLOAD)?;
    let frame = r.rest();
    ZSTD_SCRATCH.with(|cell| {
        let mut slot = cell
            .try_borrow_mut()
            .map_err(|_| DecodeError::Invalid("re-entrant block decode".into()))?;
        if slot.is_none() {
            let d = zstd::bulk::Decompressor::new().map_err(|e| DecodeError::Invalid(format!("zstd context: {e}")))?;
            *slot = Some((d, Vec::new()));
        }
        let Some((dec, buf)) = slot.as_mut() else {
            return Err(DecodeError::Invalid("zstd context missing".into()));
        };
        buf.clear();
        // plen <= MAX_BLOCK_PAYLOAD, so this allocation is bounded; zstd writes at most
        // buf.capacity() bytes (which may exceed plen; checked below).
        buf.reserve(plen);
        let got = dec
            .decompress_to_buffer(frame, buf)
            .map_err(|e| DecodeError::Invalid(format!("zstd: {e}")))?;
        if got != plen || buf.len() != plen {
            return Err(DecodeError::Invalid(format!(
                "zstd payload is {got} bytes, header says {plen}"
            )));
        }
        decode_payload(buf, kind, ts_out, vals_out)
    })
}

fn decode_payload(
    payload: &[u8],
    kind: ValueKind,
    ts_out: &mut Vec<i64>,
    vals_out: &mut Vec<u64>,
) -> Result<usize, DecodeError> {
    let mut r = ByteReader::new(payload);
    let n = r.len_prefix(MAX_BLOCK_SAMPLES)?;
    if n == 0 {
        return Err(DecodeError::Invalid("empty block".into()));
    }
    let ts_start = ts_out.len();
    ts_out.reserve(n);
    decode_timestamps(&mut r, n, ts_out)?;
    if !ts_out[ts_start..].windows(2).all(|w| w[0] < w[1]) {
        return Err(DecodeError::Invalid("timestamps not strictly increasing".into()));
    }
    vals_out.reserve(n);
    match kind {
        ValueKind::Float => decode_floats(&mut r, n, vals_out)?,
        ValueKind::Money => decode_ints(&mut r, n, vals_out)?,
    }
    if !r.is_empty() {
        return Err(DecodeError::Invalid(format!(
            "{} trailing bytes after block payload",
            r.remaining()
        )));
    }
    Ok(n)
}
