//! Sample blocks: one encoded run of (timestamp, value) samples of a single series.
//!
//! # Byte layout
//!
//! ```text
//! u8       flags: bit 0 = payload is zstd-compressed; bits 1..=7 reserved, must be 0
//! if bit 0 is clear:
//!   payload (the rest of the block)
//! if bit 0 is set:
//!   uvarint  payload length P in bytes (<= MAX_BLOCK_PAYLOAD)
//!   one zstd frame (the rest of the block) decompressing to exactly P bytes
//!
//! payload:
//!   uvarint  sample count n, 1 <= n <= MAX_BLOCK_SAMPLES
//!   timestamps section (starts with its tag byte; see `timestamps.rs`)
//!   values section (starts with its tag byte):
//!     ValueKind::Float -> "floats" section (see `floats.rs`), raw f64 bits
//!     ValueKind::Money -> "ints" section (see `ints.rs`), i64 nano-units
//!   nothing else: trailing bytes are an error
//! ```
//!
//! Primitives used by every section: `u8` is one byte; `u64 LE` is 8 bytes little-endian;
//! `uvarint` is unsigned LEB128 (7 bits per byte, low group first, high bit set on every
//! byte but the last, at most 10 bytes); `ivarint` is the zigzag mapping
//! `(v << 1) ^ (v >> 63)` of an i64 written as a uvarint (see `varint.rs`).
//!
//! The value kind is not stored in the block; the series knows it. Decoding checks
//! that the timestamps are strictly increasing.

use std::cell::RefCell;

use super::floats::{decode_floats_range, encode_floats};
use super::ints::{decode_ints, encode_ints};
use super::timestamps::{decode_timestamps_range, encode_timestamps};
use super::varint::{put_uvarint, ByteReader, DecodeError};
use crate::model::ValueKind;

/// Most samples one block may hold; decoding rejects larger counts.
pub const MAX_BLOCK_SAMPLES: usize = 1 << 16;
/// Most bytes an uncompressed payload may have. The worst case per sample is 8 bytes
/// of timestamp (64-bit fields) plus under 10 bytes of value (a Gorilla new window:
/// 2 + 5 + 6 + 64 bits), plus per-miniblock and section headers; 24 bytes per sample
/// plus 1 KiB bounds it with room to spare.
pub const MAX_BLOCK_PAYLOAD: usize = MAX_BLOCK_SAMPLES * 24 + 1024;

const FLAG_ZSTD: u8 = 1;

/// Encoding choices for [`encode_block`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockEncodeOptions {
    /// `None`: never zstd. `Some(l)`: try zstd at level `l`; keep it only if the block
    /// shrinks by at least 10%.
    pub zstd_level: Option<i32>,
}

/// Encodes one block, appending it to `out`.
///
/// Preconditions (caller guarantees): `ts.len() == values.len()`, `1 <= len <=
/// MAX_BLOCK_SAMPLES`, `ts` strictly increasing. `values` are raw u64: for
/// [`ValueKind::Float`] the f64 bit pattern (round-trips bit-exactly, NaN payloads
/// included); for [`ValueKind::Money`] an i64 count of nano-units cast to u64.
pub fn encode_block(ts: &[i64], values: &[u64], kind: ValueKind, opts: &BlockEncodeOptions, out: &mut Vec<u8>) {
    encode_block_tracked(ts, values, kind, opts, &mut ZstdOutcomes::default(), out);
}

