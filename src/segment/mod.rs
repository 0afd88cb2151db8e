//! Immutable columnar segment files: one or more per time partition.
//!
//! ```text
//! [header 16 B][block][block]...[series table (zstd)][footer 88 B]
//! ```
//! Each series' samples are cut into blocks of at most `block_samples`, encoded by
//! [`crate::encoding`]. The series table lists every series' labels, kind and block
//! index (time range, count, offset, length, crc32c). Exact bytes: storage-format.md.

mod footer;
mod reader;
mod writer;

pub use footer::{Footer, FOOTER_LEN, HEADER_LEN, SEGMENT_VERSION};
pub use reader::{BlockMeta, Segment, SegmentError, SeriesMeta};
pub use writer::{SegmentInfo, SegmentOptions, SegmentWriter};
