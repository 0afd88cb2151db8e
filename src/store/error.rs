use std::path::PathBuf;

use crate::index::KindMismatch;
use crate::segment::SegmentError;
use crate::wal::WalError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data directory {dir} is locked by another tally process (only one process may open it)")]
    Locked { dir: PathBuf },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt manifest {file}: {reason}")]
    CorruptManifest { file: String, reason: String },
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error(transparent)]
    Tier(#[from] crate::tier::TierError),
    #[error(transparent)]
    KindMismatch(#[from] KindMismatch),
    #[error("series {labels}: sample {index} is a {got} value but the series holds {expected} values")]
    ValueKind {
        labels: String,
        index: usize,
        got: &'static str,
        expected: &'static str,
    },
    #[error("invalid option {name}: {reason}")]
    Options { name: &'static str, reason: String },
    #[error("store is closed")]
    Closed,
    #[error("internal error: {0}")]
    Internal(String),
}
