//! Object-storage tiering: sealed partitions move to an S3-compatible bucket (or a
//! `file://` folder) and stay queryable through ranged, cached reads.
//!
//! This module is the object I/O ([`ObjectTier`]: blocking requests with deadlines, a
//! page cache, metrics), the URL → client mapping and `rebuild`. *When* a partition is
//! tiered and how the manifest and the read view change is store policy and lives in
//! `store/tiering.rs`; how a segment reads its bytes remotely is in `segment/reader.rs`.

mod cache;
mod metrics;
mod object;
mod options;
pub mod rebuild;
mod url;

pub use cache::PageCache;
pub use metrics::TierMetrics;
pub use object::{ObjectTier, TierError};
pub use options::TierOptions;

/// Key of the copy of the manifest kept beside the tiered segments (for `rebuild`).
pub const BUCKET_MANIFEST: &str = "MANIFEST";
