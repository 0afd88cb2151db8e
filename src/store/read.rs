//! The read contract between storage and the query engines (PromQL, SQL).
//!
//! Timestamps are UTC nanoseconds, ranges are closed `[start, end]`. Series arrive one
//! at a time, sorted by labels, each with its samples in the range sorted by time and
//! with duplicates already resolved by the series' [`DupPolicy`](crate::model::DupPolicy).

use crate::index::Matcher;
use crate::model::{Labels, SeriesKind, ValueKind};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("corrupt data in {file}: {reason}")]
    Corrupt { file: String, reason: String },
    #[error("I/O error reading {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// Tiered data could not be fetched (object store down or timing out).
    #[error("tiered data unavailable ({file}): {reason}")]
    Unavailable { file: String, reason: String },
    #[error("{0}")]
    Other(String),
}

/// Values of one series, columnar.
#[derive(Debug, Clone, PartialEq)]
pub enum SampleValues {
    Float(Vec<f64>),
    /// Exact nano-units ([`Money`](crate::model::Money)).
    Money(Vec<i64>),
}

impl SampleValues {
    pub fn len(&self) -> usize {
        match self {
            SampleValues::Float(v) => v.len(),
            SampleValues::Money(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The f64 rendering of value `i` (money → units as f64).
    pub fn f64_at(&self, i: usize) -> f64 {
        match self {
            SampleValues::Float(v) => v[i],
            SampleValues::Money(v) => v[i] as f64 / crate::model::NANOS_PER_UNIT as f64,
        }
    }

    /// All values as f64 (PromQL's view).
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            SampleValues::Float(v) => v.clone(),
            SampleValues::Money(v) => (0..v.len()).map(|i| self.f64_at(i)).collect(),
        }
    }
}

/// One series and its samples within the requested range.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    pub labels: Labels,
    pub kind: SeriesKind,
    pub ts: Vec<i64>,
    pub values: SampleValues,
}

/// What to read: series of `tenant` (all tenants when `None`) matching every matcher,
/// with samples in `[start, end]` (nanoseconds).
#[derive(Debug, Clone, Copy)]
pub struct SelectRequest<'a> {
    pub tenant: Option<&'a str>,
    pub matchers: &'a [Matcher],
    pub start: i64,
    pub end: i64,
}

/// One series' rollup windows (see [`rollup`](super::rollup)), in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupSeries {
    pub labels: Labels,
    pub kind: SeriesKind,
    pub windows: Vec<super::rollup::Window>,
}

pub type SeriesStream<'a> = Box<dyn Iterator<Item = Result<SeriesSamples, ReadError>> + 'a>;

/// One series lent to a [`SeriesSource::scan`] visitor. The slices live in buffers the
/// source reuses for the next series, so a scan allocates nothing per series.
#[derive(Debug, Clone, Copy)]
pub struct SeriesView<'s> {
    pub labels: &'s Labels,
    pub kind: SeriesKind,
    /// Sample times (ns), strictly increasing, within the requested range.
    pub ts: &'s [i64],
    /// Raw values, one per timestamp: the f64 bit pattern for
    /// [`ValueKind::Float`](crate::model::ValueKind::Float), the i64 nano-units for
    /// [`ValueKind::Money`](crate::model::ValueKind::Money).
    pub raw: &'s [u64],
}

impl SeriesView<'_> {
    /// Appends the values as f64 (PromQL's view; money → units) to `out`.
    pub fn extend_f64(&self, out: &mut Vec<f64>) {
        match self.kind.value {
            ValueKind::Float => out.extend(self.raw.iter().map(|&v| f64::from_bits(v))),
            ValueKind::Money => out.extend(
                self.raw
                    .iter()
                    .map(|&v| v as i64 as f64 / crate::model::NANOS_PER_UNIT as f64),
            ),
        }
    }
}

/// One series of a split scan ([`SeriesSource::scan_list`]): its labels and kind, and
/// a handle only the source that listed it interprets.
#[derive(Debug, Clone)]
pub struct ScanItem {
    pub labels: Labels,
    pub kind: SeriesKind,
    /// Source-private: the store's series id, the in-memory source's series index.
    pub(crate) key: u64,
}

