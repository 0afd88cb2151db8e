//! The write path.

use std::time::Instant;

use super::{AppendOutcome, Inner, StoreError, WriteBatch};
use crate::index::{KindMismatch, SeriesId};
use crate::model::sample::raw_of;
use crate::model::{Labels, Sample, SeriesKind, Value, ValueKind};
use crate::wal::{encode_batch, WalSeries};

/// How many series ahead the head append prefetches (enough to overlap several misses,
/// few enough that the lines are still cached when their turn comes).
const PREFETCH_AHEAD: usize = 8;

/// One series of a batch, resolved; its raw columns are `ts[range]` / `vals[range]` of
/// the batch-wide flat buffers (two allocations per append instead of two per series).
struct Prepared {
    id: SeriesId,
    range: std::ops::Range<usize>,
}

/// Which series an append writes: a label set (resolved, and created if new), or the id
/// [`crate::store::Store::series_id`] returned for it. Ids are dense indices that are
/// never reused or removed while the store is open, so a caller may keep one for the
/// life of its `Store` and skip hashing label sets on every append.
#[derive(Debug, Clone, Copy)]
pub enum SeriesTarget<'a> {
    Labels(&'a Labels),
    Id(SeriesId),
}

/// One series of an append: target, kind and samples, borrowed from the caller.
pub(crate) type SeriesRef<'a> = (SeriesTarget<'a>, SeriesKind, &'a [Sample]);

fn kind_name(k: ValueKind) -> &'static str {
    match k {
        ValueKind::Float => "float",
        ValueKind::Money => "money",
    }
}

impl Inner {
    /// A target's label set for error messages (only built on the error path).
    fn target_name(&self, target: SeriesTarget<'_>) -> String {
        match target {
            SeriesTarget::Labels(l) => l.to_string(),
            SeriesTarget::Id(id) => self
                .index
                .read()
                .get(id)
                .map_or_else(|| format!("#{}", id.0), |e| e.labels.to_string()),
        }
    }

    pub(crate) fn append(&self, batch: &WriteBatch) -> Result<AppendOutcome, StoreError> {
        let series: Vec<SeriesRef<'_>> = batch
            .series
            .iter()
            .map(|s| (SeriesTarget::Labels(&s.labels), s.kind, &s.samples[..]))
            .collect();
        self.append_refs(&series, &batch.positions)
    }

