//! Reading rollups for queries: per partition, the stored rollup when it is still valid
//! (built from the partition's only raw segment, no newer data in a head), otherwise
//! windows computed on the fly from the raw samples — so a query sees one seamless
//! series of windows across downsampled and recent partitions.

use super::read::{ReadError, RollupSeries, SelectRequest};
use super::rollup::{self, Agg, Window, RESOLUTIONS};
use super::snapshot::Snapshot;
use super::view::LiveSegment;

/// Where one partition's windows come from.
enum Source<'a> {
    Stored(&'a LiveSegment),
    Raw,
}

impl Snapshot {
    /// See [`SeriesSource::select_rollups`](super::read::SeriesSource::select_rollups).
    pub(super) fn rollups(&self, req: &SelectRequest<'_>, res: i64) -> Result<Option<Vec<RollupSeries>>, ReadError> {
        let width = self.inner.partition_width;
        if self.inner.opts.downsample_after.is_none() || !RESOLUTIONS.contains(&res) || width % res != 0 {
            return Ok(None);
        }
        if req.start > req.end {
            return Ok(Some(Vec::new()));
        }
        // Whole windows: from the first window's start to the last window's end.
        let lo = req.start.div_euclid(res) * res;
        let hi = (req.end.div_euclid(res) * res).saturating_add(res - 1);
        self.check_quarantine(lo, hi)?;
        let mut parts: Vec<(i64, i64, Source)> = Vec::new();
        let mut p = self.inner.partition_of(lo);
        while p <= hi {
            let p_end = p.saturating_add(width - 1);
            let (a, b) = (lo.max(p), hi.min(p_end));
            parts.push((a, b, self.source_of(p, p_end, res)));
            match p.checked_add(width) {
                Some(n) => p = n,
                None => break,
            }
        }
        let mut out = Vec::new();
        for (id, labels, kind) in self.ids(req.tenant, req.matchers, lo, hi) {
            let mut windows: Vec<Window> = Vec::new();
            for (a, b, src) in &parts {
                match src {
                    Source::Stored(ls) => {
                        let mut cols = Vec::new();
                        for agg in Agg::ALL {
                            if let Some(&local) = ls.rollup_of.get(&(id, agg)) {
                                let (mut ts, mut vals) = (Vec::new(), Vec::new());
                                ls.seg.read_series(local as usize, *a, *b, &mut ts, &mut vals)?;
                                cols.push((agg, ts, vals));
                            }
                        }
                        let w = rollup::decode(kind, res, &cols).map_err(|e| ReadError::Corrupt {
                            file: ls.entry.file.clone(),
                            reason: e.to_string(),
                        })?;
                        self.inner.metrics.rollup_windows_stored.add(w.len() as u64);
                        windows.extend(w);
                    }
                    Source::Raw => {
                        let run = self.read_one(id, kind, *a, *b)?;
                        let w = rollup::compute(kind, &run.ts, &run.vals, res);
                        self.inner.metrics.rollup_windows_computed.add(w.len() as u64);
                        windows.extend(w);
                    }
                }
            }
            if !windows.is_empty() {
                out.push(RollupSeries { labels, kind, windows });
            }
        }
        Ok(Some(out))
    }

    /// The stored rollup of partition `[p, p_end]` at `res` if it is still valid.
    fn source_of(&self, p: i64, p_end: i64, res: i64) -> Source<'_> {
        let segs = &self.view.segments;
        let mut raw = segs.iter().filter(|s| s.entry.is_raw() && s.entry.partition_start == p);
        let (Some(only), None) = (raw.next(), raw.next()) else {
            return Source::Raw;
        };
        let heads_clear = self
            .view
            .frozen
            .iter()
            .chain(std::iter::once(&self.view.head))
            .all(|h| !h.read().overlaps(p, p_end));
        let stored = segs.iter().find(|s| {
            s.entry.partition_start == p
                && s.entry.resolution_ns == Some(res)
                && s.entry.rollup_of == Some(only.entry.rank)
        });
        match stored {
            Some(s) if heads_clear => Source::Stored(s),
            _ => Source::Raw,
        }
    }
}