/// Like [`encode_block`], consulting and updating `outcomes`: a writer of many blocks
/// (a segment) stops offering zstd to a payload size class after
/// [`ZSTD_GIVE_UP`] payloads of that class in a row came out no smaller.
pub fn encode_block_tracked(
    ts: &[i64],
    values: &[u64],
    kind: ValueKind,
    opts: &BlockEncodeOptions,
    outcomes: &mut ZstdOutcomes,
    out: &mut Vec<u8>,
) {
    debug_assert_eq!(ts.len(), values.len());
    debug_assert!(!ts.is_empty() && ts.len() <= MAX_BLOCK_SAMPLES);
    debug_assert!(ts.windows(2).all(|w| w[0] < w[1]));
    let start = out.len();
    out.push(0);
    put_uvarint(out, ts.len() as u64);
    encode_timestamps(ts, out);
    match kind {
        ValueKind::Float => encode_floats(values, out),
        ValueKind::Money => {
            let ints: Vec<i64> = values.iter().map(|&v| v as i64).collect();
            encode_ints(&ints, out);
        }
    }
    if let Some(level) = opts.zstd_level {
        let payload = &out[start + 1..];
        let plen = payload.len();
        if plen < MIN_ZSTD_PAYLOAD || !outcomes.worth_trying(plen) {
            return;
        }
        let mut kept = false;
        if let Some(frame) = zstd_compress(payload, level) {
            let mut hdr = Vec::with_capacity(10);
            put_uvarint(&mut hdr, plen as u64);
            // Keep zstd only if it saves at least 10% of the block.
            if (1 + hdr.len() + frame.len()) * 10 <= (1 + plen) * 9 {
                out.truncate(start);
                out.push(FLAG_ZSTD);
                out.extend_from_slice(&hdr);
                out.extend_from_slice(&frame);
                kept = true;
            }
        }
        outcomes.record(plen, kept);
    }
}

/// Misses in a row after which a size class is no longer offered to zstd.
pub const ZSTD_GIVE_UP: u32 = 256;

/// How zstd fared per payload size class (by powers of two) in one writer's blocks.
/// Whether zstd pays depends on the data: short blocks of a few samples per series
/// (a flush after ingest of many series) practically never shrink, while the same
/// sizes of periodic values usually do. Trying costs a frame's entropy tables each
/// time, which for the never-shrinking kind was most of a flush's zstd time.
#[derive(Debug, Clone, Default)]
pub struct ZstdOutcomes {
    /// Per class, misses since the last payload zstd shrank.
    misses: [u32; 32],
}

impl ZstdOutcomes {
    fn class(plen: usize) -> usize {
        (plen.max(1).ilog2() as usize).min(31)
    }

    fn worth_trying(&self, plen: usize) -> bool {
        self.misses[Self::class(plen)] < ZSTD_GIVE_UP
    }

    fn record(&mut self, plen: usize, kept: bool) {
        let m = &mut self.misses[Self::class(plen)];
        *m = if kept { 0 } else { m.saturating_add(1) };
    }
}

/// Payloads shorter than this are not offered to zstd. They are already bit-packed,
/// and a frame's own header and entropy tables rarely leave the 10 % saving at this
/// size: of payloads of 64–127 bytes, zstd was kept for 180 of 53,120 when loading the
/// PromQL bench data and for none of 20,000 in the Kafka ingest bench (at 128–255
/// bytes: 19,919 of 20,000, and none of 53,000, so the line is not drawn higher). In
/// the Kafka ingest bench (many series of a few samples each, flushed on the writer
/// thread) zstd calls were about 30 % of the writer thread's samples.
const MIN_ZSTD_PAYLOAD: usize = 128;

thread_local! {
    /// A reusable compression context (creating one per block, and faulting in its
    /// fresh workspace, cost more than compressing a short block).
    static ZSTD_COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

/// `payload` as one zstd frame at `level`, through this thread's context; `None` when
/// zstd fails (the block is then stored uncompressed).
fn zstd_compress(payload: &[u8], level: i32) -> Option<Vec<u8>> {
    ZSTD_COMPRESSOR.with(|cell| {
        let mut slot = cell.try_borrow_mut().ok()?;
        match slot.as_mut() {
            Some((l, _)) if *l == level => {}
            Some((l, c)) => {
                c.set_compression_level(level).ok()?;
                *l = level;
            }
            None => *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?)),
        }
        let (_, c) = slot.as_mut()?;
        c.compress(payload).ok()
    })
}

