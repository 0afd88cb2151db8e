//! The store: WAL + head + time-partitioned segments behind one embeddable handle.
//!
//! Write path: [`Store::append`] resolves series in the index, writes one WAL record
//! (samples and source positions together), then applies the batch to the head.
//! Maintenance (flush, compaction, retention) runs on a background thread and swaps
//! in a new [`View`](view::View) atomically; readers hold a [`Snapshot`] and never
//! block writers for longer than copying one series out of the head.

mod append;
mod batch;
mod changes;
mod compaction;
mod declared;
mod downsample;
mod error;
mod flush;
pub mod fsutil;
mod head;
mod lock;
pub mod manifest;
mod merge;
pub mod metrics;
mod open;
mod options;
mod ordinals;
pub mod read;
mod retention;
pub mod rollup;
mod rollup_read;
mod snapshot;
mod tiering;
mod view;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex, RwLock};

pub use append::SeriesTarget;
pub use batch::{SeriesWrite, WriteBatch};
pub use changes::{ChangeMark, ChangesSince};
pub use error::StoreError;
pub use metrics::StoreMetrics;
pub use options::StoreOptions;
pub use read::{
    ReadError, RollupSeries, SampleValues, ScanBuf, ScanItem, SelectRequest, SeriesSamples, SeriesSource, SeriesStream,
    SeriesView, Visit,
};
pub use snapshot::Snapshot;

use crate::index::{SeriesId, SeriesIndex};
use crate::wal::WalWriter;
use head::Head;
use lock::DirLock;
use manifest::Manifest;
use view::View;

/// What one append did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub samples: u64,
    pub series_created: u64,
    /// Samples that replaced a conflicting value (Replace series only).
    pub replaced: u64,
}

/// An open data directory. Cheap to share across threads (`&Store` is `Sync`).
pub struct Store {
    inner: Arc<Inner>,
    maintenance: Mutex<Option<JoinHandle<()>>>,
}

pub(crate) struct Inner {
    dir: PathBuf,
    opts: StoreOptions,
    partition_width: i64,
    _lock: DirLock,
    index: RwLock<SeriesIndex>,
    writer: Mutex<Writer>,
    view: ArcSwap<View>,
    /// Serialises view edits (head swap, flush, compaction, retention).
    view_edit: Mutex<()>,
    /// Serialises maintenance and owns the manifest.
    maint: Mutex<Manifest>,
    tier: Option<Arc<crate::tier::ObjectTier>>,
    tier_state: Mutex<tiering::TierState>,
    metrics: StoreMetrics,
    wake: (Mutex<bool>, Condvar),
    changes: changes::ChangeLog,
}

struct Writer {
    wal: WalWriter,
    head: Arc<RwLock<Head>>,
    head_started: Instant,
    /// Series already defined in the current WAL generation.
    declared: declared::DeclaredSeries,
    positions: BTreeMap<String, i64>,
    buf: Vec<u8>,
    closed: bool,
}

