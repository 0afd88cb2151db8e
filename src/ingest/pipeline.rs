//! The one write path of every ingest source: validate → price → dedup → batch → append.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;
use xxhash_rust::xxh3::xxh3_128;

use super::dedup::{dedup_key, Dedup, DedupConfig, IdHasher};
use super::event::{parse_event, Event, Reject, RejectCode, ValidationLimits};
use super::pricing::PriceBook;
use super::{IngestMetrics, Source};
use crate::model::{DupPolicy, Labels, LabelsBuilder, Money, Sample, SeriesKind, Value, ValueKind};
use crate::store::{now_ns, Store, StoreError, WriteBatch};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("dedup log {path}: {source}")]
    Dedup {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Settings shared by every ingest path.
#[derive(Debug, Clone, Default)]
pub struct PipelineConfig {
    pub limits: ValidationLimits,
    pub dedup: DedupConfig,
}

/// One event ready to write (its dedup decision is made at commit).
#[derive(Debug, Clone, Copy)]
struct Prepared {
    key: u128,
    ts: i64,
    usage_series: u32,
    value: f64,
    cost: Option<(u32, Money)>,
    unpriced: Option<&'static str>,
}

/// Events collected for one atomic append, with the source positions they advance.
#[derive(Debug, Default)]
pub struct Batch {
    series: Vec<(Labels, SeriesKind)>,
    index: HashMap<u128, u32, BuildHasherDefault<IdHasher>>,
    events: Vec<Prepared>,
    /// source ("topic/partition", "http") → next position.
    pub positions: BTreeMap<String, i64>,
    pub rejected: u64,
    key_buf: Vec<u8>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn events(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.positions.is_empty()
    }

    pub fn clear(&mut self) {
        self.series.clear();
        self.index.clear();
        self.events.clear();
        self.positions.clear();
        self.rejected = 0;
    }

    /// Records that the batch advances `source` to `next` (no allocation once present).
    pub fn set_position(&mut self, source: &str, next: i64) {
        match self.positions.get_mut(source) {
            Some(v) => *v = next,
            None => {
                self.positions.insert(source.to_string(), next);
            }
        }
    }
}

fn kind_name(k: SeriesKind) -> &'static str {
    match (k.value, k.dup) {
        (ValueKind::Float, DupPolicy::Replace) => "gauge",
        (ValueKind::Float, DupPolicy::Sum) => "delta (usage)",
        (ValueKind::Money, DupPolicy::Sum) => "money (cost)",
        (ValueKind::Money, DupPolicy::Replace) => "money gauge",
    }
}

/// What a commit did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitOutcome {
    pub accepted: u64,
    pub duplicates: u64,
    pub unpriced: u64,
}

/// Series label sets built so far (validated once), keyed by a hash of their parts. The
/// flag is true once the store is known to hold the series with the kind ingest writes
/// (kinds never change, so it is not checked again).
#[derive(Default)]
struct SeriesCache {
    map: HashMap<u128, (Labels, bool), BuildHasherDefault<IdHasher>>,
}

const CACHE_MAX: usize = 1_000_000;

pub struct Pipeline {
    pub store: Arc<Store>,
    prices: PriceBook,
    pub limits: ValidationLimits,
    dedup: Mutex<Dedup>,
    cache: Mutex<SeriesCache>,
    pub metrics: Arc<IngestMetrics>,
    /// Sequence of HTTP batches (the store position of source `http`); also serialises them.
    http_seq: Mutex<i64>,
}

impl Pipeline {
    /// Opens the dedup state under `<store dir>/ingest/dedup`.
    pub fn new(
        store: Arc<Store>,
        prices: PriceBook,
        cfg: PipelineConfig,
        metrics: Arc<IngestMetrics>,
    ) -> Result<Pipeline, IngestError> {
        let dir = store.dir().join("ingest").join("dedup");
        let st = store.clone();
        let dedup =
            Dedup::open(&dir, cfg.dedup.clone(), &|s| st.source_position(s)).map_err(|source| IngestError::Dedup {
                path: dir.display().to_string(),
                source,
            })?;
        tracing::info!(keys = dedup.len(), dir = %dir.display(), "dedup state loaded");
        let http_seq = store.source_position("http").unwrap_or(0);
        Ok(Pipeline {
            store,
            prices,
            limits: cfg.limits,
            dedup: Mutex::new(dedup),
            cache: Mutex::new(SeriesCache::default()),
            metrics,
            http_seq: Mutex::new(http_seq),
        })
    }

