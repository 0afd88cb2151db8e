//! Opening a data directory: lock, manifest, segments (quarantining damaged ones),
//! index rebuild, WAL replay, and a fresh WAL generation for new appends.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex, RwLock};

use super::head::Head;
use super::lock::DirLock;
use super::manifest::{Manifest, SegmentEntry};
use super::metrics::StoreMetrics;
use super::ordinals::LocalOrdinals;
use super::view::{LiveSegment, Quarantined, View};
use super::{Inner, StoreError, StoreOptions, Writer};
use crate::index::{SeriesId, SeriesIndex};
use crate::segment::Segment;
use crate::wal::{self, WalWriter};

pub(crate) const WAL_DIR: &str = "wal";
pub(crate) const SEGMENTS_DIR: &str = "segments";

pub(crate) fn open(dir: &Path, opts: StoreOptions) -> Result<Inner, StoreError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let lock = DirLock::acquire(dir)?;
    let width = i64::try_from(opts.partition_width.as_nanos()).unwrap_or(0);
    if width <= 0 {
        return Err(StoreError::Options {
            name: "partition_width",
            reason: "must be positive".into(),
        });
    }
    let manifest = match Manifest::load(dir)? {
        Some(m) => {
            if m.partition_width_ns != width {
                tracing::warn!(
                    stored = m.partition_width_ns,
                    requested = width,
                    "partition width differs from the one this directory was created with; keeping the stored width"
                );
            }
            m
        }
        None => {
            let m = Manifest::new(width);
            m.store(dir)?;
            m
        }
    };
    let width = manifest.partition_width_ns;
    remove_unreferenced(dir, &manifest)?;
    // Connecting does not contact the object store, so a store opens while it is down.
    let tier = match &opts.tier {
        Some(t) => Some(crate::tier::ObjectTier::connect(t).map_err(|e| StoreError::Options {
            name: "object_store",
            reason: e.to_string(),
        })?),
        None => None,
    };

    let metrics = StoreMetrics::default();
    let mut index = SeriesIndex::new(opts.default_tenant.clone());
    let mut segments = Vec::new();
    let mut quarantined = Vec::new();
    let mut rollups = Vec::new();
    for entry in &manifest.segments {
        let opened = match (&entry.tiered, &tier) {
            (None, _) => Segment::open(&dir.join(&entry.file)),
            (Some(key), Some(t)) => Segment::open_tiered(&dir.join(entry.stub_file()), t.clone(), key, entry.bytes),
            (Some(key), None) => Err(crate::segment::SegmentError::Unavailable {
                file: key.clone(),
                reason: "the segment is tiered but no object store is configured (--object-store)".into(),
            }),
        };
        match opened {
            Ok(seg) if entry.is_raw() => segments.push(Arc::new(register(&mut index, Arc::new(seg), entry.clone()))),
            // Rollups map onto raw series, so they are registered after every raw segment.
            Ok(seg) => rollups.push((Arc::new(seg), entry.clone())),
            Err(e) => {
                tracing::error!(file = %entry.file, error = %e, "segment failed verification; its partition is unreadable until repaired");
                quarantined.push(Quarantined {
                    file: match &entry.tiered {
                        Some(key) => key.clone(),
                        None => dir.join(&entry.file).display().to_string(),
                    },
                    reason: e.to_string(),
                    partition_start: entry.partition_start,
                    partition_end: entry.partition_start.saturating_add(width),
                });
            }
        }
    }
    for (seg, entry) in rollups {
        segments.push(Arc::new(register_rollup(&index, seg, entry)));
    }

    // Replay the WAL into a fresh head. Refs are the old writer's ids, scoped per generation.
    let wal_dir = dir.join(WAL_DIR);
    let mut head = Head::new();
    let mut positions: BTreeMap<String, i64> = manifest.source_positions.clone();
    let mut refs: HashMap<(u64, u32), SeriesId> = HashMap::new();
    let started = Instant::now();
    let mut replay_err = None;
    let stats = wal::replay(&wal_dir, manifest.wal_checkpoint, |gen, batch| {
        for d in batch.defs {
            match index.get_or_create(&d.labels, d.kind) {
                Ok((id, _)) => {
                    refs.insert((gen, d.series_ref), id);
                }
                Err(e) => replay_err = Some(e.to_string()),
            }
        }
        for g in batch.groups {
            let Some(&id) = refs.get(&(gen, g.series_ref)) else {
                replay_err = Some(format!(
                    "WAL generation {gen} uses undefined series ref {}",
                    g.series_ref
                ));
                continue;
            };
            if let (Some(entry), Some(lo), Some(hi)) = (index.get(id), g.ts.iter().min(), g.ts.iter().max()) {
                entry.observe(*lo, *hi);
                head.append(id, entry.kind, &g.ts, &g.values);
            }
        }
        for (s, p) in batch.positions {
            positions.insert(s, p);
        }
    })?;
    if let Some(e) = replay_err {
        tracing::warn!(error = %e, "inconsistent WAL content skipped during replay");
    }
    if stats.records > 0 {
        tracing::info!(
            records = stats.records,
            files = stats.files,
            secs = started.elapsed().as_secs_f64(),
            "WAL replayed"
        );
    }
    metrics.wal_trimmed_bytes.add(stats.trimmed.iter().map(|t| t.1).sum());

    let last_gen = wal::list_generations(&wal_dir)?
        .last()
        .copied()
        .max(manifest.wal_checkpoint)
        .unwrap_or(0);
    let mut wal = WalWriter::create(&wal_dir, last_gen + 1, opts.fsync)?;
    let fsync_hist = metrics.wal_fsync_seconds.clone();
    wal.on_fsync = Some(Arc::new(move |s| fsync_hist.observe(s)));

    let head = Arc::new(RwLock::new(head));
    let mut view = View {
        segments,
        frozen: Vec::new(),
        head: head.clone(),
        quarantined,
    };
    view.sort_segments();
    Ok(Inner {
        dir: dir.to_path_buf(),
        partition_width: width,
        _lock: lock,
        index: RwLock::new(index),
        writer: Mutex::new(Writer {
            wal,
            head,
            head_started: Instant::now(),
            declared: super::declared::DeclaredSeries::default(),
            positions,
            buf: Vec::new(),
            closed: false,
        }),
        view: ArcSwap::from_pointee(view),
        view_edit: Mutex::new(()),
        maint: Mutex::new(manifest),
        tier,
        tier_state: Mutex::new(super::tiering::TierState::default()),
        metrics,
        wake: (Mutex::new(false), Condvar::new()),
        changes: Default::default(),
        opts,
    })
}

