//! Column encodings for sample blocks, and the varint primitives every file format uses.

pub mod block;
pub mod varint;

pub use block::{decode_block, encode_block, BlockEncodeOptions, MAX_BLOCK_SAMPLES};
pub use varint::{ByteReader, DecodeError};
