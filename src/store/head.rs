//! The head: samples since the last flush, in memory, queryable as soon as appended.
//!
//! Per series, in-order samples go to a small open buffer (exactly [`OPEN_SAMPLES`]
//! slots) that is sealed into an encoded chunk when full; every [`MERGE_CHUNKS`] small
//! chunks are re-encoded as one, so per-chunk overhead stays low. This keeps memory per
//! active series near the compressed size of its samples plus one small buffer. Samples
//! older than the newest one go to a sorted out-of-order buffer. Reads
//! merge the two, so late data is visible immediately. Duplicate timestamps are
//! resolved with [`combine`]: out-of-order copies are always the newer ones.

use crate::encoding::{decode_block, encode_block, BlockEncodeOptions, DecodeError};
use crate::index::SeriesId;
use crate::model::sample::combine;
use crate::model::SeriesKind;

/// Slots in a series' open (uncompressed) buffer.
pub const OPEN_SAMPLES: usize = 32;
/// Small sealed chunks merged into one.
pub const MERGE_CHUNKS: usize = 4;

#[derive(Debug)]
struct HeadChunk {
    min_t: i64,
    max_t: i64,
    count: u32,
    bytes: Box<[u8]>,
}

/// The newest in-order samples of a series, not yet encoded. `len` comes first so it
/// shares a cache line with [`HeadSeries`]'s other hot fields.
#[derive(Debug)]
#[repr(C)]
struct OpenBuffer {
    /// Invariant: `len <= OPEN_SAMPLES`; `ts[..len]` strictly increasing.
    len: usize,
    ts: [i64; OPEN_SAMPLES],
    vals: [u64; OPEN_SAMPLES],
}

impl Default for OpenBuffer {
    fn default() -> Self {
        OpenBuffer {
            len: 0,
            ts: [0; OPEN_SAMPLES],
            vals: [0; OPEN_SAMPLES],
        }
    }
}

impl OpenBuffer {
    fn ts(&self) -> &[i64] {
        &self.ts[..self.len]
    }

    fn vals(&self) -> &[u64] {
        &self.vals[..self.len]
    }
}

/// At high cardinality every series an append touches is a cache miss, so the fields an
/// in-order append reads (`last`, `kind`, `open.len`) come first, in one cache line
/// (`repr(C)` keeps that order); the sample it writes is a store, which does not stall.
/// Before, the newest timestamp was read from the open buffer's tail (or the last chunk):
/// a second miss per append.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct HeadSeries {
    /// The newest in-order timestamp (of the open buffer or, when that is empty, of the
    /// last chunk); `None` before the first in-order sample.
    last: Option<i64>,
    kind: SeriesKind,
    /// Inline, not two vectors: an append to a series touches one allocation.
    open: OpenBuffer,
    chunks: Vec<HeadChunk>,
    /// Sorted by timestamp, unique.
    ooo: Vec<(i64, u64)>,
}

impl HeadSeries {
    fn new(kind: SeriesKind) -> Self {
        HeadSeries {
            last: None,
            kind,
            open: OpenBuffer::default(),
            chunks: Vec::new(),
            ooo: Vec::new(),
        }
    }

    /// Returns true when a conflicting value replaced an existing one.
    fn push(&mut self, ts: i64, v: u64) -> bool {
        match self.last {
            Some(last) if ts < last => self.push_ooo(ts, v),
            Some(last) if ts == last && self.open.len > 0 => {
                let slot = &mut self.open.vals[self.open.len - 1];
                let replaced = *slot != v && self.kind.dup == crate::model::DupPolicy::Replace;
                *slot = combine(self.kind, *slot, v);
                replaced
            }
            Some(last) if ts == last => self.push_ooo(ts, v),
            _ => {
                self.open.ts[self.open.len] = ts;
                self.open.vals[self.open.len] = v;
                self.open.len += 1;
                self.last = Some(ts);
                // Sealed as soon as it is full, so `len < OPEN_SAMPLES` before every push.
                if self.open.len >= OPEN_SAMPLES {
                    self.seal();
                }
                false
            }
        }
    }

    fn push_ooo(&mut self, ts: i64, v: u64) -> bool {
        match self.ooo.binary_search_by_key(&ts, |p| p.0) {
            Ok(i) => {
                let old = self.ooo[i].1;
                self.ooo[i].1 = combine(self.kind, old, v);
                old != v && self.kind.dup == crate::model::DupPolicy::Replace
            }
            Err(i) => {
                self.ooo.insert(i, (ts, v));
                false
            }
        }
    }

