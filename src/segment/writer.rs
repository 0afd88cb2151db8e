//! Writes a segment: blocks stream to disk as series are added; the series table and
//! footer go last, then the file is fsynced. A segment becomes live only when a
//! manifest naming it is installed, so a crash mid-write leaves an unreferenced file.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::footer::{header_bytes, Footer, FLAG_TABLE_ZSTD, HEADER_LEN, SEGMENT_VERSION};
use crate::encoding::varint::{put_bytes, put_ivarint, put_uvarint};
use crate::encoding::{encode_block_tracked, BlockEncodeOptions, ZstdOutcomes};
use crate::model::{Labels, SeriesKind};

/// Samples less than this much older than a series' last sample in a segment go into
/// blocks of their own, cut apart from the samples before them. Why: dashboards mostly
/// query the latest hour or two (with windows reaching back as far again), which would
/// otherwise sit at the end of a block of up to `block_samples` samples (a whole day at
/// one sample a minute) that must be decoded entirely; now they decode about three
/// hours' worth. Costs one more block header and index entry per series and segment.
pub(crate) const TAIL_NS: i64 = 3 * 3_600 * 1_000_000_000;

/// Index of the first sample of the recent tail of `ts` (sorted): the first sample
/// less than [`TAIL_NS`] older than the last one; 0 for an empty slice.
fn tail_start(ts: &[i64]) -> usize {
    match ts.last() {
        Some(&last) => ts.partition_point(|&t| t <= last.saturating_sub(TAIL_NS)),
        None => 0,
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SegmentOptions {
    /// Maximum samples per block: smaller blocks prune finer, larger ones compress better.
    pub block_samples: usize,
    /// zstd level tried on each block (kept only where it pays); `None` disables.
    pub zstd_level: Option<i32>,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions {
            block_samples: 2048,
            zstd_level: Some(3),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub series: u32,
    pub samples: u64,
    pub min_t: i64,
    pub max_t: i64,
    pub bytes: u64,
}

pub struct SegmentWriter {
    path: PathBuf,
    out: BufWriter<File>,
    offset: u64,
    table: Vec<u8>,
    block: Vec<u8>,
    /// Which block sizes zstd has been shrinking in this segment.
    zstd: ZstdOutcomes,
    opts: SegmentOptions,
    partition_start: i64,
    rank: u64,
    series: u32,
    samples: u64,
    min_t: i64,
    max_t: i64,
}

impl SegmentWriter {
    pub fn create(path: &Path, partition_start: i64, rank: u64, opts: SegmentOptions) -> io::Result<SegmentWriter> {
        let file = OpenOptions::new().create(true).truncate(true).write(true).open(path)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&header_bytes())?;
        Ok(SegmentWriter {
            path: path.to_path_buf(),
            out,
            offset: HEADER_LEN as u64,
            table: Vec::new(),
            block: Vec::new(),
            zstd: ZstdOutcomes::default(),
            opts: SegmentOptions {
                block_samples: opts.block_samples.clamp(1, crate::encoding::MAX_BLOCK_SAMPLES),
                ..opts
            },
            partition_start,
            rank,
            series: 0,
            samples: 0,
            min_t: i64::MAX,
            max_t: i64::MIN,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds one series. `ts` must be strictly increasing and non-empty; series are
    /// expected in label order (readers rely on it only for output order).
    pub fn add_series(&mut self, labels: &Labels, kind: SeriesKind, ts: &[i64], vals: &[u64]) -> io::Result<()> {
        debug_assert!(!ts.is_empty() && ts.len() == vals.len());
        debug_assert!(ts.windows(2).all(|w| w[0] < w[1]));
        if ts.is_empty() {
            return Ok(());
        }
        self.table.push(kind.to_byte());
        put_uvarint(&mut self.table, labels.len() as u64);
        for l in labels.iter() {
            put_bytes(&mut self.table, l.name.as_bytes());
            put_bytes(&mut self.table, l.value.as_bytes());
        }
        // The recent tail is cut separately from the samples before it (see `TAIL_NS`).
        let bs = self.opts.block_samples;
        let tail = tail_start(ts);
        let n_blocks = tail.div_ceil(bs) + (ts.len() - tail).div_ceil(bs);
        put_uvarint(&mut self.table, n_blocks as u64);
        let enc = BlockEncodeOptions {
            zstd_level: self.opts.zstd_level,
        };
        let (old_ts, new_ts) = ts.split_at(tail);
        let (old_vals, new_vals) = vals.split_at(tail);
        let blocks = old_ts
            .chunks(bs)
            .zip(old_vals.chunks(bs))
            .chain(new_ts.chunks(bs).zip(new_vals.chunks(bs)));
        for (bts, bvals) in blocks {
            self.block.clear();
            encode_block_tracked(bts, bvals, kind.value, &enc, &mut self.zstd, &mut self.block);
            self.out.write_all(&self.block)?;
            let (lo, hi) = (bts[0], bts[bts.len() - 1]);
            put_ivarint(&mut self.table, lo);
            put_uvarint(&mut self.table, hi.wrapping_sub(lo) as u64);
            put_uvarint(&mut self.table, bts.len() as u64);
            put_uvarint(&mut self.table, self.offset);
            put_uvarint(&mut self.table, self.block.len() as u64);
            self.table.extend_from_slice(&crc32c::crc32c(&self.block).to_le_bytes());
            self.offset += self.block.len() as u64;
        }
        self.series += 1;
        self.samples += ts.len() as u64;
        self.min_t = self.min_t.min(ts[0]);
        self.max_t = self.max_t.max(ts[ts.len() - 1]);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.series == 0
    }

    /// Writes the series table and footer and fsyncs the file.
    pub fn finish(mut self) -> io::Result<SegmentInfo> {
        let table = zstd::bulk::compress(&self.table, 3)?;
        self.out.write_all(&table)?;
        let footer = Footer {
            table_offset: self.offset,
            table_len: table.len() as u64,
            table_raw_len: self.table.len() as u64,
            series_count: self.series,
            table_crc: crc32c::crc32c(&table),
            min_t: self.min_t,
            max_t: self.max_t,
            partition_start: self.partition_start,
            rank: self.rank,
            samples: self.samples,
            version: SEGMENT_VERSION,
            flags: FLAG_TABLE_ZSTD,
        };
        self.out.write_all(&footer.encode())?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let bytes = file.metadata()?.len();
        Ok(SegmentInfo {
            series: self.series,
            samples: self.samples,
            min_t: self.min_t,
            max_t: self.max_t,
            bytes,
        })
    }
}
