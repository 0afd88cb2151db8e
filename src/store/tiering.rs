//! Tiering policy: sealed partitions older than `tier_after` move to object storage.
//!
//! Per segment: upload → verify (object size, and its tail byte-identical to the local
//! file's series table + footer) → write the local stub → manifest names the object →
//! the read view swaps to the tiered segment → the local file is deleted once no reader
//! maps it. A crash before the manifest rename leaves the segment local (the upload is
//! simply redone: same key, same bytes), so a partial upload is never referenced.
//!
//! Objects of segments that compaction or retention removed are queued in the manifest
//! (`tier_garbage`) and deleted only after the bucket's manifest copy stops naming
//! them, so `rebuild` never finds a manifest pointing at deleted objects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::fsutil::write_atomic;
use super::manifest::{Manifest, SegmentEntry};
use super::view::LiveSegment;
use super::{Inner, StoreError};
use crate::segment::Segment;
use crate::tier::{ObjectTier, BUCKET_MANIFEST};

/// Retry state of the uploader (exponential backoff with jitter after failures).
#[derive(Debug, Default)]
pub(crate) struct TierState {
    next_attempt: Option<Instant>,
    backoff: Duration,
    /// Tiered files named by the bucket's manifest copy as last published.
    published: Option<Vec<String>>,
}

const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(120);

