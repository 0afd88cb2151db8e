//! Flush: rotate the WAL and head, write the frozen head into one segment per partition
//! it touches, install them with a manifest that checkpoints the old WAL generation,
//! then delete that generation.
//!
//! Crash safety: until the manifest rename, the old generation is still replayed and the
//! new segment files are unreferenced (deleted at open); after it, replay skips the
//! generation and the segments are live. There is no state in which data counts twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;

use super::head::Head;
use super::manifest::{Manifest, SegmentEntry};
use super::open::{register, SEGMENTS_DIR, WAL_DIR};
use super::view::{LiveSegment, View};
use super::{Inner, StoreError};
use crate::index::SeriesId;
use crate::segment::{Segment, SegmentOptions, SegmentWriter};
use crate::wal::{self, WalWriter};

impl Inner {
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        let mut manifest = self.maint.lock();
        let started = Instant::now();
        // 1. Rotate: new appends go to a new head and WAL generation.
        let (frozen, done_gen, positions) = {
            let mut w = self.writer.lock();
            if w.head.read().samples() == 0 {
                return Ok(());
            }
            w.wal.sync()?;
            let done_gen = w.wal.generation();
            let mut next = WalWriter::create(&self.dir.join(WAL_DIR), done_gen + 1, self.opts.fsync)?;
            next.on_fsync = w.wal.on_fsync.clone();
            w.wal = next;
            w.declared.clear();
            let frozen = std::mem::replace(&mut w.head, Arc::new(RwLock::new(Head::new())));
            w.head_started = Instant::now();
            let new_head = w.head.clone();
            self.edit_view(|v| {
                v.frozen.push(frozen.clone());
                v.head = new_head;
            });
            (frozen, done_gen, w.positions.clone())
        };
        // 2. Write segments.
        let written = self.write_head(&frozen, &mut manifest)?;
        // 3. Install.
        let mut next = manifest.clone();
        next.segments.extend(written.iter().map(|l| l.entry.clone()));
        next.wal_checkpoint = Some(done_gen);
        next.source_positions = positions;
        next.store(&self.dir)?;
        *manifest = next;
        self.edit_view(|v| {
            v.segments.extend(written.iter().cloned());
            v.sort_segments();
            v.frozen.retain(|h| !Arc::ptr_eq(h, &frozen));
        });
        // 4. The checkpointed generations are no longer needed.
        for g in wal::list_generations(&self.dir.join(WAL_DIR))? {
            if g <= done_gen {
                let _ = std::fs::remove_file(self.dir.join(WAL_DIR).join(wal::log_file_name(g)));
            }
        }
        self.metrics.flushes.add(1);
        self.metrics.flush_seconds.observe(started.elapsed().as_secs_f64());
        tracing::debug!(
            segments = written.len(),
            secs = started.elapsed().as_secs_f64(),
            "head flushed"
        );
        Ok(())
    }

    /// Applies `f` to a copy of the current view and publishes it.
    pub(crate) fn edit_view(&self, f: impl FnOnce(&mut View)) {
        let _g = self.view_edit.lock();
        let mut v = View::clone(&self.view.load());
        f(&mut v);
        self.view.store(Arc::new(v));
        self.changes.view_edited();
    }

    /// Writes one segment per partition touched by `head`, series in label order.
    fn write_head(&self, head: &RwLock<Head>, manifest: &mut Manifest) -> Result<Vec<Arc<LiveSegment>>, StoreError> {
        let head = head.read();
        let order: Vec<(SeriesId, crate::model::Labels, crate::model::SeriesKind)> = {
            let index = self.index.read();
            let mut ids: Vec<_> = head
                .ids()
                .filter_map(|id| index.get(id).map(|e| (id, e.labels.clone(), e.kind)))
                .collect();
            ids.sort_by(|a, b| a.1.cmp(&b.1));
            ids
        };
        let mut writers: BTreeMap<i64, (SegmentWriter, u64)> = BTreeMap::new();
        let (mut ts, mut vals) = (Vec::new(), Vec::new());
        for (id, labels, kind) in &order {
            ts.clear();
            vals.clear();
            head.read(*id, i64::MIN, i64::MAX, &mut ts, &mut vals)
                .map_err(|e| StoreError::Internal(format!("head chunk decode failed: {e}")))?;
            let mut i = 0;
            while i < ts.len() {
                let p = self.partition_of(ts[i]);
                let end = i + ts[i..].partition_point(|&t| t < p.saturating_add(self.partition_width));
                let (w, _) = match writers.entry(p) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        let seq = manifest.next_seq;
                        manifest.next_seq += 1;
                        e.insert((self.create_segment(p, seq, seq, self.opts.segment)?, seq))
                    }
                };
                w.add_series(labels, *kind, &ts[i..end], &vals[i..end])
                    .map_err(|source| StoreError::Io {
                        path: w.path().to_path_buf(),
                        source,
                    })?;
                i = end;
            }
        }
        let mut out = Vec::new();
        for (p, (w, seq)) in writers {
            out.push(self.finish_segment(w, p, seq)?);
        }
        if !out.is_empty() {
            crate::store::fsutil::sync_dir(&self.dir.join(SEGMENTS_DIR)).map_err(|source| StoreError::Io {
                path: self.dir.join(SEGMENTS_DIR),
                source,
            })?;
        }
        Ok(out)
    }

    pub(crate) fn segment_rel_path(partition_start: i64, seq: u64) -> String {
        format!("{SEGMENTS_DIR}/p{partition_start}/{seq:012}.seg")
    }

    pub(crate) fn create_segment(
        &self,
        partition_start: i64,
        seq: u64,
        rank: u64,
        opts: SegmentOptions,
    ) -> Result<SegmentWriter, StoreError> {
        let rel = Self::segment_rel_path(partition_start, seq);
        let path = self.dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        SegmentWriter::create(&path, partition_start, rank, opts).map_err(|source| StoreError::Io { path, source })
    }

    /// Finishes a written segment, opens it and registers its series.
    pub(crate) fn finish_segment(
        &self,
        w: SegmentWriter,
        partition_start: i64,
        rank: u64,
    ) -> Result<Arc<LiveSegment>, StoreError> {
        let (seg, entry) = self.finish_file(w, partition_start, rank)?;
        let mut index = self.index.write();
        Ok(Arc::new(register(&mut index, seg, entry)))
    }

    /// Finishes a written segment (fsynced) and opens it; the entry describes it as raw.
    pub(crate) fn finish_file(
        &self,
        w: SegmentWriter,
        partition_start: i64,
        rank: u64,
    ) -> Result<(Arc<Segment>, SegmentEntry), StoreError> {
        let path = w.path().to_path_buf();
        let rel = path.strip_prefix(&self.dir).unwrap_or(&path).display().to_string();
        let info = w.finish().map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        if let Some(parent) = path.parent() {
            crate::store::fsutil::sync_dir(parent).map_err(|source| StoreError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let seg = Arc::new(Segment::open(&path)?);
        let entry = SegmentEntry {
            file: rel,
            partition_start,
            rank,
            min_t: info.min_t,
            max_t: info.max_t,
            series: info.series,
            samples: info.samples,
            bytes: info.bytes,
            tiered: None,
            resolution_ns: None,
            rollup_of: None,
        };
        Ok((seg, entry))
    }
}