    pub fn dedup_dir(store_dir: &Path) -> std::path::PathBuf {
        store_dir.join("ingest").join("dedup")
    }

    /// Validates, prices and adds one event to `batch`. The caller handles the rejection
    /// (dead-letter or HTTP response) and counts it via `metrics.add_rejected`.
    pub fn prepare(&self, batch: &mut Batch, bytes: &[u8], now: i64) -> Result<(), Reject> {
        let ev = parse_event(bytes, &self.limits, now)?;
        self.prepare_event(batch, &ev)
    }

    fn prepare_event(&self, batch: &mut Batch, ev: &Event<'_>) -> Result<(), Reject> {
        let mut cost: Option<(Money, &str)> = None;
        let mut unpriced = None;
        if let Some(c) = ev.cost {
            cost = ev.currency.as_deref().map(|cur| (c, cur));
        } else if let Some(sku) = ev.sku.as_deref() {
            match self
                .prices
                .price(sku, ev.ts, ev.unit.as_deref(), ev.currency.as_deref(), ev.qty_nanos)
            {
                Ok((c, cur)) => cost = Some((c, cur)),
                Err(u) => unpriced = Some(u.as_str()),
            }
        }
        let usage_series = self.series_for(batch, ev, None, unpriced)?;
        let cost = match cost {
            Some((c, cur)) => Some((self.series_for(batch, ev, Some(cur), None)?, c)),
            None => None,
        };
        batch.events.push(Prepared {
            key: dedup_key(&ev.tenant, &ev.event_id),
            ts: ev.ts,
            usage_series,
            value: ev.value,
            cost,
            unpriced,
        });
        Ok(())
    }

    /// The batch-local index of the usage series (`currency` None) or cost series of `ev`.
    fn series_for(
        &self,
        batch: &mut Batch,
        ev: &Event<'_>,
        currency: Option<&str>,
        unpriced: Option<&str>,
    ) -> Result<u32, Reject> {
        let buf = &mut batch.key_buf;
        buf.clear();
        let mut part = |s: &str| {
            buf.extend_from_slice(s.as_bytes());
            buf.push(0xff);
        };
        part(if currency.is_some() { "c" } else { "u" });
        part(&ev.metric);
        part(&ev.tenant);
        part(ev.sku.as_deref().unwrap_or(""));
        if let Some(cur) = currency {
            part(cur);
        } else {
            part(ev.unit.as_deref().unwrap_or(""));
            part(unpriced.unwrap_or(""));
        }
        for (k, v) in &ev.labels {
            part(k);
            part(v);
        }
        let key = xxh3_128(&batch.key_buf);
        if let Some(&i) = batch.index.get(&key) {
            return Ok(i);
        }
        let kind = if currency.is_some() {
            SeriesKind::MONEY
        } else {
            SeriesKind::DELTA
        };
        let mut cache = self.cache.lock();
        let (labels, verified) = match cache.map.get(&key) {
            Some(e) => e.clone(),
            None => {
                let mut b = LabelsBuilder::new();
                b.push("tenant", ev.tenant.as_ref());
                if let Some(sku) = &ev.sku {
                    b.push("sku", sku.as_ref());
                }
                if let Some(cur) = currency {
                    b.metric("cost");
                    b.push("currency", cur);
                    b.push("source_metric", ev.metric.as_ref());
                } else {
                    b.metric(ev.metric.as_ref());
                    if let Some(u) = &ev.unit {
                        b.push("unit", u.as_ref());
                    }
                    if let Some(u) = unpriced {
                        b.push("unpriced", u);
                    }
                }
                for (k, v) in &ev.labels {
                    b.push(k.as_ref(), v.as_ref());
                }
                let l = b.build(&self.limits.labels).map_err(|e| Reject {
                    code: RejectCode::InvalidLabel,
                    reason: e.to_string(),
                })?;
                if cache.map.len() >= CACHE_MAX {
                    cache.map.clear();
                }
                cache.map.insert(key, (l.clone(), false));
                (l, false)
            }
        };
        if !verified {
            // A series written before with another kind (e.g. a remote-write gauge of the
            // same name and labels) would fail the whole append: reject just this event.
            match self.store.series_kind(&labels) {
                None => {}
                Some((k, canonical)) if k == kind => {
                    // Keep the store's copy: later appends resolve it by address.
                    if let Some(e) = cache.map.get_mut(&key) {
                        *e = (canonical, true);
                    }
                }
                Some((k, _)) => {
                    return Err(Reject {
                        code: RejectCode::KindMismatch,
                        reason: format!(
                            "series {labels} already exists as a {} series; this event writes a {} series",
                            kind_name(k),
                            kind_name(kind)
                        ),
                    })
                }
            }
        }
        drop(cache);
        let i = batch.series.len() as u32;
        batch.series.push((labels, kind));
        batch.index.insert(key, i);
        Ok(i)
    }