/// Read buffers one reader reuses across the series it reads with
/// [`SeriesSource::read_item`] (one per thread: series of a split scan may be read on
/// several threads at once, each with its own buffer).
#[derive(Debug, Default)]
pub struct ScanBuf {
    pub(crate) ts: Vec<i64>,
    pub(crate) vals: Vec<u64>,
    /// End offset of each source's run in `ts`/`vals`, in read (precedence) order.
    pub(crate) bounds: Vec<usize>,
}

/// What a [`SeriesSource::scan`] visitor tells the source: go on, or stop early.
pub type Visit = std::ops::ControlFlow<()>;

/// Anything queries can read series from. The store's snapshot implements it.
pub trait SeriesSource: Send + Sync {
    /// Streams matching series that have at least one sample in range.
    fn select<'a>(&'a self, req: &SelectRequest<'a>) -> Result<SeriesStream<'a>, ReadError>;

    /// Rollup windows at resolution `res_ns` whose start lies in `[req.start, req.end]`,
    /// for every matching series with data there: stored rollups where valid, computed
    /// from raw samples elsewhere, so results are seamless. `None`: this source does not
    /// offer rollups at that resolution (callers read raw samples instead).
    fn select_rollups(&self, req: &SelectRequest<'_>, res_ns: i64) -> Result<Option<Vec<RollupSeries>>, ReadError> {
        let _ = (req, res_ns);
        Ok(None)
    }

    /// Visits the same series as [`select`](Self::select), in the same order, lending
    /// each one instead of handing over owned vectors; stops early when the visitor
    /// returns [`Visit::Break`]. Sources override it to reuse their read buffers; this
    /// default goes through `select`.
    fn scan(&self, req: &SelectRequest<'_>, visit: &mut dyn FnMut(SeriesView<'_>) -> Visit) -> Result<(), ReadError> {
        let mut raw = Vec::new();
        for s in self.select(req)? {
            let s = s?;
            raw.clear();
            match &s.values {
                SampleValues::Float(v) => raw.extend(v.iter().map(|x| x.to_bits())),
                SampleValues::Money(v) => raw.extend(v.iter().map(|&x| x as u64)),
            }
            let view = SeriesView {
                labels: &s.labels,
                kind: s.kind,
                ts: &s.ts,
                raw: &raw,
            };
            if visit(view).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// The series a [`scan`](Self::scan) with `req` would consider, in scan order, for
    /// callers that read them with [`read_item`](Self::read_item), possibly from several
    /// threads (why: a query over thousands of series can use every core). Series
    /// without samples in range may be listed; `read_item` then yields `None` for them.
    /// `None`: this source reads only sequentially (use `scan`).
    fn scan_list(&self, req: &SelectRequest<'_>) -> Result<Option<Vec<ScanItem>>, ReadError> {
        let _ = req;
        Ok(None)
    }

    /// Reads one series listed by [`scan_list`](Self::scan_list) for the same `req`: its
    /// samples in range, lent from `buf`, or `None` when it has none there. Gives the
    /// same samples [`scan`](Self::scan) would.
    fn read_item<'b>(
        &self,
        req: &SelectRequest<'_>,
        item: &'b ScanItem,
        buf: &'b mut ScanBuf,
    ) -> Result<Option<SeriesView<'b>>, ReadError> {
        let _ = (req, item, buf);
        Err(ReadError::Other("this source does not split scans".into()))
    }

    /// Labels of the series [`select`](Self::select) would yield, in the same order,
    /// without handing over their samples. Sources override it to answer from the
    /// index and block metadata, decoding only blocks that straddle the range edges.
    fn series_labels(&self, req: &SelectRequest<'_>) -> Result<Vec<Labels>, ReadError> {
        let mut out = Vec::new();
        self.scan(req, &mut |s| {
            out.push(s.labels.clone());
            Visit::Continue(())
        })?;
        Ok(out)
    }

    /// Sorted label names of series matching `matchers` with data in `[start, end]`.
    fn label_names(
        &self,
        tenant: Option<&str>,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, ReadError>;

    /// Sorted distinct values of label `name` over matching series with data in `[start, end]`.
    fn label_values(
        &self,
        tenant: Option<&str>,
        name: &str,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, ReadError>;
}
