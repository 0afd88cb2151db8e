//! An in-memory [`SeriesSource`] for tests and the conformance runner: series are
//! filtered by matchers and time range exactly as the read contract specifies
//! (closed ns ranges, sorted by labels, only series with samples in range). Tenants
//! are ignored.

use crate::index::Matcher;
use crate::model::{Labels, SeriesKind};
use crate::store::{
    ReadError, SampleValues, ScanBuf, ScanItem, SelectRequest, SeriesSamples, SeriesSource, SeriesStream, SeriesView,
};

#[derive(Debug, Default, Clone)]
pub struct MemSource {
    /// Sorted by labels; timestamps in ns, sorted.
    series: Vec<(Labels, Vec<i64>, Vec<f64>)>,
}

impl MemSource {
    /// Builds from series with (ms, value) samples (the test-file unit).
    pub fn from_ms(series: Vec<(Labels, Vec<(i64, f64)>)>) -> MemSource {
        let mut out: Vec<(Labels, Vec<i64>, Vec<f64>)> = series
            .into_iter()
            .map(|(l, mut s)| {
                s.sort_by_key(|p| p.0);
                s.dedup_by_key(|p| p.0);
                let ts = s.iter().map(|p| p.0.saturating_mul(1_000_000)).collect();
                let vs = s.iter().map(|p| p.1).collect();
                (l, ts, vs)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        MemSource { series: out }
    }

    fn matching<'a>(&'a self, matchers: &'a [Matcher]) -> impl Iterator<Item = &'a (Labels, Vec<i64>, Vec<f64>)> + 'a {
        self.series.iter().filter(move |(l, _, _)| Self::matches(l, matchers))
    }

    fn matches(l: &Labels, matchers: &[Matcher]) -> bool {
        matchers.iter().all(|m| m.matches(l.get(&m.name).unwrap_or("")))
    }
}

impl SeriesSource for MemSource {
    fn select<'a>(&'a self, req: &SelectRequest<'a>) -> Result<SeriesStream<'a>, ReadError> {
        let (start, end) = (req.start, req.end);
        let it = self.matching(req.matchers).filter_map(move |(l, ts, vs)| {
            let lo = ts.partition_point(|&t| t < start);
            let hi = ts.partition_point(|&t| t <= end);
            if lo >= hi {
                return None;
            }
            Some(Ok(SeriesSamples {
                labels: l.clone(),
                kind: SeriesKind::GAUGE,
                ts: ts[lo..hi].to_vec(),
                values: SampleValues::Float(vs[lo..hi].to_vec()),
            }))
        });
        Ok(Box::new(it))
    }

    /// Split scans are offered so that tests and the conformance runner exercise the
    /// engine's parallel series evaluation too.
    fn scan_list(&self, req: &SelectRequest<'_>) -> Result<Option<Vec<ScanItem>>, ReadError> {
        Ok(Some(
            self.series
                .iter()
                .enumerate()
                .filter(|(_, (l, _, _))| Self::matches(l, req.matchers))
                .map(|(i, (l, _, _))| ScanItem {
                    labels: l.clone(),
                    kind: SeriesKind::GAUGE,
                    key: i as u64,
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
        let Some((_, ts, vs)) = usize::try_from(item.key).ok().and_then(|i| self.series.get(i)) else {
            return Err(ReadError::Other(format!("no series {} in this source", item.key)));
        };
        let lo = ts.partition_point(|&t| t < req.start);
        let hi = ts.partition_point(|&t| t <= req.end);
        if lo >= hi {
            return Ok(None);
        }
        buf.ts.clear();
        buf.ts.extend_from_slice(&ts[lo..hi]);
        buf.vals.clear();
        buf.vals.extend(vs[lo..hi].iter().map(|v| v.to_bits()));
        Ok(Some(SeriesView {
            labels: &item.labels,
            kind: item.kind,
            ts: &buf.ts,
            raw: &buf.vals,
        }))
    }

    fn label_names(
        &self,
        _: Option<&str>,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, ReadError> {
        let mut names: Vec<String> = self
            .matching(matchers)
            .filter(|(_, ts, _)| ts.iter().any(|&t| t >= start && t <= end))
            .flat_map(|(l, _, _)| l.iter().map(|x| x.name.to_string()).collect::<Vec<_>>())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn label_values(
        &self,
        _: Option<&str>,
        name: &str,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, ReadError> {
        let mut vals: Vec<String> = self
            .matching(matchers)
            .filter(|(_, ts, _)| ts.iter().any(|&t| t >= start && t <= end))
            .filter_map(|(l, _, _)| l.get(name).map(str::to_string))
            .collect();
        vals.sort();
        vals.dedup();
        Ok(vals)
    }
}
