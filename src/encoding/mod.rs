//! Column encodings for sample blocks, and the varint primitives every file format uses.
//!
//! A block ([`block`]) holds a sample count, a timestamp section ([`timestamps`]) and a
//! value section ([`floats`] for Float series, [`ints`] for Money series), optionally
//! zstd-compressed. Each section starts with a tag byte naming its encoding, so
//! encodings can evolve without a global format version.

pub mod bits;
pub mod block;
pub mod floats;
pub mod ints;
pub mod timestamps;
pub mod varint;

pub use block::{
    decode_block, decode_block_range, encode_block, encode_block_tracked, BlockEncodeOptions, ZstdOutcomes,
    MAX_BLOCK_PAYLOAD, MAX_BLOCK_SAMPLES,
};
pub use varint::{ByteReader, DecodeError};

/// Keeps, of the values appended to `v` from index `base` on, only those at offsets
/// `keep` (within the appended run), moved down to `base`: how a range decode cuts a
/// section it could not decode partially.
pub(crate) fn keep_only<T: Copy>(v: &mut Vec<T>, base: usize, keep: std::ops::Range<usize>) {
    let len = keep.len();
    v.copy_within(base + keep.start..base + keep.end, base);
    v.truncate(base + len);
}