impl Inner {
    /// One tiering pass; returns how many segments were tiered. Failures are logged and
    /// retried later with backoff; local data is never touched before a verified upload.
    pub(crate) fn tier_pass(&self, now_ns: i64, force: bool) -> Result<usize, StoreError> {
        let (Some(tier), Some(opts)) = (self.tier.clone(), self.opts.tier.as_ref()) else {
            return Ok(0);
        };
        if !force {
            if let Some(t) = self.tier_state.lock().next_attempt {
                if Instant::now() < t {
                    return Ok(0);
                }
            }
        }
        match self.tier_pass_inner(&tier, now_ns, opts.tier_after) {
            Ok(n) => {
                let mut st = self.tier_state.lock();
                st.next_attempt = None;
                st.backoff = Duration::ZERO;
                Ok(n)
            }
            Err(e) => {
                tier.metrics.upload_errors.add(1);
                let mut st = self.tier_state.lock();
                st.backoff = (st.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                let jitter = st.backoff.mul_f64(fastrand::f64() * 0.5);
                st.next_attempt = Some(Instant::now() + st.backoff + jitter);
                tracing::warn!(error = %e, retry_in_secs = (st.backoff + jitter).as_secs_f64(), "tiering failed; local data kept, will retry");
                Err(e)
            }
        }
    }

    fn tier_pass_inner(&self, tier: &Arc<ObjectTier>, now_ns: i64, tier_after: Duration) -> Result<usize, StoreError> {
        if !self.maint.lock().tier_garbage.is_empty() {
            // The bucket's manifest copy must stop naming objects before they are deleted.
            self.publish_bucket_manifest(tier)?;
            self.collect_tier_garbage(tier)?;
        }
        let cutoff = now_ns.saturating_sub(i64::try_from(tier_after.as_nanos()).unwrap_or(i64::MAX));
        let due: Vec<SegmentEntry> = self
            .maint
            .lock()
            .segments
            .iter()
            .filter(|e| e.tiered.is_none() && e.partition_start.saturating_add(self.partition_width) <= cutoff)
            .cloned()
            .collect();
        let pending = &tier.metrics.pending_uploads;
        pending.store(due.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let mut done = 0;
        for entry in &due {
            if self.tier_segment(tier, entry)? {
                done += 1;
            }
            pending.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.publish_bucket_manifest(tier)?;
        Ok(done)
    }

    /// Uploads, verifies and installs one segment; false if it was replaced meanwhile.
    fn tier_segment(&self, tier: &Arc<ObjectTier>, entry: &SegmentEntry) -> Result<bool, StoreError> {
        let started = Instant::now();
        let local = self.dir.join(&entry.file);
        let bytes = Bytes::from(std::fs::read(&local).map_err(|source| StoreError::Io {
            path: local.clone(),
            source,
        })?);
        let len = bytes.len() as u64;
        let key = entry.file.clone();
        tier.put(&key, bytes.clone())?;
        let stub = Segment::stub_bytes(&bytes)?;
        let remote_len = tier.size(&key)?;
        let remote_tail = tier.get_range_uncached(&key, len - stub.len() as u64..len)?;
        if remote_len != len || remote_tail[..] != *stub {
            return Err(StoreError::Internal(format!(
                "uploaded object {key} does not match the local segment ({remote_len} of {len} bytes)"
            )));
        }
        let stub_path = self.dir.join(entry.stub_file());
        write_atomic(&stub_path, stub).map_err(|source| StoreError::Io {
            path: stub_path.clone(),
            source,
        })?;
        let seg = Arc::new(Segment::open_tiered(&stub_path, tier.clone(), &key, len)?);

        let mut manifest = self.maint.lock();
        if !manifest
            .segments
            .iter()
            .any(|e| e.file == entry.file && e.tiered.is_none())
        {
            // Compacted or expired while uploading: nothing references the object.
            drop(manifest);
            let _ = std::fs::remove_file(&stub_path);
            tier.delete(&key)?;
            return Ok(false);
        }
        let mut next = manifest.clone();
        let mut installed = None;
        for e in next.segments.iter_mut().filter(|e| e.file == entry.file) {
            e.tiered = Some(key.clone());
            e.bytes = len;
            installed = Some(e.clone());
        }
        next.store(&self.dir)?;
        *manifest = next;
        let view = self.view.load_full();
        let old = view.segments.iter().find(|s| s.entry.file == entry.file).cloned();
        if let (Some(old), Some(installed)) = (&old, installed) {
            let tiered = Arc::new(LiveSegment {
                seg,
                entry: installed,
                local_of: old.local_of.clone(),
                rollup_of: old.rollup_of.clone(),
            });
            self.edit_view(|v| {
                for s in v.segments.iter_mut().filter(|s| Arc::ptr_eq(s, old)) {
                    *s = tiered.clone();
                }
            });
            // The local file goes once the last reader of the old view lets go.
            old.seg.mark_obsolete();
        }
        drop(manifest);
        tier.metrics.bytes_tiered.add(len);
        tier.metrics.segments_tiered.add(1);
        tracing::info!(
            segment = %entry.file,
            bytes = len,
            secs = started.elapsed().as_secs_f64(),
            object_store = tier.url(),
            "segment tiered"
        );
        Ok(true)
    }

    /// Deletes objects no manifest names any more (after the bucket copy stopped naming them).
    fn collect_tier_garbage(&self, tier: &ObjectTier) -> Result<(), StoreError> {
        let garbage = self.maint.lock().tier_garbage.clone();
        if garbage.is_empty() {
            return Ok(());
        }
        let mut deleted = Vec::new();
        let mut first_err = None;
        for key in &garbage {
            match tier.delete(key) {
                Ok(()) => deleted.push(key.clone()),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if !deleted.is_empty() {
            let mut manifest = self.maint.lock();
            let mut next = manifest.clone();
            next.tier_garbage.retain(|k| !deleted.contains(k));
            next.store(&self.dir)?;
            *manifest = next;
        }
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Keeps a copy of the manifest's tiered entries in the bucket for `rebuild`.
    fn publish_bucket_manifest(&self, tier: &ObjectTier) -> Result<(), StoreError> {
        let copy = {
            let m = self.maint.lock();
            let mut copy = Manifest::new(m.partition_width_ns);
            copy.next_seq = m.next_seq;
            copy.segments = m.segments.iter().filter(|e| e.tiered.is_some()).cloned().collect();
            copy
        };
        let names: Vec<String> = copy.segments.iter().map(|e| e.file.clone()).collect();
        if self.tier_state.lock().published.as_ref() == Some(&names) {
            return Ok(());
        }
        tier.put(BUCKET_MANIFEST, Bytes::from(copy.encode()))?;
        self.tier_state.lock().published = Some(names);
        Ok(())
    }
}
