//! The one write path of every ingest source: validate → price → dedup → batch → append.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::dedup::{dedup_key, Dedup, DedupConfig};
use super::event::{read_fields, validate, Event, Reject, RejectCode, ValidationLimits};
use super::pricing::{PriceBook, Unpriced};
use super::scan::Fields;
use super::shape_cache::{price_tag, series_key, shape_key, unreadable_labels, ShapeCache};
use super::{IngestMetrics, Source};
use crate::index::SeriesId;
use crate::model::{DupPolicy, Labels, LabelsBuilder, Money, Sample, SeriesKind, Value, ValueKind};
use crate::store::{now_ns, SeriesTarget, Store, StoreError, WriteBatch};

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
#[derive(Debug)]
pub struct Batch {
    /// The batch's series, in first-use order; events refer to them by index.
    series: Vec<(BatchSeries, SeriesKind)>,
    /// Distinguishes this batch (and each reuse after `clear`) in the series cache's
    /// slot stamps, so finding an event's batch-local series index costs no extra lookup.
    epoch: u64,
    events: Vec<Prepared>,
    /// source ("topic/partition", "http") → next position.
    pub positions: BTreeMap<String, i64>,
    pub rejected: u64,
    key_buf: Vec<u8>,
}

/// A series of a batch: known to the store (appended by id) or new (by label set).
#[derive(Debug)]
enum BatchSeries {
    Id(SeriesId),
    Labels(Labels),
}

fn next_epoch() -> u64 {
    static EPOCH: AtomicU64 = AtomicU64::new(1);
    EPOCH.fetch_add(1, Ordering::Relaxed)
}

impl Default for Batch {
    fn default() -> Batch {
        Batch {
            series: Vec::new(),
            epoch: next_epoch(),
            events: Vec::new(),
            positions: BTreeMap::new(),
            rejected: 0,
            key_buf: Vec::new(),
        }
    }
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
        self.epoch = next_epoch();
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

/// The series an event shape writes (the [`ShapeCache`] entry).
struct EventSeries {
    usage: CachedSeries,
    /// Present when the event is priced (the cost's currency is in the price tag and the
    /// series key).
    cost: Option<CachedSeries>,
}

struct CachedSeries {
    /// The label set until the store holds the series with this kind; then only its id
    /// (ids stay valid for the life of the store and kinds never change, so it is not
    /// checked again, and the label set is not kept twice).
    target: BatchSeries,
    kind: SeriesKind,
    /// `slot` is this series' index in the batch with epoch `epoch`.
    epoch: u64,
    slot: u32,
}

impl CachedSeries {
    fn new(labels: Labels, kind: SeriesKind) -> Self {
        CachedSeries {
            target: BatchSeries::Labels(labels),
            kind,
            epoch: 0,
            slot: 0,
        }
    }

    /// Resolves the store id if not known yet; rejects a kind clash (a series written
    /// before with another kind, e.g. a remote-write gauge of the same name and labels,
    /// would fail the whole append).
    fn verify(&mut self, store: &Store) -> Result<(), Reject> {
        let BatchSeries::Labels(labels) = &self.target else {
            return Ok(());
        };
        match store.series_id(labels) {
            None => Ok(()),
            Some((id, k)) if k == self.kind => {
                self.target = BatchSeries::Id(id);
                Ok(())
            }
            Some((_, k)) => Err(Reject {
                code: RejectCode::KindMismatch,
                reason: format!(
                    "series {labels} already exists as a {} series; this event writes a {} series",
                    kind_name(k),
                    kind_name(self.kind)
                ),
            }),
        }
    }

