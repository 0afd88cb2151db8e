//! Reading: a [`Snapshot`] pins a [`View`] and implements [`SeriesSource`].

use std::sync::Arc;

use super::merge::{merge_runs, Run};
use super::read::{
    ReadError, SampleValues, ScanBuf, ScanItem, SelectRequest, SeriesSamples, SeriesSource, SeriesStream, SeriesView,
    Visit,
};
use super::view::View;
use super::Inner;
use crate::index::{Matcher, SeriesId};
use crate::model::{Labels, SeriesKind, ValueKind};
use crate::segment::SegmentError;

pub struct Snapshot {
    pub(super) inner: Arc<Inner>,
    pub(super) view: Arc<View>,
}

impl From<SegmentError> for ReadError {
    fn from(e: SegmentError) -> Self {
        match e {
            SegmentError::Corrupt { file, reason } => ReadError::Corrupt { file, reason },
            SegmentError::Io { file, source } => ReadError::Io { file, source },
            SegmentError::Unavailable { file, reason } => ReadError::Unavailable { file, reason },
        }
    }
}

impl Snapshot {
    pub(crate) fn new(inner: Arc<Inner>) -> Snapshot {
        let view = inner.view.load_full();
        Snapshot { inner, view }
    }

    pub(super) fn check_quarantine(&self, start: i64, end: i64) -> Result<(), ReadError> {
        match self
            .view
            .quarantined
            .iter()
            .find(|q| q.partition_start <= end && q.partition_end > start)
        {
            Some(q) => Err(ReadError::Corrupt {
                file: q.file.clone(),
                reason: q.reason.clone(),
            }),
            None => Ok(()),
        }
    }

    pub(super) fn ids(
        &self,
        tenant: Option<&str>,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Vec<(SeriesId, Labels, SeriesKind)> {
        let index = self.inner.index.read();
        let set = index.select(tenant, matchers);
        index
            .sorted_by_labels(&set)
            .into_iter()
            .filter_map(|id| {
                let e = index.get(id)?;
                e.overlaps(start, end).then(|| (id, e.labels.clone(), e.kind))
            })
            .collect()
    }

    /// Samples of one series in `[start, end]` with duplicates resolved, as owned vectors.
    pub(super) fn read_one(&self, id: SeriesId, kind: SeriesKind, start: i64, end: i64) -> Result<Run, ReadError> {
        let mut buf = ScanBuf::default();
        self.read_into(id, kind, start, end, &mut buf)?;
        Ok(Run {
            ts: buf.ts,
            vals: buf.vals,
        })
    }

    /// Samples of one series in `[start, end]` with duplicates resolved, into `buf`
    /// (cleared first). Each source yields a sorted, unique run straight into the
    /// buffer; when the runs follow each other in time (different partitions, or one
    /// source only: the common case) their concatenation is the answer and nothing is
    /// copied again. Otherwise they are merged by precedence (read order).
    fn read_into(
        &self,
        id: SeriesId,
        kind: SeriesKind,
        start: i64,
        end: i64,
        buf: &mut ScanBuf,
    ) -> Result<(), ReadError> {
        buf.ts.clear();
        buf.vals.clear();
        buf.bounds.clear();
        for ls in &self.view.segments {
            if !ls.overlaps(start, end) {
                continue;
            }
            if let Some(local) = ls.local_of.get(id) {
                ls.seg
                    .read_series(local as usize, start, end, &mut buf.ts, &mut buf.vals)?;
                buf.bounds.push(buf.ts.len());
            }
        }
        for h in self.view.frozen.iter().chain(std::iter::once(&self.view.head)) {
            let head = h.read();
            if head.contains(id) && head.overlaps(start, end) {
                head.read(id, start, end, &mut buf.ts, &mut buf.vals)
                    .map_err(|e| ReadError::Other(format!("head chunk decode failed: {e}")))?;
                buf.bounds.push(buf.ts.len());
            }
        }
        if !buf.runs_in_order() {
            let mut runs = Vec::with_capacity(buf.bounds.len());
            let mut from = 0;
            for &to in &buf.bounds {
                runs.push(Run {
                    ts: buf.ts[from..to].to_vec(),
                    vals: buf.vals[from..to].to_vec(),
                });
                from = to;
            }
            let merged = merge_runs(kind, runs);
            buf.ts = merged.ts;
            buf.vals = merged.vals;
        }
        Ok(())
    }

    /// Whether series `id` has a sample in `[start, end]`. A segment block lying
    /// wholly inside the range answers yes from its metadata (blocks are never empty);
    /// only when no such block exists are the samples read.
    fn has_samples(
        &self,
        id: SeriesId,
        kind: SeriesKind,
        start: i64,
        end: i64,
        buf: &mut ScanBuf,
    ) -> Result<bool, ReadError> {
        for ls in &self.view.segments {
            if !ls.overlaps(start, end) {
                continue;
            }
            let Some(local) = ls.local_of.get(id) else {
                continue;
            };
            if let Some(meta) = ls.seg.series().get(local as usize) {
                if meta
                    .blocks
                    .iter()
                    .any(|b| b.count > 0 && b.min_t >= start && b.max_t <= end)
                {
                    return Ok(true);
                }
            }
        }
        self.read_into(id, kind, start, end, buf)?;
        Ok(!buf.ts.is_empty())
    }

    /// Number of live segments (for tests and stats).
    pub fn segment_count(&self) -> usize {
        self.view.segments.len()
    }
}

impl ScanBuf {
    /// Whether every run starts after the previous non-empty run ended, i.e. the
    /// concatenation is already sorted and unique.
    fn runs_in_order(&self) -> bool {
        let mut from = 0;
        let mut last: Option<i64> = None;
        for &to in &self.bounds {
            if to > from {
                if last.is_some_and(|l| self.ts[from] <= l) {
                    return false;
                }
                last = Some(self.ts[to - 1]);
                from = to;
            }
        }
        true
    }
}

fn to_values(kind: ValueKind, vals: Vec<u64>) -> SampleValues {
    match kind {
        ValueKind::Float => SampleValues::Float(vals.into_iter().map(f64::from_bits).collect()),
        ValueKind::Money => SampleValues::Money(vals.into_iter().map(|v| v as i64).collect()),
    }
}

impl SeriesSource for Snapshot {
    fn select_rollups(
        &self,
        req: &SelectRequest<'_>,
        res_ns: i64,
    ) -> Result<Option<Vec<super::read::RollupSeries>>, ReadError> {
        self.rollups(req, res_ns)
    }