thread_local! {
    /// A reusable decompression context and buffer (creating a context per block is costly).
    static ZSTD_SCRATCH: RefCell<Option<(zstd::bulk::Decompressor<'static>, Vec<u8>)>> =
        const { RefCell::new(None) };
}

/// Decodes a block produced by [`encode_block`], appending to `ts_out` / `vals_out`;
/// returns the sample count. Never panics on any input: corrupt bytes give a
/// [`DecodeError`], and on error both outputs are left as they were.
pub fn decode_block(
    bytes: &[u8],
    kind: ValueKind,
    ts_out: &mut Vec<i64>,
    vals_out: &mut Vec<u64>,
) -> Result<usize, DecodeError> {
    decode_block_range(bytes, kind, i64::MIN, i64::MAX, ts_out, vals_out)
}

/// Like [`decode_block`], appending only the samples with timestamps in `[start, end]`;
/// returns the block's whole sample count. A query over the last hour reads the tail
/// of a block holding several: regular timestamps give the index range before any
/// value is decoded, and values outside it are skipped where the codec allows
/// (decimal conversion) and never copied out. The whole block is still checked.
pub fn decode_block_range(
    bytes: &[u8],
    kind: ValueKind,
    start: i64,
    end: i64,
    ts_out: &mut Vec<i64>,
    vals_out: &mut Vec<u64>,
) -> Result<usize, DecodeError> {
    let (t0, v0) = (ts_out.len(), vals_out.len());
    let window = (start, end);
    let res = decode_block_inner(bytes, kind, window, ts_out, vals_out);
    if res.is_err() {
        ts_out.truncate(t0);
        vals_out.truncate(v0);
    }
    res
}

fn decode_block_inner(
    bytes: &[u8],
    kind: ValueKind,
    window: (i64, i64),
    ts_out: &mut Vec<i64>,
    vals_out: &mut Vec<u64>,
) -> Result<usize, DecodeError> {
    let mut r = ByteReader::new(bytes);
    let flags = r.u8()?;
    if flags & !FLAG_ZSTD != 0 {
        return Err(DecodeError::Invalid(format!("unknown block flags {flags:#04x}")));
    }
    if flags & FLAG_ZSTD == 0 {
        return decode_payload(r.rest(), kind, window, ts_out, vals_out);
    }
    let plen = r.len_prefix(MAX_BLOCK_PAYLOAD)?;
    let frame = r.rest();
    ZSTD_SCRATCH.with(|cell| {
        let mut slot = cell
            .try_borrow_mut()
            .map_err(|_| DecodeError::Invalid("re-entrant block decode".into()))?;
        if slot.is_none() {
            let d = zstd::bulk::Decompressor::new().map_err(|e| DecodeError::Invalid(format!("zstd context: {e}")))?;
            *slot = Some((d, Vec::new()));
        }
        let Some((dec, buf)) = slot.as_mut() else {
            return Err(DecodeError::Invalid("zstd context missing".into()));
        };
        buf.clear();
        // plen <= MAX_BLOCK_PAYLOAD, so this allocation is bounded; zstd writes at most
        // buf.capacity() bytes (which may exceed plen; checked below).
        buf.reserve(plen);
        let got = dec
            .decompress_to_buffer(frame, buf)
            .map_err(|e| DecodeError::Invalid(format!("zstd: {e}")))?;
        if got != plen || buf.len() != plen {
            return Err(DecodeError::Invalid(format!(
                "zstd payload is {got} bytes, header says {plen}"
            )));
        }
        decode_payload(buf, kind, window, ts_out, vals_out)
    })
}

fn decode_payload(
    payload: &[u8],
    kind: ValueKind,
    (start, end): (i64, i64),
    ts_out: &mut Vec<i64>,
    vals_out: &mut Vec<u64>,
) -> Result<usize, DecodeError> {
    let mut r = ByteReader::new(payload);
    let n = r.len_prefix(MAX_BLOCK_SAMPLES)?;
    if n == 0 {
        return Err(DecodeError::Invalid("empty block".into()));
    }
    // Also checks that the timestamps are strictly increasing.
    let keep = decode_timestamps_range(&mut r, n, start, end, ts_out)?;
    match kind {
        ValueKind::Float => decode_floats_range(&mut r, n, keep, vals_out)?,
        ValueKind::Money => {
            let base = vals_out.len();
            decode_ints(&mut r, n, vals_out)?;
            super::keep_only(vals_out, base, keep);
        }
    }
    if !r.is_empty() {
        return Err(DecodeError::Invalid(format!(
            "{} trailing bytes after block payload",
            r.remaining()
        )));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::floats::tests::float_column;
    use crate::encoding::ints::tests::int_column;
    use proptest::prelude::*;
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    const NO_ZSTD: BlockEncodeOptions = BlockEncodeOptions { zstd_level: None };
    const ZSTD: BlockEncodeOptions = BlockEncodeOptions { zstd_level: Some(3) };

    fn encode(ts: &[i64], vals: &[u64], kind: ValueKind, opts: &BlockEncodeOptions) -> Vec<u8> {
        let mut out = vec![0xAA]; // encode_block appends
        encode_block(ts, vals, kind, opts, &mut out);
        out.remove(0);
        out
    }

    fn roundtrip(ts: &[i64], vals: &[u64], kind: ValueKind, opts: &BlockEncodeOptions) -> Vec<u8> {
        let b = encode(ts, vals, kind, opts);
        let (mut dt, mut dv) = (vec![-5i64], vec![5u64]);
        assert_eq!(decode_block(&b, kind, &mut dt, &mut dv), Ok(ts.len()));
        assert_eq!(&dt[1..], ts);
        assert_eq!(&dv[1..], vals);
        b
    }

    /// Strictly increasing timestamps of length n: arbitrary or jittery-regular.
    fn ts_column(n: usize) -> impl Strategy<Value = Vec<i64>> {
        prop_oneof![
            proptest::collection::btree_set(any::<i64>(), n..=n).prop_map(|s| s.into_iter().collect::<Vec<_>>()),
            (i64::MIN..i64::MAX / 2, 1i64..1_000_000_000_000)
                .prop_map(move |(s, step)| (0..n as i64).map(|i| s + i * step).collect()),
            (-(1i64 << 60)..(1i64 << 60), proptest::collection::vec(0i64..40, n..=n)).prop_map(|(s, gaps)| {
                let mut t = s;
                gaps.iter()
                    .map(|g| {
                        t += 14_980_000_000 + g * 1_000_000;
                        t
                    })
                    .collect()
            }),
            Just((0..n as i64).map(|i| i64::MAX - (n as i64 - 1) + i).collect()),
            Just((0..n as i64).map(|i| i64::MIN + i).collect()),
        ]
    }

    fn float_block() -> impl Strategy<Value = (Vec<i64>, Vec<u64>)> {
        float_column().prop_flat_map(|v| {
            let n = v.len();
            (ts_column(n), Just(v))
        })
    }

    fn money_block() -> impl Strategy<Value = (Vec<i64>, Vec<u64>)> {
        int_column().prop_flat_map(|v| {
            let n = v.len();
            (ts_column(n), Just(v.into_iter().map(|x| x as u64).collect::<Vec<_>>()))
        })
    }

    fn any_block() -> impl Strategy<Value = (ValueKind, Vec<i64>, Vec<u64>)> {
        prop_oneof![
            float_block().prop_map(|(t, v)| (ValueKind::Float, t, v)),
            money_block().prop_map(|(t, v)| (ValueKind::Money, t, v)),
        ]
    }

    fn check_garbage(bytes: &[u8], kind: ValueKind) {
        let (mut dt, mut dv) = (vec![1i64], vec![2u64]);
        match decode_block(bytes, kind, &mut dt, &mut dv) {
            Ok(n) => {
                assert!(n <= MAX_BLOCK_SAMPLES);
                assert_eq!(dt.len(), n + 1);
                assert_eq!(dv.len(), n + 1);
            }
            Err(_) => assert_eq!((dt, dv), (vec![1], vec![2])),
        }
    }

    proptest! {

        #[test]
        fn float_block_roundtrip((ts, vals) in float_block(), z in any::<bool>()) {
            roundtrip(&ts, &vals, ValueKind::Float, if z { &ZSTD } else { &NO_ZSTD });
        }

        #[test]
        fn money_block_roundtrip((ts, vals) in money_block(), z in any::<bool>()) {
            roundtrip(&ts, &vals, ValueKind::Money, if z { &ZSTD } else { &NO_ZSTD });
        }

        #[test]
        fn single_sample_block(t in any::<i64>(), v in any::<u64>(), money in any::<bool>(), z in any::<bool>()) {
            let kind = if money { ValueKind::Money } else { ValueKind::Float };
            roundtrip(&[t], &[v], kind, if z { &ZSTD } else { &NO_ZSTD });
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), money in any::<bool>()) {
            let kind = if money { ValueKind::Money } else { ValueKind::Float };
            check_garbage(&bytes, kind);
            // Also as an uncompressed and as a "compressed" block.
            let mut b = bytes.clone();
            if let Some(f) = b.first_mut() { *f &= FLAG_ZSTD; }
            check_garbage(&b, kind);
        }

        #[test]
        fn corrupted_blocks_never_panic((kind, ts, vals) in any_block(), z in any::<bool>(),
                                        pos in any::<prop::sample::Index>(), flip in 1u8..=255,
                                        cut in any::<prop::sample::Index>()) {
            let b = encode(&ts, &vals, kind, if z { &ZSTD } else { &NO_ZSTD });
            let mut flipped = b.clone();
            flipped[pos.index(b.len())] ^= flip;
            check_garbage(&flipped, kind);
            check_garbage(&b[..cut.index(b.len())], kind);
            // The other kind must not panic either.
            let other = if kind == ValueKind::Money { ValueKind::Float } else { ValueKind::Money };
            check_garbage(&b, other);
        }

        /// A range decode gives exactly the samples of a whole decode that lie in the
        /// range, with the same sample count, for every codec: ranges inside, around,
        /// before and after the block, empty and inverted ones.
        #[test]
        fn range_decode_equals_cut_whole_decode((kind, ts, vals) in any_block(), z in any::<bool>(),
                                                a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>(),
                                                shift in -2i64..=2, wide in any::<bool>()) {
            let bytes = encode(&ts, &vals, kind, if z { &ZSTD } else { &NO_ZSTD });
            // Bounds at, just beside or far from sample times.
            let at = |i: &prop::sample::Index| ts[i.index(ts.len())].saturating_add(shift);
            let (start, end) = if wide { (i64::MIN, at(&b)) } else { (at(&a), at(&b)) };
            let (mut rt, mut rv) = (vec![9i64], vec![9u64]);
            let n = decode_block_range(&bytes, kind, start, end, &mut rt, &mut rv).unwrap();
            prop_assert_eq!(n, ts.len());
            let want: Vec<(i64, u64)> = ts.iter().copied().zip(vals.iter().copied())
                .filter(|&(t, _)| t >= start && t <= end).collect();
            let got: Vec<(i64, u64)> = rt[1..].iter().copied().zip(rv[1..].iter().copied()).collect();
            prop_assert_eq!(rt.len(), rv.len());
            prop_assert_eq!(got, want);
        }
    }

    /// A writer stops offering zstd to a size class after ZSTD_GIVE_UP misses in a row
    /// (a compressible block of that class then stays plain, and still decodes), one
    /// short of that it still tries and a hit resets the count, and other classes are
    /// unaffected.
    #[test]
    fn zstd_is_no_longer_tried_for_a_class_that_never_shrinks() {
        let ts: Vec<i64> = (0..4000).map(|i| i * 60_000_000_000).collect();
        // Long runs of one (non-decimal) value between changes: zstd shrinks the XOR
        // stream's repeated zero bits.
        let vals: Vec<u64> = (0..4000).map(|i| (2.0 + (i / 50) as f64).sqrt().to_bits()).collect();
        let plen = encode(&ts, &vals, ValueKind::Float, &NO_ZSTD).len() - 1;
        let compressed = |bytes: &[u8]| bytes[0] & FLAG_ZSTD != 0;
        assert!(
            plen >= MIN_ZSTD_PAYLOAD,
            "payload of {plen} bytes is too short for this test"
        );
        assert!(
            compressed(&encode(&ts, &vals, ValueKind::Float, &ZSTD)),
            "zstd must shrink this block"
        );
        let run = |outcomes: &mut ZstdOutcomes| {
            let mut out = Vec::new();
            encode_block_tracked(&ts, &vals, ValueKind::Float, &ZSTD, outcomes, &mut out);
            out
        };
        let mut outcomes = ZstdOutcomes::default();
        for _ in 0..ZSTD_GIVE_UP - 1 {
            outcomes.record(plen, false);
        }
        // One short of giving up: tried, kept, and the count starts over.
        assert!(compressed(&run(&mut outcomes)));
        assert_eq!(outcomes.misses[ZstdOutcomes::class(plen)], 0);
        for _ in 0..ZSTD_GIVE_UP {
            outcomes.record(plen, false);
        }
        let out = run(&mut outcomes);
        assert!(!compressed(&out), "class given up: no zstd");
        let (mut dt, mut dv) = (Vec::new(), Vec::new());
        assert_eq!(decode_block(&out, ValueKind::Float, &mut dt, &mut dv), Ok(ts.len()));
        assert_eq!((dt, dv), (ts.clone(), vals.clone()));
        // Another class is still tried.
        let mut other = outcomes.clone();
        other.misses[ZstdOutcomes::class(plen)] = 0;
        for _ in 0..ZSTD_GIVE_UP {
            other.record(plen * 4, false);
        }
        assert!(compressed(&run(&mut other)));
    }

    #[test]
    fn caps_are_enforced() {
        // A sample count above the cap.
        let mut b = vec![0u8];
        put_uvarint(&mut b, (MAX_BLOCK_SAMPLES + 1) as u64);
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        assert!(decode_block(&b, ValueKind::Float, &mut Vec::new(), &mut Vec::new()).is_err());
        // A zstd payload length above the cap.
        let mut b = vec![FLAG_ZSTD];
        put_uvarint(&mut b, (MAX_BLOCK_PAYLOAD + 1) as u64);
        assert!(decode_block(&b, ValueKind::Float, &mut Vec::new(), &mut Vec::new()).is_err());
        // A zstd frame that decompresses to more than the declared length.
        let payload = vec![0u8; 100_000];
        let frame = zstd::bulk::compress(&payload, 1).unwrap();
        let mut b = vec![FLAG_ZSTD];
        put_uvarint(&mut b, 10);
        b.extend_from_slice(&frame);
        assert!(decode_block(&b, ValueKind::Float, &mut Vec::new(), &mut Vec::new()).is_err());
        // The largest count decodes.
        let ts: Vec<i64> = (0..MAX_BLOCK_SAMPLES as i64).collect();
        let vals: Vec<u64> = (0..MAX_BLOCK_SAMPLES as u64)
            .map(|i| i.wrapping_mul(0x9e3779b97f4a7c15))
            .collect();
        roundtrip(&ts, &vals, ValueKind::Float, &ZSTD);
        roundtrip(&ts, &vals, ValueKind::Money, &NO_ZSTD);
        // Worst-case payloads fit the payload cap.
        let ts: Vec<i64> = (0..MAX_BLOCK_SAMPLES as i64)
            .map(|i| i64::MIN + i * (i64::MAX / MAX_BLOCK_SAMPLES as i64) + (i * i) % 977)
            .collect();
        let b = encode(&ts, &vals, ValueKind::Float, &NO_ZSTD);
        assert!(b.len() <= MAX_BLOCK_PAYLOAD, "{}", b.len());
    }

    #[test]
    fn special_floats_roundtrip() {
        let vals = [
            0x7ff0000000000002u64,
            (-0.0f64).to_bits(),
            f64::INFINITY.to_bits(),
            f64::NEG_INFINITY.to_bits(),
            f64::NAN.to_bits(),
            0xfff8_0000_0000_0001,
            0.0f64.to_bits(),
        ];
        let ts: Vec<i64> = (0..vals.len() as i64).map(|i| i * 15).collect();
        for opts in [&NO_ZSTD, &ZSTD] {
            roundtrip(&ts, &vals, ValueKind::Float, opts);
        }
        let ext = [i64::MIN as u64, i64::MAX as u64, 0, u64::MAX];
        roundtrip(&[i64::MIN, -1, 0, i64::MAX], &ext, ValueKind::Money, &NO_ZSTD);
    }

    /// Realistic shapes: 2048 samples every 15 s (nanosecond timestamps).
    fn regular_ts(n: usize) -> Vec<i64> {
        (0..n as i64)
            .map(|i| 1_700_000_000_000_000_000 + i * 15_000_000_000)
            .collect()
    }

    fn counter(rng: &mut SmallRng, n: usize) -> Vec<u64> {
        let mut c = 0.0f64;
        (0..n)
            .map(|_| {
                c += rng.gen_range(0..10) as f64;
                c.to_bits()
            })
            .collect()
    }

    fn gauge_2dp(rng: &mut SmallRng, n: usize) -> Vec<u64> {
        let mut m: i64 = 5_000;
        (0..n)
            .map(|_| {
                m += rng.gen_range(-50..=50);
                (m as f64 / 100.0).to_bits()
            })
            .collect()
    }

    #[test]
    fn sizes_on_realistic_data() {
        const N: usize = 2048;
        let mut rng = SmallRng::seed_from_u64(7);
        let ts = regular_ts(N);
        let report = |name: &str, ts: &[i64], vals: &[u64], kind: ValueKind, limit: f64| {
            for (oname, opts) in [("plain", &NO_ZSTD), ("zstd3", &ZSTD)] {
                let b = roundtrip(ts, vals, kind, opts);
                let bps = b.len() as f64 / ts.len() as f64;
                eprintln!("{name:<36} {oname}: {:>6} bytes, {bps:.4} B/sample", b.len());
                assert!(bps < limit, "{name} {oname}: {bps} >= {limit}");
            }
        };
        report(
            "counter +0..10, regular 15s",
            &ts,
            &counter(&mut rng, N),
            ValueKind::Float,
            0.7,
        );
        report(
            "gauge 2dp walk +-0.50, regular",
            &ts,
            &gauge_2dp(&mut rng, N),
            ValueKind::Float,
            1.2,
        );
        report(
            "constant 42.0, regular",
            &ts,
            &vec![42.0f64.to_bits(); N],
            ValueKind::Float,
            0.05,
        );
        let money: Vec<u64> = {
            let mut c = 0i64;
            (0..N)
                .map(|_| {
                    c += rng.gen_range(0..2_000i64) * 10_000_000; // cents, in nanos
                    c as u64
                })
                .collect()
        };
        report("money +0..20.00 in cents, regular", &ts, &money, ValueKind::Money, 1.5);
        // Jittery ms-aligned timestamps (+-5 ms) with a counter.
        let jts: Vec<i64> = (0..N as i64)
            .map(|i| 1_700_000_000_000_000_000 + i * 15_000_000_000 + rng.gen_range(-5..=5) * 1_000_000)
            .collect();
        report(
            "counter, ts jitter +-5ms",
            &jts,
            &counter(&mut rng, N),
            ValueKind::Float,
            1.5,
        );
        // The same gauge with a NaN and a trailing Prometheus stale marker.
        let mut stale = gauge_2dp(&mut rng, N);
        stale[700] = f64::NAN.to_bits();
        stale[N - 1] = 0x7ff0000000000002;
        report("gauge 2dp + NaN + stale marker", &ts, &stale, ValueKind::Float, 1.2);
        let mut stale = counter(&mut rng, N);
        stale[N - 1] = 0x7ff0000000000002;
        report("counter + stale marker", &ts, &stale, ValueKind::Float, 0.7);
        // A non-decimal gauge (Gorilla path), for reference.
        let mut g = 0.5f64;
        let noisy: Vec<u64> = (0..N)
            .map(|_| {
                g += rng.gen_range(-0.01..0.01);
                g.to_bits()
            })
            .collect();
        report("float gauge random walk (XOR)", &ts, &noisy, ValueKind::Float, 9.0);
    }

    /// Decode throughput; run with
    /// `cargo test --release --lib encoding::block::tests::decode_throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn decode_throughput() {
        const N: usize = 2048;
        let mut rng = SmallRng::seed_from_u64(9);
        let ts = regular_ts(N);
        let cases: Vec<(&str, Vec<u64>)> = vec![
            ("counter", counter(&mut rng, N)),
            ("gauge 2dp", gauge_2dp(&mut rng, N)),
            ("constant", vec![1.0f64.to_bits(); N]),
            ("xor", (0..N).map(|i| (i as f64).sqrt().to_bits()).collect()),
        ];
        for (name, vals) in &cases {
            for bits_only in [true, false] {
                for (oname, opts) in [("plain", &NO_ZSTD), ("zstd3", &ZSTD)] {
                    let b = crate::encoding::ints::tests::with_bits_only(bits_only, || {
                        encode(&ts, vals, ValueKind::Float, opts)
                    });
                    let (mut dt, mut dv) = (Vec::with_capacity(N), Vec::with_capacity(N));
                    let iters = 20_000;
                    let t = std::time::Instant::now();
                    for _ in 0..iters {
                        dt.clear();
                        dv.clear();
                        let n = decode_block(std::hint::black_box(&b), ValueKind::Float, &mut dt, &mut dv);
                        assert_eq!(n, Ok(N));
                    }
                    let secs = t.elapsed().as_secs_f64();
                    let fmt = if bits_only { "bits-only" } else { "all modes" };
                    eprintln!(
                        "{name:<10} {fmt} {oname}: {:.4} B/sample, {:.0} M samples/s",
                        b.len() as f64 / N as f64,
                        (iters * N) as f64 / secs / 1e6
                    );
                }
            }
        }
    }

    /// Bytes per sample of the standard workload's shapes, per metric, as compaction
    /// writes them (blocks of up to 2048 samples, zstd level 9); run with
    /// `cargo test --release --lib encoding::block::tests::workload_breakdown -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn workload_breakdown() {
        let w = crate::workload::Workload {
            tenants: 2,
            ..crate::workload::Workload::default()
        };
        let opts = BlockEncodeOptions { zstd_level: Some(9) };
        let mut totals = [[0usize; 2]; crate::workload::METRICS_PER_INSTANCE];
        let mut samples = [0usize; crate::workload::METRICS_PER_INSTANCE];
        for i in 0..w.series_count() {
            let mut d = crate::workload::SeriesData::default();
            w.samples(i, 0, w.samples_per_series, &mut d);
            let kind = w.value_kind(i);
            let m = i % crate::workload::METRICS_PER_INSTANCE;
            for (ts, vals) in d.ts.chunks(2048).zip(d.values.chunks(2048)) {
                for (j, bits_only) in [true, false].into_iter().enumerate() {
                    let b = crate::encoding::ints::tests::with_bits_only(bits_only, || encode(ts, vals, kind, &opts));
                    totals[m][j] += b.len();
                }
                roundtrip(ts, vals, kind, &opts);
                samples[m] += ts.len();
            }
        }
        let (mut before, mut after) = (0, 0);
        for (m, (t, &cnt)) in totals.iter().zip(&samples).enumerate() {
            let name = w.series(m).0.metric_name().unwrap_or("?").to_string();
            eprintln!(
                "{m} {name:<22} bits-only {:.4} B/sample, all modes {:.4} B/sample",
                t[0] as f64 / cnt as f64,
                t[1] as f64 / cnt as f64
            );
            before += t[0];
            after += t[1];
        }
        let n: usize = samples.iter().sum();
        eprintln!(
            "all: bits-only {:.4} B/sample, all modes {:.4} B/sample",
            before as f64 / n as f64,
            after as f64 / n as f64
        );
    }
}
