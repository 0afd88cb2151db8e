//! Downsampling: partitions that ended before `now - downsample_after` get one rollup
//! segment per resolution (see [`rollup`](super::rollup)), written with the ordinary
//! segment writer so tiering, retention, checksums and stubs apply unchanged.
//!
//! A rollup is built only from a partition compacted to a single raw segment and
//! records that segment's rank (`rollup_of`); when late data changes the partition,
//! the rank changes, queries stop trusting the rollup and the next pass rebuilds it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::manifest::Manifest;
use super::open::register_rollup;
use super::rollup::{self, RESOLUTIONS};
use super::view::LiveSegment;
use super::{Inner, StoreError};
use crate::model::{Labels, SeriesKind};
use crate::segment::SegmentOptions;

impl Inner {
    /// Writes missing or stale rollups of due partitions; returns how many segments it wrote.
    pub(crate) fn downsample_pass(&self, now_ns: i64) -> Result<usize, StoreError> {
        let Some(after) = self.opts.downsample_after else {
            return Ok(0);
        };
        let cutoff = now_ns.saturating_sub(i64::try_from(after.as_nanos()).unwrap_or(i64::MAX));
        let mut manifest = self.maint.lock();
        let view = self.view.load_full();
        type Parts = BTreeMap<i64, (Vec<Arc<LiveSegment>>, Vec<Arc<LiveSegment>>)>;
        let mut parts: Parts = BTreeMap::new();
        for s in &view.segments {
            let e = parts.entry(s.entry.partition_start).or_default();
            if s.entry.is_raw() {
                e.0.push(s.clone());
            } else {
                e.1.push(s.clone());
            }
        }
        let mut written = 0;
        for (p, (raw, rollups)) in parts {
            // Only whole sealed partitions, compacted to one segment (compaction merges
            // sealed multi-segment partitions first; the next pass picks them up).
            if p.saturating_add(self.partition_width) > cutoff || raw.len() != 1 {
                continue;
            }
            let raw = &raw[0];
            for res in RESOLUTIONS {
                if self.partition_width % res != 0 {
                    continue;
                }
                let existing: Vec<_> = rollups
                    .iter()
                    .filter(|r| r.entry.resolution_ns == Some(res))
                    .cloned()
                    .collect();
                if existing.len() == 1 && existing[0].entry.rollup_of == Some(raw.entry.rank) {
                    continue;
                }
                let built = self.build_rollup(p, raw, res, &mut manifest)?;
                written += usize::from(built.is_some());
                self.replace_segments(&mut manifest, &existing, built)?;
            }
        }
        Ok(written)
    }

    /// Computes the rollups of one raw segment at `res` into a new segment; None when a
    /// money sum does not fit the stored i64 (queries then compute from raw, exactly).
    fn build_rollup(
        &self,
        p: i64,
        raw: &LiveSegment,
        res: i64,
        manifest: &mut Manifest,
    ) -> Result<Option<Arc<LiveSegment>>, StoreError> {
        let mut out: Vec<(Labels, SeriesKind, Vec<i64>, Vec<u64>)> = Vec::new();
        let (mut ts, mut vals) = (Vec::new(), Vec::new());
        for (local, meta) in raw.seg.series().iter().enumerate() {
            ts.clear();
            vals.clear();
            raw.seg.read_series(local, i64::MIN, i64::MAX, &mut ts, &mut vals)?;
            let windows = rollup::compute(meta.kind, &ts, &vals, res);
            let encoded = match rollup::encode(meta.kind, &windows, res) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(partition = p, series = %meta.labels, error = %e, "partition not downsampled; queries compute its rollups from raw data");
                    return Ok(None);
                }
            };
            for (agg, t, v) in encoded {
                out.push((
                    rollup::rollup_labels(&meta.labels, agg),
                    agg.stored_kind(meta.kind),
                    t,
                    v,
                ));
            }
        }
        if out.is_empty() {
            return Ok(None);
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        let seq = manifest.next_seq;
        manifest.next_seq += 1;
        let opts = SegmentOptions {
            zstd_level: Some(self.opts.compaction_zstd_level),
            ..self.opts.segment
        };
        let rank = raw.entry.rank;
        let mut w = self.create_segment(p, seq, rank, opts)?;
        for (labels, kind, t, v) in &out {
            w.add_series(labels, *kind, t, v).map_err(|source| StoreError::Io {
                path: w.path().to_path_buf(),
                source,
            })?;
        }
        let (seg, mut entry) = self.finish_file(w, p, rank)?;
        entry.resolution_ns = Some(res);
        entry.rollup_of = Some(rank);
        tracing::debug!(partition = p, resolution_ns = res, file = %entry.file, "rollup written");
        let index = self.index.read();
        Ok(Some(Arc::new(register_rollup(&index, seg, entry))))
    }
}
