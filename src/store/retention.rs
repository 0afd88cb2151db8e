//! Retention: whole partitions that ended before `now - retention` are dropped; with
//! per-tenant overrides, a partition is dropped only once it expired for every tenant,
//! and before that the series of the tenants it expired for are cut out of it (the
//! partition is rewritten without them). Tiered objects of removed segments are queued
//! for deletion from the object store (see `tiering.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::view::LiveSegment;
use super::{Inner, StoreError};
use crate::index::SeriesId;

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl Inner {
    /// Applies retention; returns how many partitions were dropped or rewritten.
    pub(crate) fn apply_retention(&self, now_ns: i64) -> Result<usize, StoreError> {
        let global = self.opts.retention;
        let overrides = &self.opts.tenant_retention;
        if global.is_none() && overrides.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        // Every tenant follows the global retention or its own override: a partition is
        // empty for all of them once it is past the longest of these.
        if let Some(g) = global {
            let longest = overrides.values().copied().fold(g, Duration::max);
            n += self.drop_partitions(now_ns.saturating_sub(nanos(longest)))?;
        }
        if !overrides.is_empty() || global.is_some() {
            n += self.purge_expired_tenants(now_ns)?;
        }
        Ok(n)
    }

    fn drop_partitions(&self, cutoff: i64) -> Result<usize, StoreError> {
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
        next.remove_segments(|s| expired(s.partition_start));
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

    /// Rewrites partitions that hold series of tenants whose retention they are past.
    fn purge_expired_tenants(&self, now_ns: i64) -> Result<usize, StoreError> {
        let retention_of = |tenant: &str| self.opts.tenant_retention.get(tenant).copied().or(self.opts.retention);
        let mut manifest = self.maint.lock();
        let view = self.view.load_full();
        let mut by_partition: BTreeMap<i64, Vec<Arc<LiveSegment>>> = BTreeMap::new();
        for s in &view.segments {
            by_partition.entry(s.entry.partition_start).or_default().push(s.clone());
        }
        let mut rewritten = 0;
        for (p, segs) in by_partition {
            let end = p.saturating_add(self.partition_width);
            let expired_ids: Vec<SeriesId> = {
                let index = self.index.read();
                segs.iter()
                    .flat_map(|s| s.local_of.ids())
                    .filter(|&id| {
                        index.get(id).is_some_and(|e| {
                            let tenant = e.labels.get("tenant").unwrap_or(&self.opts.default_tenant);
                            retention_of(tenant).is_some_and(|r| end <= now_ns.saturating_sub(nanos(r)))
                        })
                    })
                    .collect()
            };
            if expired_ids.is_empty() {
                continue;
            }
            let gone: std::collections::HashSet<SeriesId> = expired_ids.into_iter().collect();
            // `segs` includes the partition's rollups: they still summarise the removed
            // series, so they are dropped with the raw inputs and rebuilt by downsampling.
            let merged = self.merge_partition(p, &segs, &mut manifest, &|id| !gone.contains(&id))?;
            self.replace_segments(&mut manifest, &segs, merged)?;
            tracing::info!(
                partition = p,
                series_removed = gone.len(),
                "tenant data past its retention removed"
            );
            rewritten += 1;
        }
        Ok(rewritten)
    }
}