    /// This series' index in `batch`, adding it on first use.
    fn slot(&mut self, batch: &mut Batch) -> u32 {
        if self.epoch != batch.epoch {
            let target = match &self.target {
                BatchSeries::Id(id) => BatchSeries::Id(*id),
                BatchSeries::Labels(l) => BatchSeries::Labels(l.clone()),
            };
            self.epoch = batch.epoch;
            self.slot = batch.series.len() as u32;
            batch.series.push((target, self.kind));
        }
        self.slot
    }
}

/// The most events [`Pipeline::prepare_group`] takes at once: enough loads in flight to
/// cover a memory access, few enough that their slots stay in cache until used.
pub const GROUP: usize = 8;

/// How many events ahead a commit prefetches dedup slots.
const DEDUP_PREFETCH_AHEAD: usize = 8;

pub struct Pipeline {
    pub store: Arc<Store>,
    prices: PriceBook,
    pub limits: ValidationLimits,
    dedup: Mutex<Dedup>,
    cache: Mutex<ShapeCache<EventSeries>>,
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
            cache: Mutex::new(ShapeCache::default()),
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
        let fields = read_fields(bytes, &self.limits)?;
        let shape = shape_key(&fields, &mut batch.key_buf);
        let mut cache = self.cache.lock();
        // Its slot loads while the event's id and time are checked.
        cache.prefetch(shape);
        self.finish(batch, &mut cache, fields, shape, now)
    }

    /// [`Pipeline::prepare`] of up to [`GROUP`] events, with the same outcome for each
    /// (`out[i]` is `payloads[i]`'s; events are added to `batch` in order).
    ///
    /// Why: at a hundred thousand shapes the shape cache is several megabytes, and each
    /// event's lookup missed the CPU caches: a prefetch issued while one event's id and
    /// time were checked came too late (the lookup was a tenth of the Kafka consumer
    /// thread). Here every event of the group is scanned and its slot requested before
    /// the first is validated, so the loads overlap each other and the scans.
    pub fn prepare_group(&self, batch: &mut Batch, payloads: &[&[u8]], now: i64, out: &mut [Result<(), Reject>]) {
        let n = payloads.len().min(out.len()).min(GROUP);
        let mut staged: [Option<Result<(Fields<'_>, u128), Reject>>; GROUP] = Default::default();
        let mut cache = self.cache.lock();
        for (slot, bytes) in staged.iter_mut().zip(&payloads[..n]) {
            *slot = Some(read_fields(bytes, &self.limits).map(|f| {
                let shape = shape_key(&f, &mut batch.key_buf);
                cache.prefetch(shape);
                (f, shape)
            }));
        }
        // The first `n` slots are filled, and only those.
        for (o, scanned) in out[..n].iter_mut().zip(staged.into_iter().flatten()) {
            *o = scanned.and_then(|(fields, shape)| self.finish(batch, &mut cache, fields, shape, now));
        }
    }

    /// The rest of [`Pipeline::prepare`] once an event is scanned and its shape known.
    fn finish(
        &self,
        batch: &mut Batch,
        cache: &mut ShapeCache<EventSeries>,
        fields: Fields<'_>,
        shape: u128,
        now: i64,
    ) -> Result<(), Reject> {
        let ev = validate(fields, &self.limits, now, || cache.knows(shape))?;
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
                Err(u) => unpriced = Some(u),
            }
        }
        let currency = cost.map(|c| c.1);
        let tag = price_tag(unpriced, currency);
        let unpriced = unpriced.map(Unpriced::as_str);
        let entry = cache.get_or_try_insert(
            shape,
            tag,
            || series_key(&ev, currency, unpriced, &mut batch.key_buf),
            || self.build_series(&ev, currency, unpriced),
        )?;
        // Once per series and batch: a series new to the store stays unresolved until
        // the batch that creates it is appended.
        if entry.usage.epoch != batch.epoch {
            entry.usage.verify(&self.store)?;
        }
        if let Some(c) = entry.cost.as_mut().filter(|c| c.epoch != batch.epoch) {
            c.verify(&self.store)?;
        }
        let usage_series = entry.usage.slot(batch);
        let cost_series = entry.cost.as_mut().map(|c| c.slot(batch));
        batch.events.push(Prepared {
            key: dedup_key(&ev.tenant, &ev.event_id),
            ts: ev.ts,
            usage_series,
            value: ev.value,
            cost: cost.zip(cost_series).map(|((c, _), s)| (s, c)),
            unpriced,
        });
        Ok(())
    }