impl Store {
    /// Opens (creating if needed) the data directory, replaying the WAL.
    pub fn open(dir: impl AsRef<Path>, opts: StoreOptions) -> Result<Store, StoreError> {
        let inner = Arc::new(open::open(dir.as_ref(), opts)?);
        let maintenance = if inner.opts.background {
            let bg = inner.clone();
            let handle = std::thread::Builder::new()
                .name("tally-maintenance".into())
                .spawn(move || bg.maintenance_loop())
                .map_err(|source| StoreError::Io {
                    path: inner.dir.clone(),
                    source,
                })?;
            Some(handle)
        } else {
            None
        };
        Ok(Store {
            inner,
            maintenance: Mutex::new(maintenance),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn options(&self) -> &StoreOptions {
        &self.inner.opts
    }

    /// Appends a batch atomically: once this returns `Ok`, every sample and source
    /// position in it is durable under the configured fsync policy and visible to reads.
    pub fn append(&self, batch: &WriteBatch) -> Result<AppendOutcome, StoreError> {
        self.inner.append(batch)
    }

    /// [`Store::append`] on borrowed series: `(target, kind, samples)` and the positions
    /// the batch advances (same atomicity and durability). Ingest uses it to append
    /// without copying label sets or allocating a sample vector per series, and by id
    /// for series it has resolved before.
    pub fn append_series(
        &self,
        series: &[(SeriesTarget<'_>, crate::model::SeriesKind, &[crate::model::Sample])],
        positions: &[(String, i64)],
    ) -> Result<AppendOutcome, StoreError> {
        self.inner.append_refs(series, positions)
    }

    /// The id and kind of an existing series (None when the label set is not known).
    /// Read-only; lets ingest reject an event whose series exists with another kind
    /// before it reaches a batch (an append with a mismatching kind fails as a whole),
    /// and append by id afterwards ([`SeriesTarget::Id`]).
    pub fn series_id(&self, labels: &crate::model::Labels) -> Option<(SeriesId, crate::model::SeriesKind)> {
        let index = self.inner.index.read();
        let id = index.lookup(labels)?;
        Some((id, index.get(id)?.kind))
    }

    /// The last durable position recorded for `source` (e.g. `"cost.compute/3"`).
    pub fn source_position(&self, source: &str) -> Option<i64> {
        self.inner.writer.lock().positions.get(source).copied()
    }

    pub fn source_positions(&self) -> BTreeMap<String, i64> {
        self.inner.writer.lock().positions.clone()
    }

    /// A consistent read view: the segments and heads as of now (the live head keeps
    /// receiving appends, which become visible immediately).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::new(self.inner.clone())
    }

    /// The current moment in the store's change history. Take it *before* reading:
    /// then whatever the read missed is reported by [`Store::changes_since`].
    pub fn change_mark(&self) -> ChangeMark {
        self.inner.changes.mark()
    }

    /// What changed since `mark` (for caches of results derived from the data), with
    /// the mark of now.
    pub fn changes_since(&self, mark: ChangeMark) -> (ChangesSince, ChangeMark) {
        self.inner.changes.since(mark)
    }

    /// Writes the head into segments and checkpoints the WAL.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    /// Merges small segments of each partition; returns how many partitions were compacted.
    pub fn compact(&self) -> Result<usize, StoreError> {
        self.inner.compact(false)
    }

    /// Merges every partition that has more than one segment.
    pub fn compact_all(&self) -> Result<usize, StoreError> {
        self.inner.compact(true)
    }

    /// Drops partitions that ended before `now_ns - retention`; returns how many.
    pub fn apply_retention(&self, now_ns: i64) -> Result<usize, StoreError> {
        self.inner.apply_retention(now_ns)
    }

    /// Uploads partitions due for tiering and deletes unreferenced objects now (the
    /// background thread does this on its own); returns how many segments were tiered.
    pub fn tier(&self) -> Result<usize, StoreError> {
        self.inner.tier_pass(now_ns(), true)
    }

    /// Builds (or rebuilds) the rollups of partitions due for downsampling now (the
    /// background thread does this on its own); returns how many rollup segments it wrote.
    pub fn downsample(&self) -> Result<usize, StoreError> {
        self.inner.downsample_pass(now_ns())
    }

    /// The object store tier, when configured (metrics, cache).
    pub fn object_tier(&self) -> Option<&Arc<crate::tier::ObjectTier>> {
        self.inner.tier.as_ref()
    }

    pub fn metrics(&self) -> &StoreMetrics {
        &self.inner.metrics
    }

    /// Point-in-time figures for `/metrics` and benchmarks.
    pub fn stats(&self) -> metrics::StoreStats {
        self.inner.stats()
    }

    /// Stops background work, flushes the head (unless disabled) and fsyncs. Idempotent;
    /// later appends fail with [`StoreError::Closed`]. Dropping a store does the same
    /// best-effort; call `close` to see errors.
    pub fn close(&self) -> Result<(), StoreError> {
        {
            let mut stop = self.inner.wake.0.lock();
            *stop = true;
            self.inner.wake.1.notify_all();
        }
        if let Some(h) = self.maintenance.lock().take() {
            let _ = h.join();
        }
        let mut w = self.inner.writer.lock();
        if w.closed {
            return Ok(());
        }
        w.wal.sync()?;
        drop(w);
        let r = if self.inner.opts.flush_on_close {
            self.inner.flush()
        } else {
            Ok(())
        };
        self.inner.writer.lock().closed = true;
        r
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "error while closing store");
        }
    }
}

impl Inner {
    /// Partition start for a timestamp (floor to the partition width).
    pub(crate) fn partition_of(&self, ts: i64) -> i64 {
        ts.div_euclid(self.partition_width) * self.partition_width
    }

    fn maintenance_loop(self: Arc<Self>) {
        // With the interval fsync policy this thread also bounds how long an acknowledged
        // write can sit un-synced when appends stop.
        let sync_every = match self.opts.fsync {
            crate::wal::FsyncPolicy::Interval(d) => Some(d),
            crate::wal::FsyncPolicy::EveryBatch => None,
        };
        let tick = sync_every.map_or(self.opts.maintenance_interval, |d| {
            d.min(self.opts.maintenance_interval)
        });
        let mut last_maintain = Instant::now();
        loop {
            {
                let mut stop = self.wake.0.lock();
                if !*stop {
                    self.wake.1.wait_for(&mut stop, tick);
                }
                if *stop {
                    return;
                }
            }
            if sync_every.is_some() {
                if let Err(e) = self.writer.lock().wal.sync() {
                    tracing::error!(error = %e, "background WAL fsync failed; will retry");
                }
            }
            if last_maintain.elapsed() >= self.opts.maintenance_interval || self.head_over_limit() {
                last_maintain = Instant::now();
                if let Err(e) = self.maintain() {
                    tracing::error!(error = %e, "store maintenance failed; will retry");
                }
            }
        }
    }

    fn head_over_limit(&self) -> bool {
        self.writer.lock().head.read().samples() >= self.opts.head_max_samples
    }

    fn maintain(&self) -> Result<(), StoreError> {
        let (samples, age) = {
            let w = self.writer.lock();
            let s = w.head.read().samples();
            (s, w.head_started.elapsed())
        };
        if samples >= self.opts.head_max_samples || (samples > 0 && age >= self.opts.flush_interval) {
            self.flush()?;
        }
        self.compact(false)?;
        if self.opts.retention.is_some() {
            self.apply_retention(now_ns())?;
        }
        if self.opts.downsample_after.is_some() {
            self.downsample_pass(now_ns())?;
        }
        // Tiering failures are logged and retried with backoff inside; local work goes on.
        let _ = self.tier_pass(now_ns(), false);
        Ok(())
    }

    pub(crate) fn wake_maintenance(&self) {
        self.wake.1.notify_all();
    }
}

/// Wall-clock now in UTC nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
