//! Retention: whole partitions that ended before `now - retention` are dropped.

use super::{Inner, StoreError};

impl Inner {
    pub(crate) fn apply_retention(&self, now_ns: i64) -> Result<usize, StoreError> {
        let Some(retention) = self.opts.retention else {
            return Ok(0);
        };
        let cutoff = now_ns.saturating_sub(i64::try_from(retention.as_nanos()).unwrap_or(i64::MAX));
        let mut manifest = self.maint.lock();
        let expired = |p: i64| p.saturating_add(self.partition_width) <= cutoff;
        let mut partitions: Vec<i64> = manifest
            .segments
            .iter()
            .map(|s| s.partition_start)
            .filter(|&p| expired(p))
            .collect();
        partitions.sort_unstable();
        partitions.dedup();
        if partitions.is_empty() {
            return Ok(0);
        }
        let mut next = manifest.clone();
        next.segments.retain(|s| !expired(s.partition_start));
        next.store(&self.dir)?;
        *manifest = next;
        let view = self.view.load_full();
        let dropped: Vec<_> = view
            .segments
            .iter()
            .filter(|s| expired(s.entry.partition_start))
            .cloned()
            .collect();
        self.edit_view(|v| {
            v.segments.retain(|s| !expired(s.entry.partition_start));
            v.quarantined.retain(|q| !expired(q.partition_start));
        });
        for s in &dropped {
            s.seg.mark_obsolete();
        }
        drop(view);
        for p in &partitions {
            // Empty once the obsolete files are gone; a failure here only leaves an empty folder.
            let _ = std::fs::remove_dir(self.dir.join(super::open::SEGMENTS_DIR).join(format!("p{p}")));
            tracing::info!(partition = p, "partition dropped by retention");
        }
        self.metrics.partitions_dropped.add(partitions.len() as u64);
        Ok(partitions.len())
    }
}