    /// [`Inner::append`] on borrowed series (ingest builds these without copying labels
    /// or allocating a sample vector per series).
    pub(crate) fn append_refs(
        &self,
        series: &[SeriesRef<'_>],
        positions: &[(String, i64)],
    ) -> Result<AppendOutcome, StoreError> {
        let mut out = AppendOutcome::default();
        // 1. Validate values against kinds before anything becomes durable.
        let total: usize = series.iter().map(|s| s.2.len()).sum();
        let mut all_ts = Vec::with_capacity(total);
        let mut all_vals = Vec::with_capacity(total);
        let mut prepared = Vec::with_capacity(series.len());
        for &(target, kind, samples) in series {
            if samples.is_empty() {
                continue;
            }
            let start = all_ts.len();
            for (i, s) in samples.iter().enumerate() {
                let raw = raw_of(kind.value, s.value).ok_or_else(|| StoreError::ValueKind {
                    labels: self.target_name(target),
                    index: i,
                    got: match s.value {
                        Value::Float(_) => "float",
                        Value::Money(_) => "money",
                    },
                    expected: kind_name(kind.value),
                })?;
                all_ts.push(s.ts);
                all_vals.push(raw);
            }
            prepared.push(Prepared {
                id: SeriesId(u32::MAX),
                range: start..all_ts.len(),
            });
        }
        // 2. Resolve series: read lock for known ones, write lock only to create.
        {
            let index = self.index.read();
            let mut missing = false;
            let writes = || series.iter().filter(|s| !s.2.is_empty());
            let mut ahead = writes().skip(PREFETCH_AHEAD);
            for (p, &(target, kind, _)) in prepared.iter_mut().zip(writes()) {
                if let Some((SeriesTarget::Id(id), _, _)) = ahead.next() {
                    index.prefetch(*id);
                }
                match target {
                    SeriesTarget::Id(id) => match index.get(id) {
                        Some(e) if e.kind == kind => p.id = id,
                        Some(e) => {
                            return Err(KindMismatch {
                                labels: e.labels.clone(),
                                existing: e.kind,
                                requested: kind,
                            }
                            .into())
                        }
                        None => return Err(StoreError::Internal(format!("append to unknown series id {}", id.0))),
                    },
                    SeriesTarget::Labels(labels) => match index.check_kind(labels, kind)? {
                        Some(id) => p.id = id,
                        None => missing = true,
                    },
                }
            }
            if missing {
                drop(index);
                let mut index = self.index.write();
                for (p, &(target, kind, _)) in prepared.iter_mut().zip(writes()) {
                    if let (u32::MAX, SeriesTarget::Labels(labels)) = (p.id.0, target) {
                        let (id, created) = index.get_or_create(labels, kind)?;
                        p.id = id;
                        out.series_created += created as u64;
                    }
                }
            }
        }
        // 3. WAL, then head, under the writer lock so both see the same order.
        let index = self.index.read();
        let mut w = self.writer.lock();
        if w.closed {
            return Err(StoreError::Closed);
        }
        let mut defs = Vec::new();
        for p in &prepared {
            if w.declared.insert(p.id.0) {
                if let Some(e) = index.get(p.id) {
                    defs.push(WalSeries {
                        series_ref: p.id.0,
                        kind: e.kind,
                        labels: e.labels.clone(),
                    });
                }
            }
        }
        let w = &mut *w;
        // The earliest sample of the batch, for the change log.
        let mut batch_min = i64::MAX;
        encode_batch(
            &defs,
            prepared
                .iter()
                .map(|p| (p.id.0, &all_ts[p.range.clone()], &all_vals[p.range.clone()])),
            positions,
            &mut w.buf,
        );
        let t = Instant::now();
        if let Err(e) = w.wal.append(&w.buf) {
            // Nothing of this batch is acknowledged; series declared above may be missing from the log.
            for p in &prepared {
                w.declared.remove(p.id.0);
            }
            return Err(e.into());
        }
        self.metrics.wal_append_seconds.observe(t.elapsed().as_secs_f64());
        {
            let mut head = w.head.write();
            for (i, p) in prepared.iter().enumerate() {
                // Series a few places ahead: their head and index entries are likely cache
                // misses at high cardinality (see `Head::prefetch`).
                if let Some(ahead) = prepared.get(i + 2 * PREFETCH_AHEAD) {
                    head.prefetch_slot(ahead.id);
                }
                if let Some(ahead) = prepared.get(i + PREFETCH_AHEAD) {
                    head.prefetch(ahead.id);
                    index.prefetch(ahead.id);
                }
                let (ts, vals) = (&all_ts[p.range.clone()], &all_vals[p.range.clone()]);
                let bounds = ts.iter().min().zip(ts.iter().max());
                if let Some((&lo, _)) = bounds {
                    batch_min = batch_min.min(lo);
                }
                if let Some(e) = index.get(p.id) {
                    if let Some((&lo, &hi)) = bounds {
                        e.observe(lo, hi);
                    }
                    out.replaced += head.append(p.id, e.kind, ts, vals);
                }
                out.samples += ts.len() as u64;
            }
            if head.samples() >= self.opts.head_max_samples {
                self.wake_maintenance();
            }
        }
        // Readable now: a reader's mark taken from here on sees it, one taken before
        // learns of it from the log.
        if batch_min != i64::MAX {
            self.changes.appended(batch_min);
        }
        for (s, p) in positions {
            match w.positions.get_mut(s) {
                Some(v) => *v = *p,
                None => {
                    w.positions.insert(s.clone(), *p);
                }
            }
        }
        self.metrics.samples_appended.add(out.samples);
        self.metrics.series_created.add(out.series_created);
        self.metrics.duplicates_replaced.add(out.replaced);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LabelLimits;
    use crate::store::{Store, StoreOptions};

    /// An id target appends like its label set; a wrong kind or an id the store never
    /// returned fails the append as a whole (nothing stored).
    #[test]
    fn id_targets_append_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            background: false,
            ..StoreOptions::default()
        };
        let store = Store::open(dir.path(), opts).unwrap();
        let labels = Labels::from_pairs([("__name__", "u"), ("tenant", "a")], &LabelLimits::default()).unwrap();
        let s = |ts| Sample {
            ts,
            value: Value::Float(1.0),
        };
        let first = [s(1)];
        store
            .append_series(&[(SeriesTarget::Labels(&labels), SeriesKind::DELTA, &first)], &[])
            .unwrap();
        let (id, kind) = store.series_id(&labels).unwrap();
        assert_eq!(kind, SeriesKind::DELTA);
        let more = [s(2), s(3)];
        let out = store
            .append_series(&[(SeriesTarget::Id(id), SeriesKind::DELTA, &more)], &[("x".into(), 1)])
            .unwrap();
        assert_eq!(out.samples, 2);
        let err = store
            .append_series(&[(SeriesTarget::Id(id), SeriesKind::GAUGE, &more)], &[("x".into(), 2)])
            .unwrap_err();
        assert!(matches!(err, StoreError::KindMismatch(_)), "{err}");
        let err = store
            .append_series(
                &[(SeriesTarget::Id(SeriesId(99)), SeriesKind::DELTA, &more)],
                &[("x".into(), 3)],
            )
            .unwrap_err();
        assert!(err.to_string().contains("unknown series id 99"), "{err}");
        // The failed appends left no trace: the position is still the first one's.
        assert_eq!(store.source_position("x"), Some(1));
        assert_eq!(store.stats().head_samples, 3);
    }
}