    /// De-duplicates and appends the batch atomically with its positions. On error nothing
    /// of the batch is stored and the dedup state is as before: the caller may retry.
    pub fn commit(&self, batch: &Batch, src: Source) -> Result<CommitOutcome, IngestError> {
        let mut out = CommitOutcome::default();
        let mut keys = Vec::with_capacity(batch.events.len());
        let mut fresh_ts = Vec::with_capacity(batch.events.len());
        let mut fresh = Vec::with_capacity(batch.events.len());
        let mut unpriced: Vec<&'static str> = Vec::new();
        // Samples grouped by series with a stable counting sort into one flat buffer (no
        // vector per series): `start[s]..start[s + 1]` are series `s`'s samples in event order.
        let mut start = vec![0usize; batch.series.len() + 1];
        let mut dedup = self.dedup.lock();
        for e in &batch.events {
            let new = dedup.check_insert(e.key);
            fresh.push(new);
            if !new {
                out.duplicates += 1;
                continue;
            }
            keys.push(e.key);
            fresh_ts.push(e.ts);
            start[e.usage_series as usize + 1] += 1;
            if let Some((s, _)) = e.cost {
                start[s as usize + 1] += 1;
            }
            if let Some(u) = e.unpriced {
                unpriced.push(u);
            }
            out.accepted += 1;
        }
        for i in 1..start.len() {
            start[i] += start[i - 1];
        }
        let placeholder = Sample {
            ts: 0,
            value: Value::Float(0.0),
        };
        // `start` ends at the number of fresh samples, so every index below is in bounds.
        let mut samples = vec![placeholder; start[batch.series.len()]];
        let mut next = start.clone();
        for (e, _) in batch.events.iter().zip(&fresh).filter(|(_, f)| **f) {
            let u = e.usage_series as usize;
            samples[next[u]] = Sample {
                ts: e.ts,
                value: Value::Float(e.value),
            };
            next[u] += 1;
            if let Some((s, m)) = e.cost {
                let s = s as usize;
                samples[next[s]] = Sample {
                    ts: e.ts,
                    value: Value::Money(m),
                };
                next[s] += 1;
            }
        }
        let series: Vec<(&Labels, SeriesKind, &[Sample])> = batch
            .series
            .iter()
            .enumerate()
            .filter(|(i, _)| start[i + 1] > start[*i])
            .map(|(i, (labels, kind))| (labels, *kind, &samples[start[i]..start[i + 1]]))
            .collect();
        let positions: Vec<(String, i64)> = batch.positions.iter().map(|(k, v)| (k.clone(), *v)).collect();
        if let Err(source) = dedup.log(&positions, &keys) {
            dedup.rollback(&keys);
            return Err(IngestError::Dedup {
                path: "ingest/dedup".into(),
                source,
            });
        }
        if series.is_empty() && positions.is_empty() {
            return Ok(out);
        }
        if let Err(e) = self.store.append_series(&series, &positions) {
            dedup.rollback(&keys);
            self.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
            return Err(e.into());
        }
        self.metrics.dedup_evicted.store(dedup.evicted, Ordering::Relaxed);
        drop(dedup);
        let now = now_ns();
        for ts in fresh_ts {
            self.metrics.freshness.observe((now - ts) as f64 / 1e9);
        }
        self.metrics.batches.fetch_add(1, Ordering::Relaxed);
        self.metrics.add_accepted(src, out.accepted);
        self.metrics.dedup_hits.fetch_add(out.duplicates, Ordering::Relaxed);
        out.unpriced = unpriced.len() as u64;
        if !unpriced.is_empty() {
            let mut m = self.metrics.unpriced.lock();
            for u in unpriced {
                *m.entry(u).or_default() += 1;
            }
        }
        Ok(out)
    }