    fn seal(&mut self) {
        if self.open.len == 0 {
            return;
        }
        self.chunks
            .push(encode_chunk(self.open.ts(), self.open.vals(), self.kind));
        self.open.len = 0;
        let n = self.chunks.len();
        if n >= MERGE_CHUNKS
            && self.chunks[n - MERGE_CHUNKS..]
                .iter()
                .all(|c| c.count as usize <= OPEN_SAMPLES)
        {
            let (mut ts, mut vals) = (Vec::with_capacity(OPEN_SAMPLES * MERGE_CHUNKS), Vec::new());
            let ok = self.chunks[n - MERGE_CHUNKS..]
                .iter()
                .all(|c| decode_block(&c.bytes, self.kind.value, &mut ts, &mut vals).is_ok());
            // Chunks were encoded by us moments ago; if one ever failed to decode, keep them as they are.
            if ok {
                self.chunks.truncate(n - MERGE_CHUNKS);
                self.chunks.push(encode_chunk(&ts, &vals, self.kind));
            }
        }
    }

    /// Appends the merged samples in `[start, end]` to the outputs (sorted, unique).
    fn read(&self, start: i64, end: i64, ts_out: &mut Vec<i64>, vals_out: &mut Vec<u64>) -> Result<(), DecodeError> {
        let base = ts_out.len();
        let mut tmp_ts = Vec::new();
        let mut tmp_vals = Vec::new();
        for c in &self.chunks {
            if c.max_t < start || c.min_t > end {
                continue;
            }
            tmp_ts.clear();
            tmp_vals.clear();
            decode_block(&c.bytes, self.kind.value, &mut tmp_ts, &mut tmp_vals)?;
            push_range(&tmp_ts, &tmp_vals, start, end, ts_out, vals_out);
        }
        push_range(self.open.ts(), self.open.vals(), start, end, ts_out, vals_out);
        let lo = self.ooo.partition_point(|p| p.0 < start);
        let hi = self.ooo.partition_point(|p| p.0 <= end);
        if lo < hi {
            merge_ooo(self.kind, &self.ooo[lo..hi], base, ts_out, vals_out);
        }
        Ok(())
    }

    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self
                .chunks
                .iter()
                .map(|c| c.bytes.len() + std::mem::size_of::<HeadChunk>())
                .sum::<usize>()
            + self.ooo.capacity() * 16
    }
}

fn encode_chunk(ts: &[i64], vals: &[u64], kind: SeriesKind) -> HeadChunk {
    let mut bytes = Vec::with_capacity(ts.len() * 2);
    encode_block(ts, vals, kind.value, &BlockEncodeOptions::default(), &mut bytes);
    HeadChunk {
        min_t: ts[0],
        max_t: ts[ts.len() - 1],
        count: ts.len() as u32,
        bytes: bytes.into_boxed_slice(),
    }
}

/// Appends the part of a sorted run inside `[start, end]`.
pub(crate) fn push_range(
    ts: &[i64],
    vals: &[u64],
    start: i64,
    end: i64,
    ts_out: &mut Vec<i64>,
    vals_out: &mut Vec<u64>,
) {
    let lo = ts.partition_point(|&t| t < start);
    let hi = ts.partition_point(|&t| t <= end);
    ts_out.extend_from_slice(&ts[lo..hi]);
    vals_out.extend_from_slice(&vals[lo..hi]);
}

/// Merges sorted unique out-of-order samples (the newer copies) into the sorted unique
/// run at `ts_out[base..]`.
fn merge_ooo(kind: SeriesKind, ooo: &[(i64, u64)], base: usize, ts_out: &mut Vec<i64>, vals_out: &mut Vec<u64>) {
    let run_ts = ts_out.split_off(base);
    let run_vals = vals_out.split_off(base);
    let (mut i, mut j) = (0, 0);
    while i < run_ts.len() || j < ooo.len() {
        let take_run = j == ooo.len() || (i < run_ts.len() && run_ts[i] < ooo[j].0);
        if take_run {
            ts_out.push(run_ts[i]);
            vals_out.push(run_vals[i]);
            i += 1;
        } else if i < run_ts.len() && run_ts[i] == ooo[j].0 {
            ts_out.push(run_ts[i]);
            vals_out.push(combine(kind, run_vals[i], ooo[j].1));
            i += 1;
            j += 1;
        } else {
            ts_out.push(ooo[j].0);
            vals_out.push(ooo[j].1);
            j += 1;
        }
    }
}

/// All series' recent samples. Owned by one WAL generation; frozen (read-only) once the
/// generation is rotated for a flush.
#[derive(Debug, Default)]
pub(crate) struct Head {
    series: Vec<Option<Box<HeadSeries>>>,
    samples: usize,
    active: usize,
    min_t: i64,
    max_t: i64,
}

