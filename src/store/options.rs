use std::time::Duration;

use crate::model::LabelLimits;
use crate::segment::SegmentOptions;
use crate::wal::FsyncPolicy;

/// Tuning for an open store. `Default` is the embedded configuration `tally serve` uses.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Width of a time partition (segments never span partitions; retention drops whole ones).
    pub partition_width: Duration,
    pub fsync: FsyncPolicy,
    /// Drop partitions that ended longer ago than this.
    pub retention: Option<Duration>,
    /// Per-tenant retention overriding `retention` (shorter or longer).
    pub tenant_retention: std::collections::BTreeMap<String, Duration>,
    /// Flush the head to segments once it holds this many samples...
    pub head_max_samples: usize,
    /// ...or once its oldest sample was appended this long ago.
    pub flush_interval: Duration,
    /// Compact a partition once it has this many segments (sealed partitions: 2).
    pub compact_min_segments: usize,
    pub segment: SegmentOptions,
    /// zstd level for compacted segments (they are rewritten rarely and read often).
    pub compaction_zstd_level: i32,
    pub label_limits: LabelLimits,
    /// Tenant owning series that carry no `tenant` label.
    pub default_tenant: String,
    /// Run flush/compaction/retention on a background thread.
    pub background: bool,
    pub maintenance_interval: Duration,
    pub flush_on_close: bool,
    /// Move sealed partitions to object storage (None: everything stays local).
    pub tier: Option<crate::tier::TierOptions>,
    /// Build 5 m / 1 h rollups of partitions that ended longer ago than this, and let
    /// range queries with a coarse enough step read them (None: no rollups at all).
    pub downsample_after: Option<Duration>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            partition_width: Duration::from_secs(24 * 3600),
            fsync: FsyncPolicy::EveryBatch,
            retention: None,
            tenant_retention: Default::default(),
            head_max_samples: 4_000_000,
            flush_interval: Duration::from_secs(30 * 60),
            compact_min_segments: 4,
            segment: SegmentOptions::default(),
            compaction_zstd_level: 9,
            label_limits: LabelLimits::default(),
            default_tenant: "default".to_string(),
            background: true,
            maintenance_interval: Duration::from_secs(5),
            flush_on_close: true,
            tier: None,
            downsample_after: None,
        }
    }
}
