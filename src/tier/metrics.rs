//! Tiering self-metrics, rendered on `/metrics`.

use crate::store::metrics::{Counter, Histogram};

#[derive(Debug, Default)]
pub struct TierMetrics {
    /// Bytes of segment files uploaded and verified.
    pub bytes_tiered: Counter,
    pub segments_tiered: Counter,
    /// Segments due for upload that are not uploaded yet (gauge, set by each pass).
    pub pending_uploads: std::sync::atomic::AtomicU64,
    pub upload_errors: Counter,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    /// Bytes fetched from the object store by queries (cache misses).
    pub bytes_fetched: Counter,
    pub requests: Counter,
    pub request_errors: Counter,
    pub request_seconds: Histogram,
    pub objects_deleted: Counter,
}
