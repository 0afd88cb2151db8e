//! Reading: a [`Snapshot`] pins a [`View`] and implements [`SeriesSource`].

use std::sync::Arc;

use super::head::Head;
use super::merge::{merge_runs, Run};
use super::read::{ReadError, SampleValues, SelectRequest, SeriesSamples, SeriesSource, SeriesStream};
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

    /// Samples of one series in `[start, end]` with duplicates resolved.
    pub(super) fn read_one(&self, id: SeriesId, kind: SeriesKind, start: i64, end: i64) -> Result<Run, ReadError> {
        let mut runs = Vec::new();
        for ls in &self.view.segments {
            if !ls.overlaps(start, end) {
                continue;
            }
            if let Some(&local) = ls.local_of.get(&id) {
                let mut r = Run::default();
                ls.seg.read_series(local as usize, start, end, &mut r.ts, &mut r.vals)?;
                runs.push(r);
            }
        }
        for h in self.view.frozen.iter().chain(std::iter::once(&self.view.head)) {
            runs.push(read_head(h, id, start, end)?);
        }
        Ok(merge_runs(kind, runs))
    }

    /// Number of live segments (for tests and stats).
    pub fn segment_count(&self) -> usize {
        self.view.segments.len()
    }
}

fn read_head(h: &parking_lot::RwLock<Head>, id: SeriesId, start: i64, end: i64) -> Result<Run, ReadError> {
    let mut r = Run::default();
    let head = h.read();
    if head.contains(id) && head.overlaps(start, end) {
        head.read(id, start, end, &mut r.ts, &mut r.vals)
            .map_err(|e| ReadError::Other(format!("head chunk decode failed: {e}")))?;
    }
    Ok(r)
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
        Ok(Box::new(ids.into_iter().filter_map(
            move |(id, labels, kind)| match self.read_one(id, kind, start, end) {
                Ok(run) if run.ts.is_empty() => None,
                Ok(run) => Some(Ok(SeriesSamples {
                    labels,
                    kind,
                    ts: run.ts,
                    values: to_values(kind.value, run.vals),
                })),
                Err(e) => Some(Err(e)),
            },
        )))
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