    /// `POST /api/v1/ingest`: NDJSON events; each line is validated, the valid ones are
    /// appended in one atomic batch (position `http` = request sequence, so the dedup
    /// log survives crashes exactly like Kafka's).
    pub fn ingest_ndjson(&self, body: &[u8]) -> Result<NdjsonOutcome, IngestError> {
        let now = now_ns();
        let mut batch = Batch::new();
        let mut rejected = Vec::new();
        for (i, line) in body.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            if let Err(r) = self.prepare(&mut batch, line, now) {
                self.metrics.add_rejected(Source::Http, r.code, 1);
                rejected.push((i + 1, r));
            }
        }
        let mut seq = self.http_seq.lock();
        batch.positions.insert("http".to_string(), *seq + 1);
        let out = self.commit(&batch, Source::Http)?;
        *seq += 1;
        Ok(NdjsonOutcome { outcome: out, rejected })
    }

    /// Appends remote-write series (gauges) as one batch.
    pub fn append_series(&self, wb: &WriteBatch) -> Result<u64, IngestError> {
        if wb.series.is_empty() {
            return Ok(0);
        }
        let out = self.store.append(wb)?;
        self.metrics.add_accepted(Source::RemoteWrite, out.samples);
        Ok(out.samples)
    }
}

#[derive(Debug)]
pub struct NdjsonOutcome {
    pub outcome: CommitOutcome,
    /// (1-based line, rejection).
    pub rejected: Vec<(usize, Reject)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LabelLimits;
    use crate::store::StoreOptions;

    fn event(id: &str, metric: &str, ts: i64) -> String {
        format!(
            r#"{{"event_id":"{id}","ts":{ts},"tenant":"acme","metric":"{metric}","value":2,"labels":{{"region":"eu"}}}}"#
        )
    }

    #[test]
    fn kind_mismatch_rejects_the_event_not_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            background: false,
            ..StoreOptions::default()
        };
        let store = Arc::new(Store::open(dir.path(), opts).unwrap());
        let now = now_ns();
        // The usage series of metric `m` exists already as a gauge (e.g. remote-write).
        let gauge = Labels::from_pairs(
            [("__name__", "m"), ("tenant", "acme"), ("region", "eu")],
            &LabelLimits::default(),
        )
        .unwrap();
        let mut wb = WriteBatch::new();
        wb.add(
            gauge.clone(),
            SeriesKind::GAUGE,
            vec![Sample {
                ts: now - 1_000,
                value: Value::Float(7.0),
            }],
        );
        store.append(&wb).unwrap();
        let metrics = Arc::new(IngestMetrics::default());
        let dedup = DedupConfig {
            fsync: false,
            ..DedupConfig::default()
        };
        let cfg = PipelineConfig {
            dedup,
            ..PipelineConfig::default()
        };
        let p = Pipeline::new(store.clone(), PriceBook::default(), cfg, metrics).unwrap();
        let mut batch = Batch::new();
        let bad = event("e1", "m", now);
        let err = p.prepare(&mut batch, bad.as_bytes(), now).unwrap_err();
        assert_eq!(err.code, RejectCode::KindMismatch, "{}", err.reason);
        assert!(err.reason.contains("gauge"), "{}", err.reason);
        p.prepare(&mut batch, event("e2", "other", now).as_bytes(), now)
            .unwrap();
        batch.set_position("t/0", 2);
        let out = p.commit(&batch, Source::Kafka).unwrap();
        assert_eq!(out.accepted, 1);
        assert_eq!(store.source_position("t/0"), Some(2));
        // The gauge is untouched and still a gauge; the new series is a delta series.
        assert_eq!(store.series_kind(&gauge).map(|(k, _)| k), Some(SeriesKind::GAUGE));
        let other = Labels::from_pairs(
            [("__name__", "other"), ("tenant", "acme"), ("region", "eu")],
            &LabelLimits::default(),
        )
        .unwrap();
        assert_eq!(store.series_kind(&other).map(|(k, _)| k), Some(SeriesKind::DELTA));
        // Rejected again on a later batch (the cache does not hide the mismatch).
        let mut batch = Batch::new();
        let err = p.prepare(&mut batch, bad.as_bytes(), now).unwrap_err();
        assert_eq!(err.code, RejectCode::KindMismatch);
    }
}
