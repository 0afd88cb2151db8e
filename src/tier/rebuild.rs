//! `tally rebuild --from-object-store`: restore a lost data directory from the bucket.
//!
//! The bucket holds every tiered segment and a copy of the manifest naming them
//! ([`BUCKET_MANIFEST`]). Rebuild downloads that manifest, fetches each segment's
//! stub (series table + footer, two ranged reads) and writes a fresh local manifest;
//! block bytes stay in the bucket and are read on demand like on the original node.
//! Data that was never tiered (recent partitions, the WAL) is not in the bucket: it has
//! to be re-ingested (e.g. Kafka replay or `backfill` for the window after the newest
//! tiered partition), which the report states.

use std::path::Path;

use super::{ObjectTier, TierError, TierOptions, BUCKET_MANIFEST};
use crate::segment::{Footer, FOOTER_LEN, HEADER_LEN};
use crate::store::fsutil::write_atomic;
use crate::store::manifest::{Manifest, MANIFEST_FILE};

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("{0} already holds a tally store (MANIFEST exists); rebuild only into an empty or missing directory")]
    NotEmpty(String),
    #[error(transparent)]
    Tier(#[from] TierError),
    #[error("bucket manifest: {0}")]
    Manifest(String),
    #[error("segment {key}: {reason}")]
    Segment { key: String, reason: String },
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RebuildReport {
    pub segments: usize,
    pub samples: u64,
    pub bytes_in_bucket: u64,
    pub stub_bytes: u64,
    /// End of the newest restored partition (UTC ns); data after it was not tiered.
    pub restored_through_ns: Option<i64>,
}

/// Restores `dir` from the bucket; `progress(done, total)` after each segment.
pub fn rebuild(dir: &Path, opts: &TierOptions, progress: impl Fn(usize, usize)) -> Result<RebuildReport, RebuildError> {
    if dir.join(MANIFEST_FILE).exists() {
        return Err(RebuildError::NotEmpty(dir.display().to_string()));
    }
    let tier = ObjectTier::connect(opts)?;
    let raw = tier.get(BUCKET_MANIFEST)?;
    let manifest = Manifest::decode(&raw, &format!("{}/{BUCKET_MANIFEST}", tier.url()))
        .map_err(|e| RebuildError::Manifest(e.to_string()))?;
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| RebuildError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut report = RebuildReport::default();
    let total = manifest.segments.len();
    for (i, entry) in manifest.segments.iter().enumerate() {
        let Some(key) = &entry.tiered else {
            return Err(RebuildError::Manifest(format!("entry {} is not tiered", entry.file)));
        };
        let bad = |reason: String| RebuildError::Segment {
            key: key.clone(),
            reason,
        };
        let size = entry.bytes;
        if size < (HEADER_LEN + FOOTER_LEN) as u64 {
            return Err(bad(format!("{size} bytes is shorter than a segment")));
        }
        let footer_bytes = tier.get_range_uncached(key, size - FOOTER_LEN as u64..size)?;
        let footer = Footer::decode(&footer_bytes).map_err(|e| bad(e.to_string()))?;
        if footer.table_offset < HEADER_LEN as u64 || footer.table_offset > size - FOOTER_LEN as u64 {
            return Err(bad("series table offset out of range".into()));
        }
        let stub = tier.get_range_uncached(key, footer.table_offset..size)?;
        let path = dir.join(entry.stub_file());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        write_atomic(&path, &stub).map_err(io(&path))?;
        // Verify now rather than at the first query: the stub must parse as this object's tail.
        crate::segment::Segment::open_tiered(&path, tier.clone(), key, size).map_err(|e| bad(e.to_string()))?;
        report.segments += 1;
        report.samples += entry.samples;
        report.bytes_in_bucket += size;
        report.stub_bytes += stub.len() as u64;
        let end = entry.partition_start.saturating_add(manifest.partition_width_ns);
        report.restored_through_ns = Some(report.restored_through_ns.map_or(end, |e: i64| e.max(end)));
        progress(i + 1, total);
    }
    let mut local = manifest.clone();
    local.wal_checkpoint = None;
    local.tier_garbage.clear();
    // Positions are not restored: the bucket lacks the untiered tail they would cover.
    local.source_positions.clear();
    local.store(dir).map_err(|e| RebuildError::Manifest(e.to_string()))?;
    Ok(report)
}