    /// The label sets of an event shape's usage and cost series (validated).
    fn build_series(
        &self,
        ev: &Event<'_>,
        currency: Option<&str>,
        unpriced: Option<&str>,
    ) -> Result<EventSeries, Reject> {
        let invalid = |e: crate::model::ModelError| Reject {
            code: RejectCode::InvalidLabel,
            reason: e.to_string(),
        };
        let pairs = ev.labels.pairs().ok_or_else(unreadable_labels)?;
        // tenant, sku, __name__ and unit or unpriced, currency or source_metric: at most 5
        // besides the event's own.
        let mut b = LabelsBuilder::with_capacity(pairs.len() + 5);
        b.push("tenant", ev.tenant.as_ref());
        if let Some(sku) = &ev.sku {
            b.push("sku", sku.as_ref());
        }
        b.metric(ev.metric.as_ref());
        if let Some(u) = &ev.unit {
            b.push("unit", u.as_ref());
        }
        if let Some(u) = unpriced {
            b.push("unpriced", u);
        }
        for (k, v) in pairs.iter() {
            b.push(k.as_ref(), v.as_ref());
        }
        let usage = CachedSeries::new(b.build(&self.limits.labels).map_err(invalid)?, SeriesKind::DELTA);
        let cost = match currency {
            None => None,
            Some(cur) => {
                let mut b = LabelsBuilder::with_capacity(pairs.len() + 5);
                b.push("tenant", ev.tenant.as_ref());
                if let Some(sku) = &ev.sku {
                    b.push("sku", sku.as_ref());
                }
                b.metric("cost");
                b.push("currency", cur);
                b.push("source_metric", ev.metric.as_ref());
                for (k, v) in pairs.iter() {
                    b.push(k.as_ref(), v.as_ref());
                }
                Some(CachedSeries::new(
                    b.build(&self.limits.labels).map_err(invalid)?,
                    SeriesKind::MONEY,
                ))
            }
        };
        Ok(EventSeries { usage, cost })
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
        for (i, e) in batch.events.iter().enumerate() {
            // At millions of keys every check is a cache miss: start the next ones early.
            if let Some(ahead) = batch.events.get(i + DEDUP_PREFETCH_AHEAD) {
                dedup.prefetch(ahead.key);
            }
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
        let series: Vec<(SeriesTarget<'_>, SeriesKind, &[Sample])> = batch
            .series
            .iter()
            .enumerate()
            .filter(|(i, _)| start[i + 1] > start[*i])
            .map(|(i, (target, kind))| {
                let target = match target {
                    BatchSeries::Id(id) => SeriesTarget::Id(*id),
                    BatchSeries::Labels(l) => SeriesTarget::Labels(l),
                };
                (target, *kind, &samples[start[i]..start[i + 1]])
            })
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
        let mut freshness = super::HistogramBatch::default();
        for ts in fresh_ts {
            freshness.observe((now - ts) as f64 / 1e9);
        }
        self.metrics.freshness.add(&mut freshness);
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
        let (_dir, store) = open_store();
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
        let p = test_pipeline(&store);
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
        assert_eq!(store.series_id(&gauge).map(|(_, k)| k), Some(SeriesKind::GAUGE));
        let other = Labels::from_pairs(
            [("__name__", "other"), ("tenant", "acme"), ("region", "eu")],
            &LabelLimits::default(),
        )
        .unwrap();
        assert_eq!(store.series_id(&other).map(|(_, k)| k), Some(SeriesKind::DELTA));
        // Rejected again on a later batch (the cache does not hide the mismatch).
        let mut batch = Batch::new();
        let err = p.prepare(&mut batch, bad.as_bytes(), now).unwrap_err();
        assert_eq!(err.code, RejectCode::KindMismatch);
    }

    /// Series new to the store go by label set; once stored, later batches append by id,
    /// one batch entry per series however many events share it, and nothing is lost.
    #[test]
    fn known_series_are_appended_by_id() {
        let (_dir, store) = open_store();
        let p = test_pipeline(&store);
        let now = now_ns();
        let mut n = 0;
        for round in 0..3 {
            let mut batch = Batch::new();
            for i in 0..4 {
                for metric in ["a", "b"] {
                    n += 1;
                    let e = event(&format!("e{n}"), metric, now - 1_000_000 * (10 - round * 4 - i));
                    p.prepare(&mut batch, e.as_bytes(), now).unwrap();
                }
            }
            assert_eq!(batch.series.len(), 2, "one entry per series, not per event");
            let by_id = batch
                .series
                .iter()
                .filter(|(t, _)| matches!(t, BatchSeries::Id(_)))
                .count();
            assert_eq!(by_id, if round == 0 { 0 } else { 2 }, "round {round}");
            batch.set_position("t/0", round + 1);
            assert_eq!(p.commit(&batch, Source::Kafka).unwrap().accepted, 8);
        }
        use crate::store::{SelectRequest, SeriesSource};
        let snap = store.snapshot();
        let m = [crate::index::Matcher::equal("__name__", "a")];
        let req = SelectRequest {
            tenant: Some("acme"),
            matchers: &m,
            start: i64::MIN,
            end: i64::MAX,
        };
        let runs: Vec<usize> = snap.select(&req).unwrap().map(|s| s.unwrap().ts.len()).collect();
        assert_eq!(runs, vec![12]);
    }

    fn test_pipeline(store: &Arc<Store>) -> Pipeline {
        let cfg = PipelineConfig {
            dedup: DedupConfig {
                fsync: false,
                ..DedupConfig::default()
            },
            ..PipelineConfig::default()
        };
        let book = PriceBook::parse(
            r#"[[price]]
sku = "compute.m5"
unit = "hour"
unit_price = "0.096"
currency = "USD"
valid_from = "2000-01-01T00:00:00Z"

[[price]]
sku = "big"
unit = "hour"
unit_price = "1000000"
currency = "USD""#,
        )
        .unwrap();
        Pipeline::new(store.clone(), book, cfg, Arc::new(IngestMetrics::default())).unwrap()
    }

    fn open_store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            background: false,
            ..StoreOptions::default()
        };
        let store = Arc::new(Store::open(dir.path(), opts).unwrap());
        (dir, store)
    }

