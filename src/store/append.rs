//! The write path.

use std::time::Instant;

use super::{AppendOutcome, Inner, StoreError, WriteBatch};
use crate::index::SeriesId;
use crate::model::sample::raw_of;
use crate::model::{Value, ValueKind};
use crate::wal::{encode_batch, WalSeries};

/// One series of a batch, resolved and converted to raw columns.
struct Prepared {
    id: SeriesId,
    ts: Vec<i64>,
    vals: Vec<u64>,
}

fn kind_name(k: ValueKind) -> &'static str {
    match k {
        ValueKind::Float => "float",
        ValueKind::Money => "money",
    }
}

impl Inner {
    pub(crate) fn append(&self, batch: &WriteBatch) -> Result<AppendOutcome, StoreError> {
        let mut out = AppendOutcome::default();
        // 1. Validate values against kinds before anything becomes durable.
        let mut prepared = Vec::with_capacity(batch.series.len());
        for sw in &batch.series {
            if sw.samples.is_empty() {
                continue;
            }
            let mut ts = Vec::with_capacity(sw.samples.len());
            let mut vals = Vec::with_capacity(sw.samples.len());
            for (i, s) in sw.samples.iter().enumerate() {
                let raw = raw_of(sw.kind.value, s.value).ok_or_else(|| StoreError::ValueKind {
                    labels: sw.labels.to_string(),
                    index: i,
                    got: match s.value {
                        Value::Float(_) => "float",
                        Value::Money(_) => "money",
                    },
                    expected: kind_name(sw.kind.value),
                })?;
                ts.push(s.ts);
                vals.push(raw);
            }
            prepared.push(Prepared {
                id: SeriesId(u32::MAX),
                ts,
                vals,
            });
        }
        // 2. Resolve series: read lock for known ones, write lock only to create.
        {
            let index = self.index.read();
            let mut missing = false;
            let writes = || batch.series.iter().filter(|s| !s.samples.is_empty());
            for (p, sw) in prepared.iter_mut().zip(writes()) {
                match index.check_kind(&sw.labels, sw.kind)? {
                    Some(id) => p.id = id,
                    None => missing = true,
                }
            }
            if missing {
                drop(index);
                let mut index = self.index.write();
                for (p, sw) in prepared.iter_mut().zip(writes()) {
                    if p.id.0 == u32::MAX {
                        let (id, created) = index.get_or_create(&sw.labels, sw.kind)?;
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
        encode_batch(
            &defs,
            prepared.iter().map(|p| (p.id.0, &p.ts, &p.vals)),
            &batch.positions,
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
            for p in &prepared {
                if let Some(e) = index.get(p.id) {
                    if let (Some(lo), Some(hi)) = (p.ts.iter().min(), p.ts.iter().max()) {
                        e.observe(*lo, *hi);
                    }
                    out.replaced += head.append(p.id, e.kind, &p.ts, &p.vals);
                }
                out.samples += p.ts.len() as u64;
            }
            if head.samples() >= self.opts.head_max_samples {
                self.wake_maintenance();
            }
        }
        for (s, p) in &batch.positions {
            w.positions.insert(s.clone(), *p);
        }
        self.metrics.samples_appended.add(out.samples);
        self.metrics.series_created.add(out.series_created);
        self.metrics.duplicates_replaced.add(out.replaced);
        Ok(out)
    }
}