impl Head {
    pub fn new() -> Self {
        Head {
            min_t: i64::MAX,
            max_t: i64::MIN,
            ..Default::default()
        }
    }

    /// Hints the CPU to fetch the slot holding series `id`'s pointer (which at high
    /// cardinality is itself a miss): the append path calls this further ahead than
    /// [`Head::prefetch`], which loads that pointer.
    #[inline]
    pub fn prefetch_slot(&self, id: SeriesId) {
        if let Some(slot) = self.series.get(id.0 as usize) {
            crate::cpu::prefetch_read(slot as *const Option<Box<HeadSeries>> as *const u8);
        }
    }

    /// Hints the CPU to fetch series `id`'s hot fields: the append path calls this a few
    /// series ahead, so their cache misses overlap instead of stalling one by one.
    #[inline]
    pub fn prefetch(&self, id: SeriesId) {
        if let Some(Some(s)) = self.series.get(id.0 as usize) {
            crate::cpu::prefetch_read(&**s as *const HeadSeries as *const u8);
        }
    }

    /// Appends samples of one series; returns how many replaced a conflicting value.
    pub fn append(&mut self, id: SeriesId, kind: SeriesKind, ts: &[i64], vals: &[u64]) -> u64 {
        let idx = id.0 as usize;
        if self.series.len() <= idx {
            self.series.resize_with(idx + 1, || None);
        }
        let s = self.series[idx].get_or_insert_with(|| {
            self.active += 1;
            Box::new(HeadSeries::new(kind))
        });
        let mut replaced = 0;
        for (&t, &v) in ts.iter().zip(vals) {
            replaced += s.push(t, v) as u64;
            self.min_t = self.min_t.min(t);
            self.max_t = self.max_t.max(t);
        }
        self.samples += ts.len();
        replaced
    }

    pub fn contains(&self, id: SeriesId) -> bool {
        matches!(self.series.get(id.0 as usize), Some(Some(_)))
    }

    pub fn overlaps(&self, start: i64, end: i64) -> bool {
        self.samples > 0 && self.min_t <= end && self.max_t >= start
    }

    pub fn read(
        &self,
        id: SeriesId,
        start: i64,
        end: i64,
        ts_out: &mut Vec<i64>,
        vals_out: &mut Vec<u64>,
    ) -> Result<(), DecodeError> {
        match self.series.get(id.0 as usize) {
            Some(Some(s)) => s.read(start, end, ts_out, vals_out),
            _ => Ok(()),
        }
    }

    /// Ids present in this head, ascending.
    pub fn ids(&self) -> impl Iterator<Item = SeriesId> + '_ {
        self.series
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| SeriesId(i as u32))
    }

    pub fn samples(&self) -> usize {
        self.samples
    }

    pub fn active_series(&self) -> usize {
        self.active
    }

    /// Approximate resident bytes (sample storage and per-series structures).
    pub fn bytes(&self) -> usize {
        self.series.capacity() * std::mem::size_of::<Option<Box<HeadSeries>>>()
            + self.series.iter().flatten().map(|s| s.bytes()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DupPolicy, ValueKind};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn read_all(h: &Head, id: SeriesId) -> Vec<(i64, u64)> {
        let (mut t, mut v) = (Vec::new(), Vec::new());
        h.read(id, i64::MIN, i64::MAX, &mut t, &mut v).unwrap();
        t.into_iter().zip(v).collect()
    }

    proptest! {
        /// The head answers like a map that applies the duplicate rule in append order.
        #[test]
        fn head_matches_model(
            appends in proptest::collection::vec((0i64..400, 0u64..5), 0..600),
            sum in any::<bool>(),
        ) {
            let kind = SeriesKind { value: ValueKind::Money, dup: if sum { DupPolicy::Sum } else { DupPolicy::Replace } };
            let mut h = Head::new();
            let mut model: BTreeMap<i64, u64> = BTreeMap::new();
            for &(t, v) in &appends {
                h.append(SeriesId(3), kind, &[t], &[v]);
                let e = model.entry(t).or_insert(if sum { 0 } else { v });
                *e = if sum { *e + v } else { v };
            }
            prop_assert_eq!(read_all(&h, SeriesId(3)), model.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn replacement_is_counted_only_when_values_differ() {
        let mut h = Head::new();
        let id = SeriesId(0);
        assert_eq!(h.append(id, SeriesKind::GAUGE, &[10, 10], &[1, 1]), 0);
        assert_eq!(h.append(id, SeriesKind::GAUGE, &[10], &[2]), 1);
        assert_eq!(read_all(&h, id), [(10, 2)]);
    }
}