    fn select<'a>(&'a self, req: &SelectRequest<'a>) -> Result<SeriesStream<'a>, ReadError> {
        let (start, end) = (req.start, req.end);
        if start > end {
            return Ok(Box::new(std::iter::empty()));
        }
        self.check_quarantine(start, end)?;
        let ids = self.ids(req.tenant, req.matchers, start, end);
        let mut buf = ScanBuf::default();
        Ok(Box::new(ids.into_iter().filter_map(move |(id, labels, kind)| {
            match self.read_into(id, kind, start, end, &mut buf) {
                Ok(()) if buf.ts.is_empty() => None,
                Ok(()) => Some(Ok(SeriesSamples {
                    labels,
                    kind,
                    ts: std::mem::take(&mut buf.ts),
                    values: to_values(kind.value, std::mem::take(&mut buf.vals)),
                })),
                Err(e) => Some(Err(e)),
            }
        })))
    }

    fn scan(&self, req: &SelectRequest<'_>, visit: &mut dyn FnMut(SeriesView<'_>) -> Visit) -> Result<(), ReadError> {
        let (start, end) = (req.start, req.end);
        if start > end {
            return Ok(());
        }
        self.check_quarantine(start, end)?;
        let mut buf = ScanBuf::default();
        for (id, labels, kind) in self.ids(req.tenant, req.matchers, start, end) {
            self.read_into(id, kind, start, end, &mut buf)?;
            if buf.ts.is_empty() {
                continue;
            }
            let view = SeriesView {
                labels: &labels,
                kind,
                ts: &buf.ts,
                raw: &buf.vals,
            };
            if visit(view).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn scan_list(&self, req: &SelectRequest<'_>) -> Result<Option<Vec<ScanItem>>, ReadError> {
        let (start, end) = (req.start, req.end);
        if start > end {
            return Ok(Some(Vec::new()));
        }
        self.check_quarantine(start, end)?;
        Ok(Some(
            self.ids(req.tenant, req.matchers, start, end)
                .into_iter()
                .map(|(id, labels, kind)| ScanItem {
                    labels,
                    kind,
                    key: u64::from(id.0),
                })
                .collect(),
        ))
    }

    fn read_item<'b>(
        &self,
        req: &SelectRequest<'_>,
        item: &'b ScanItem,
        buf: &'b mut ScanBuf,
    ) -> Result<Option<SeriesView<'b>>, ReadError> {
        let id = u32::try_from(item.key)
            .map(SeriesId)
            .map_err(|_| ReadError::Other(format!("scan item {} is not a series id", item.key)))?;
        self.read_into(id, item.kind, req.start, req.end, buf)?;
        if buf.ts.is_empty() {
            return Ok(None);
        }
        Ok(Some(SeriesView {
            labels: &item.labels,
            kind: item.kind,
            ts: &buf.ts,
            raw: &buf.vals,
        }))
    }

    fn series_labels(&self, req: &SelectRequest<'_>) -> Result<Vec<Labels>, ReadError> {
        let (start, end) = (req.start, req.end);
        if start > end {
            return Ok(Vec::new());
        }
        self.check_quarantine(start, end)?;
        let mut buf = ScanBuf::default();
        let mut out = Vec::new();
        for (id, labels, kind) in self.ids(req.tenant, req.matchers, start, end) {
            if self.has_samples(id, kind, start, end, &mut buf)? {
                out.push(labels);
            }
        }
        Ok(out)
    }

    fn label_names(
        &self,
        tenant: Option<&str>,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, ReadError> {
        let index = self.inner.index.read();
        let set = index.select(tenant, matchers);
        Ok(index.label_names(&set, start, end))
    }

    fn label_values(
        &self,
        tenant: Option<&str>,
        name: &str,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, ReadError> {
        let index = self.inner.index.read();
        let set = index.select(tenant, matchers);
        Ok(index.label_values(name, &set, start, end))
    }
}
