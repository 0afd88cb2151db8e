//! Column encodings for sample blocks, and the varint primitives every file format uses.

pub mod varint;

pub use varint::{ByteReader, DecodeError};