    /// What `prepare` made of one event: its rejection, or its values and the label sets
    /// of its series (none of which the store holds in these tests).
    fn outcome(p: &Pipeline, batch: &mut Batch, bytes: &[u8], now: i64) -> String {
        if let Err(r) = p.prepare(batch, bytes, now) {
            return format!("rejected {:?}: {}", r.code, r.reason);
        }
        match batch.events.last() {
            Some(e) => describe(batch, e),
            None => "nothing prepared".into(),
        }
    }

    /// A prepared event's values, pricing and series (label sets, or store ids).
    fn describe(batch: &Batch, e: &Prepared) -> String {
        let labels = |i: u32| match &batch.series[i as usize] {
            (BatchSeries::Labels(l), k) => format!("{l} {k:?}"),
            (BatchSeries::Id(id), k) => format!("id {id:?} {k:?}"),
        };
        format!(
            "ts {} value {} unpriced {:?} usage {} cost {:?}",
            e.ts,
            e.value,
            e.unpriced,
            labels(e.usage_series),
            e.cost.map(|(s, c)| (labels(s), c))
        )
    }

    /// `,"name":value` with one of `values` (`-`: the field left out).
    fn json_field(name: &'static str, values: Vec<&'static str>) -> impl Strategy<Value = String> {
        proptest::sample::select(values).prop_map(move |v| {
            if v == "-" {
                String::new()
            } else {
                format!(",\"{name}\":{v}")
            }
        })
    }

    use proptest::prelude::*;

    /// Events from small pools of valid and faulty fields, so shapes repeat with other
    /// event ids, times, values and costs: valid and invalid metrics, tenants, units,
    /// currencies, SKUs (priced, unknown) and labels (reordered, respaced, escaped, bad
    /// names, reserved, duplicated, too long).
    type Shape = (String, String, String, String, String, String, u8);