/// Adds a segment's series to the index and builds its id mapping.
pub(crate) fn register(index: &mut SeriesIndex, seg: Arc<Segment>, entry: SegmentEntry) -> LiveSegment {
    let mut local_of = Vec::with_capacity(seg.series().len());
    for (i, s) in seg.series().iter().enumerate() {
        match index.get_or_create(&s.labels, s.kind) {
            Ok((id, _)) => {
                if let Some(e) = index.get(id) {
                    e.observe(s.min_t(), s.max_t());
                }
                local_of.push((id, i as u32));
            }
            Err(e) => tracing::error!(file = %entry.file, error = %e, "series skipped"),
        }
    }
    LiveSegment {
        seg,
        entry,
        local_of: LocalOrdinals::from_pairs(local_of),
        rollup_of: HashMap::new(),
    }
}

/// Maps a rollup segment's series onto the raw series they summarise, by their labels
/// without the reserved [`ROLLUP_LABEL`](super::rollup::ROLLUP_LABEL). Nothing is added
/// to the index: rollup series must stay invisible to label APIs, SQL and raw reads.
pub(crate) fn register_rollup(index: &SeriesIndex, seg: Arc<Segment>, entry: SegmentEntry) -> LiveSegment {
    let mut rollup_of = HashMap::with_capacity(seg.series().len());
    for (i, s) in seg.series().iter().enumerate() {
        let Some((raw, agg)) = super::rollup::split_labels(&s.labels) else {
            tracing::warn!(file = %entry.file, labels = %s.labels, "series without a rollup label in a rollup segment skipped");
            continue;
        };
        if let Some(id) = index.lookup(&raw) {
            rollup_of.insert((id, agg), i as u32);
        }
    }
    LiveSegment {
        seg,
        entry,
        local_of: LocalOrdinals::default(),
        rollup_of,
    }
}

/// Deletes segment files not named by the manifest (left by a crash mid-flush or
/// mid-compaction) and stray temp files. Only files tally itself names are touched.
fn remove_unreferenced(dir: &Path, manifest: &Manifest) -> Result<(), StoreError> {
    let live: std::collections::HashSet<String> = manifest.segments.iter().map(|s| s.local_file()).collect();
    let seg_root = dir.join(SEGMENTS_DIR);
    let Ok(parts) = std::fs::read_dir(&seg_root) else {
        return Ok(());
    };
    for part in parts.flatten() {
        let Ok(files) = std::fs::read_dir(part.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().to_string();
            let rel = format!("{SEGMENTS_DIR}/{}/{name}", part.file_name().to_string_lossy());
            let ours = name.ends_with(".seg") || name.ends_with(".stub") || name.ends_with(".tmp");
            if ours && !live.contains(&rel) {
                tracing::info!(file = %rel, "removing segment not referenced by the manifest");
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
    Ok(())
}
