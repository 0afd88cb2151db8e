//! The set of data a reader sees: live segments, frozen heads being flushed, and the
//! live head. Replaced wholesale (copy-on-write) by maintenance; readers keep theirs.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::head::Head;
use super::manifest::SegmentEntry;
use super::ordinals::LocalOrdinals;
use super::rollup::Agg;
use crate::index::SeriesId;
use crate::segment::Segment;

/// A segment plus the mapping from its local series ordinals to this process's ids.
#[derive(Debug)]
pub(crate) struct LiveSegment {
    pub seg: Arc<Segment>,
    pub entry: SegmentEntry,
    pub local_of: LocalOrdinals,
    /// Rollup segments: (raw series, aggregate) → local ordinal. Rollup series never
    /// enter the series index, so `local_of` stays empty and raw reads skip them.
    pub rollup_of: HashMap<(SeriesId, Agg), u32>,
}

impl LiveSegment {
    pub fn overlaps(&self, start: i64, end: i64) -> bool {
        self.entry.min_t <= end && self.entry.max_t >= start
    }
}

/// A segment listed in the manifest that failed verification at open. Reads that touch
/// its partition fail with an error naming it; everything else stays readable.
#[derive(Debug, Clone)]
pub(crate) struct Quarantined {
    pub file: String,
    pub reason: String,
    pub partition_start: i64,
    pub partition_end: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct View {
    /// Sorted by rank (precedence) ascending.
    pub segments: Vec<Arc<LiveSegment>>,
    pub frozen: Vec<Arc<RwLock<Head>>>,
    pub head: Arc<RwLock<Head>>,
    pub quarantined: Vec<Quarantined>,
}

impl View {
    pub fn sort_segments(&mut self) {
        self.segments.sort_by_key(|s| s.entry.rank);
    }
}