    /// An event's shape fields (metric, tenant, sku, unit, currency, labels, and whether
    /// the unit is too long when 0): valid ones only, or with faulty values among them.
    fn shape(faults: bool) -> impl Strategy<Value = Shape> {
        fn field(
            name: &'static str,
            valid: &'static [&'static str],
            faulty: &'static [&'static str],
            faults: bool,
        ) -> impl Strategy<Value = String> {
            json_field(
                name,
                valid.iter().chain(if faults { faulty } else { &[] }).copied().collect(),
            )
        }
        (
            field(
                "metric",
                &["\"compute_hours\"", "\"storage_gb\""],
                &["\"bad-metric\"", "\"cost\"", "-"],
                faults,
            ),
            field(
                "tenant",
                &["\"acme\"", "\"beta\"", "\"ten\\u0061nt\""],
                &["\"\"", "-"],
                faults,
            ),
            field("sku", &["\"compute.m5\"", "\"big\"", "\"nope\"", "-"], &[], faults),
            field("unit", &["\"hour\"", "\"gb\"", "-"], &[], faults),
            field("currency", &["-", "\"USD\"", "\"EUR\""], &["\"ZZZ\""], faults),
            field(
                "labels",
                &[
                    r#"{"region":"eu"}"#,
                    r#"{ "region" : "eu" }"#,
                    r#"{"a":"1","region":"eu"}"#,
                    r#"{"region":"eu","a":"1"}"#,
                    r#"{"region":"e\u0075"}"#,
                    "{}",
                    "-",
                ],
                &[
                    r#"{"bad-name":"x"}"#,
                    r#"{"sku":"x"}"#,
                    r#"{"a":"1","a":"2"}"#,
                    r#"{"__x":"1"}"#,
                ],
                faults,
            ),
            if faults { 0u8..4 } else { 1u8..4 },
        )
    }

    fn pooled_events() -> impl Strategy<Value = Vec<String>> {
        let base = shape(false);
        let rest = (
            json_field("event_id", vec!["\"e1\"", "\"e2\"", "\"e3\"", "\"\""]),
            json_field(
                "ts",
                vec!["\"NOW\"", "\"NOW\"", "\"NOW\"", "\"LATE\"", "\"2025-13-01T00:00:00Z\""],
            ),
            json_field(
                "value",
                vec!["2", "1.5", "0.0000000001", "9000000000", "3", "1e999", "\"x\""],
            ),
            json_field("cost", vec!["-", "-", "-", "\"0.10\"", "0.25", "\"abc\""]),
        );
        // A few shapes per run, each a base shape with one field changed, so each recurs
        // with other ids, times, values and costs, and shapes differ in single fields.
        let variants = proptest::collection::vec((0usize..7, shape(true)), 0..6);
        let rests = proptest::collection::vec((rest, any::<prop::sample::Index>()), 1..80);
        (base, variants, rests).prop_map(|(base, variants, rests)| {
            let mut shapes = vec![base.clone()];
            for (field, other) in variants {
                let mut v = base.clone();
                match field {
                    0 => v.0 = other.0,
                    1 => v.1 = other.1,
                    2 => v.2 = other.2,
                    3 => v.3 = other.3,
                    4 => v.4 = other.4,
                    5 => v.5 = other.5,
                    _ => v.6 = other.6,
                }
                shapes.push(v);
            }
            rests
                .into_iter()
                .map(|((id, ts, v, cost), pick)| {
                    let (m, t, s, u, c, l, long_unit) = pick.get(&shapes);
                    let u = if *long_unit == 0 {
                        format!(",\"unit\":\"{}\"", "h".repeat(5000))
                    } else {
                        u.clone()
                    };
                    let body = format!("{id}{ts}{t}{m}{v}{u}{s}{cost}{c}{l}");
                    format!("{{{}}}", body.trim_start_matches(','))
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// A pipeline that has seen many shapes (so its cache skips the shape checks, lists
        /// no labels and shares series between shapes) prepares every event exactly as a
        /// fresh pipeline, which validates and builds everything, does: the same rejection,
        /// or the same values, pricing and series label sets.
        #[test]
        fn the_shape_cache_changes_no_outcome(events in pooled_events()) {
            let (_dir, store) = open_store();
            let now = now_ns();
            let warm = test_pipeline(&store);
            let mut warm_batch = Batch::new();
            for (i, e) in events.iter().enumerate() {
                let e = e
                    .replace("\"NOW\"", &(now - 1_000 * i as i64).to_string())
                    .replace("\"LATE\"", &(now - 72 * 3_600_000_000_000).to_string());
                let fresh = test_pipeline(&store);
                let expected = outcome(&fresh, &mut Batch::new(), e.as_bytes(), now);
                prop_assert_eq!(outcome(&warm, &mut warm_batch, e.as_bytes(), now), expected, "event {}", e);
            }
        }

        /// Events prepared in groups of any size (the Kafka consumer's way) have the
        /// outcome they have one at a time: the same rejection, or the same values, pricing
        /// and series, in the same order in the batch.
        #[test]
        fn a_group_prepares_like_one_at_a_time(
            events in pooled_events(),
            sizes in proptest::collection::vec(1..=GROUP, 1..40),
        ) {
            let (_dir, store) = open_store();
            let now = now_ns();
            let events: Vec<String> = events
                .iter()
                .enumerate()
                .map(|(i, e)| e.replace("\"NOW\"", &(now - 1_000 * i as i64).to_string()))
                .collect();
            let single = test_pipeline(&store);
            let mut single_batch = Batch::new();
            let want: Vec<String> = events
                .iter()
                .map(|e| outcome(&single, &mut single_batch, e.as_bytes(), now))
                .collect();
            let grouped = test_pipeline(&store);
            let mut batch = Batch::new();
            let mut got = Vec::new();
            let (mut at, mut size) = (0, sizes.iter().cycle());
            while at < events.len() {
                let n = (*size.next().unwrap_or(&1)).min(events.len() - at);
                let payloads: Vec<&[u8]> = events[at..at + n].iter().map(|e| e.as_bytes()).collect();
                let mut out: Vec<Result<(), Reject>> = (0..n).map(|_| Ok(())).collect();
                let before = batch.events.len();
                grouped.prepare_group(&mut batch, &payloads, now, &mut out);
                let mut next = before;
                for r in out {
                    got.push(match r {
                        Err(r) => format!("rejected {:?}: {}", r.code, r.reason),
                        Ok(()) => {
                            next += 1;
                            describe(&batch, &batch.events[next - 1])
                        }
                    });
                }
                prop_assert_eq!(next, batch.events.len(), "every accepted event added once");
                at += n;
            }
            prop_assert_eq!(got, want);
        }
    }

    /// An event carrying its cost and one priced from the price book, with the same labels
    /// in another order, write the same two series: one batch entry each.
    #[test]
    fn shapes_share_their_series() {
        let (_dir, store) = open_store();
        let p = test_pipeline(&store);
        let now = now_ns();
        let mut batch = Batch::new();
        for e in [
            format!(
                r#"{{"event_id":"a","ts":{now},"tenant":"acme","metric":"vcpu","value":2,"unit":"hour","sku":"compute.m5","labels":{{"region":"eu","a":"1"}}}}"#
            ),
            format!(
                r#"{{"event_id":"b","ts":{now},"tenant":"acme","metric":"vcpu","value":1,"unit":"hour","sku":"compute.m5","cost":"0.5","currency":"USD","labels":{{"a":"1","region":"eu"}}}}"#
            ),
        ] {
            p.prepare(&mut batch, e.as_bytes(), now).unwrap();
        }
        assert_eq!(batch.events.len(), 2);
        assert_eq!(batch.series.len(), 2, "usage and cost series, shared by both shapes");
        let cost: Vec<Money> = batch.events.iter().filter_map(|e| e.cost.map(|c| c.1)).collect();
        assert_eq!(cost, vec!["0.192".parse().unwrap(), "0.5".parse().unwrap()]);
    }
}
