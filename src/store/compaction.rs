//! Compaction: merge a partition's segments into one, resolving duplicates by rank.
//!
//! The merged segment takes the highest input rank, which is below the rank of any
//! segment flushed later (flush and compaction are serialised), so precedence between
//! old and new data is preserved. Inputs are marked obsolete and deleted when the last
//! reader holding them lets go.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use super::merge::{merge_runs, Run};
use super::view::LiveSegment;
use super::{now_ns, Inner, StoreError};
use crate::index::SeriesId;
use crate::segment::SegmentOptions;

impl Inner {
    /// Compacts partitions that need it (all multi-segment ones when `all`).
    pub(crate) fn compact(&self, all: bool) -> Result<usize, StoreError> {
        let mut manifest = self.maint.lock();
        let view = self.view.load_full();
        let mut by_partition: BTreeMap<i64, Vec<Arc<LiveSegment>>> = BTreeMap::new();
        // Rollups are derived data: never merged (downsampling rebuilds them instead).
        for s in view.segments.iter().filter(|s| s.entry.is_raw()) {
            by_partition.entry(s.entry.partition_start).or_default().push(s.clone());
        }
        let now = now_ns();
        let mut done = 0;
        for (p, segs) in by_partition {
            let sealed = p.saturating_add(self.partition_width) < now;
            let due = segs.len() >= self.opts.compact_min_segments.max(2) || (segs.len() >= 2 && (sealed || all));
            if !due {
                continue;
            }
            let started = Instant::now();
            let merged = self.merge_partition(p, &segs, &mut manifest, &|_| true)?;
            self.replace_segments(&mut manifest, &segs, merged)?;
            self.metrics.compactions.add(1);
            tracing::debug!(
                partition = p,
                inputs = segs.len(),
                secs = started.elapsed().as_secs_f64(),
                "compacted"
            );
            done += 1;
        }
        Ok(done)
    }

    /// Installs `merged` (if any) in place of `segs`: manifest first, then the view; the
    /// inputs are deleted once unused (their objects, if tiered, queued for deletion).
    pub(crate) fn replace_segments(
        &self,
        manifest: &mut super::manifest::Manifest,
        segs: &[Arc<LiveSegment>],
        merged: Option<Arc<LiveSegment>>,
    ) -> Result<(), StoreError> {
        let mut next = manifest.clone();
        next.remove_segments(|e| segs.iter().any(|s| s.entry.file == e.file));
        next.segments.extend(merged.iter().map(|m| m.entry.clone()));
        next.store(&self.dir)?;
        *manifest = next;
        self.edit_view(|v| {
            v.segments.retain(|s| !segs.iter().any(|x| Arc::ptr_eq(s, x)));
            v.segments.extend(merged);
            v.sort_segments();
        });
        for s in segs {
            s.seg.mark_obsolete();
        }
        Ok(())
    }

    /// Merges `segs` (one partition) into one new segment holding the series `keep`
    /// accepts; None when no such series has samples.
    pub(crate) fn merge_partition(
        &self,
        p: i64,
        segs: &[Arc<LiveSegment>],
        manifest: &mut super::manifest::Manifest,
        keep: &dyn Fn(SeriesId) -> bool,
    ) -> Result<Option<Arc<LiveSegment>>, StoreError> {
        let ids: BTreeSet<SeriesId> = segs
            .iter()
            .flat_map(|s| s.local_of.ids())
            .filter(|&id| keep(id))
            .collect();
        if ids.is_empty() {
            return Ok(None);
        }
        let order: Vec<_> = {
            let index = self.index.read();
            let mut v: Vec<_> = ids
                .into_iter()
                .filter_map(|id| index.get(id).map(|e| (id, e.labels.clone(), e.kind)))
                .collect();
            v.sort_by(|a, b| a.1.cmp(&b.1));
            v
        };
        let rank = segs.iter().map(|s| s.entry.rank).max().unwrap_or(0);
        let seq = manifest.next_seq;
        manifest.next_seq += 1;
        let opts = SegmentOptions {
            zstd_level: Some(self.opts.compaction_zstd_level),
            ..self.opts.segment
        };
        let mut w = self.create_segment(p, seq, rank, opts)?;
        // `segs` is in rank order (the view keeps segments sorted), so runs are in precedence order.
        for (id, labels, kind) in order {
            let mut runs = Vec::with_capacity(segs.len());
            for s in segs {
                if let Some(local) = s.local_of.get(id) {
                    let mut r = Run::default();
                    s.seg
                        .read_series(local as usize, i64::MIN, i64::MAX, &mut r.ts, &mut r.vals)?;
                    runs.push(r);
                }
            }
            let merged = merge_runs(kind, runs);
            if !merged.ts.is_empty() {
                w.add_series(&labels, kind, &merged.ts, &merged.vals)
                    .map_err(|source| StoreError::Io {
                        path: w.path().to_path_buf(),
                        source,
                    })?;
            }
        }
        self.finish_segment(w, p, rank).map(Some)
    }
}
