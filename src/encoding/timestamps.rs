//! Timestamp column codec (i64 UTC nanoseconds, strictly increasing in a block).
//!
//! The sample count `n` is not stored here: the block stores it.
//! All arithmetic is wrapping, so any i64 sequence round-trips.
//!
//! # Byte layout (section "timestamps", version = the tag byte)
//!
//! ```text
//! u8      tag
//!
//! tag 0x00  REGULAR: every delta equal (also used for n == 1, with delta 0); the
//!           encoder uses it when t[0] and delta are not both multiples of 10
//!   ivarint  t[0]
//!   ivarint  delta            t[i] = t[0] + i * delta (wrapping)
//!
//! tag 0x02  REGULAR_SCALED: like REGULAR, with both numbers divided by a power of ten
//!           (scrape timestamps are usually whole seconds or milliseconds)
//!   u8       e in 1..=18
//!   ivarint  a                t[0] = a * 10^e (must not overflow)
//!   ivarint  d                delta = d * 10^e (must not overflow)
//!           The encoder picks the largest such e.
//!
//! tag 0x01  GENERAL: an "ints" section (see `ints.rs`) holding t[0..n].
//!           Its encoder picks delta-of-delta order for jittery scrapes, divides out
//!           the common factor of the residuals (e.g. 1_000_000 for millisecond-aligned
//!           nanosecond timestamps) and packs them per miniblock (fixed width or radix).
//! ```

use std::ops::Range;

use super::ints::{decode_ints, encode_ints};
use super::varint::{put_ivarint, ByteReader, DecodeError};

const TAG_REGULAR: u8 = 0;
const TAG_GENERAL: u8 = 1;
const TAG_REGULAR_SCALED: u8 = 2;
const MAX_SCALE_EXP: u32 = 18;

/// Encodes a timestamp column (see the module docs for the layout).
pub fn encode_timestamps(ts: &[i64], out: &mut Vec<u8>) {
    let t0 = ts.first().copied().unwrap_or(0);
    let delta = match ts.get(1) {
        Some(t1) => t1.wrapping_sub(t0),
        None => 0,
    };
    // delta > 0 rules out a wrapped delta (strictly increasing input), so the decoder's
    // overflow check passes.
    if ts.len() == 1 || (delta > 0 && ts.windows(2).all(|w| w[1].wrapping_sub(w[0]) == delta)) {
        // The largest power of ten dividing both (10^18 < i64::MAX).
        let e = (1..=MAX_SCALE_EXP)
            .take_while(|&e| t0 % 10i64.pow(e) == 0 && delta % 10i64.pow(e) == 0)
            .last();
        match e {
            Some(e) => {
                let p = 10i64.pow(e);
                out.push(TAG_REGULAR_SCALED);
                out.push(e as u8);
                put_ivarint(out, t0 / p);
                put_ivarint(out, delta / p);
            }
            None => {
                out.push(TAG_REGULAR);
                put_ivarint(out, t0);
                put_ivarint(out, delta);
            }
        }
    } else {
        out.push(TAG_GENERAL);
        encode_ints(ts, out);
    }
}

/// Decodes `n` timestamps (already capped by the caller), appending them to `out`.
/// Rejects timestamps that are not strictly increasing (valid blocks never have them).
pub fn decode_timestamps(r: &mut ByteReader<'_>, n: usize, out: &mut Vec<i64>) -> Result<(), DecodeError> {
    decode_timestamps_range(r, n, i64::MIN, i64::MAX, out).map(|_| ())
}

/// Like [`decode_timestamps`], appending only the timestamps in `[start, end]`; returns
/// their index range among the `n`. Regular columns (the common case) produce only
/// those; irregular ones are decoded whole and cut. Validation is the same either way.
pub fn decode_timestamps_range(
    r: &mut ByteReader<'_>,
    n: usize,
    start: i64,
    end: i64,
    out: &mut Vec<i64>,
) -> Result<Range<usize>, DecodeError> {
    let at = r.pos();
    match r.u8()? {
        TAG_REGULAR => {
            let t0 = r.ivarint()?;
            let delta = r.ivarint()?;
            regular(t0, delta, n, at, start, end, out)
        }
        TAG_REGULAR_SCALED => {
            let e = u32::from(r.u8()?);
            let a = r.ivarint()?;
            let d = r.ivarint()?;
            if !(1..=MAX_SCALE_EXP).contains(&e) {
                return Err(DecodeError::Invalid(format!("timestamp scale 10^{e} at byte {at}")));
            }
            let p = 10i64.pow(e);
            match (a.checked_mul(p), d.checked_mul(p)) {
                (Some(t0), Some(delta)) => regular(t0, delta, n, at, start, end, out),
                _ => Err(DecodeError::Invalid(format!("scaled timestamps overflow at byte {at}"))),
            }
        }
        TAG_GENERAL => {
            let base = out.len();
            decode_ints(r, n, out)?;
            let ts = &out[base..];
            if !ts.windows(2).all(|w| w[0] < w[1]) {
                return Err(DecodeError::Invalid(format!(
                    "timestamps at byte {at} are not strictly increasing"
                )));
            }
            let lo = ts.partition_point(|&t| t < start);
            let hi = ts.partition_point(|&t| t <= end).max(lo);
            super::keep_only(out, base, lo..hi);
            Ok(lo..hi)
        }
        t => Err(DecodeError::Invalid(format!("unknown timestamps tag {t} at byte {at}"))),
    }
}

/// Appends those of the `n` timestamps `t0 + i * delta` lying in `[start, end]`,
/// checking that all `n` strictly increase; returns their index range.
fn regular(
    t0: i64,
    delta: i64,
    n: usize,
    at: usize,
    start: i64,
    end: i64,
    out: &mut Vec<i64>,
) -> Result<Range<usize>, DecodeError> {
    // Strictly increasing without overflow iff delta > 0 and the last one fits.
    let last = i64::try_from(n.saturating_sub(1))
        .ok()
        .and_then(|k| delta.checked_mul(k))
        .and_then(|span| t0.checked_add(span));
    if n > 1 && (delta <= 0 || last.is_none()) {
        return Err(DecodeError::Invalid(format!(
            "regular timestamps at byte {at} are not strictly increasing"
        )));
    }
    // How many of the timestamps lie below x, for x = start and x = end + 1 (in i128:
    // no overflow; delta > 0 whenever n > 1, and n == 1 needs only the sign).
    let below = |x: i128| -> usize {
        let off = x - i128::from(t0);
        if off <= 0 {
            0
        } else if n <= 1 {
            n
        } else {
            // i * delta < off  <=>  i < ceil(off / delta); capped at n. In i64 when
            // the offset fits (always, but for ranges near the ends of time): a
            // 128-bit division is a library call.
            let k = match i64::try_from(off) {
                Ok(o) => i128::from((o - 1) / delta + 1),
                Err(_) => (off - 1) / i128::from(delta) + 1,
            };
            usize::try_from(k).map_or(n, |k| k.min(n))
        }
    };
    let lo = below(i128::from(start));
    let hi = below(i128::from(end) + 1).max(lo);
    // lo <= hi <= n, and every t0 + i * delta with i < n fits (checked above).
    let mut t = t0.wrapping_add((lo as i64).wrapping_mul(delta));
    out.extend((lo..hi).map(|_| {
        let v = t;
        t = t.wrapping_add(delta);
        v
    }));
    Ok(lo..hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(ts: &[i64]) -> usize {
        let mut out = Vec::new();
        encode_timestamps(ts, &mut out);
        let mut r = ByteReader::new(&out);
        let mut dec = Vec::new();
        decode_timestamps(&mut r, ts.len(), &mut dec).unwrap();
        assert!(r.is_empty());
        assert_eq!(dec, ts);
        out.len()
    }

    proptest! {
        #[test]
        fn ts_roundtrip_arbitrary(mut ts in proptest::collection::vec(any::<i64>(), 1..300)) {
            ts.sort_unstable();
            ts.dedup();
            roundtrip(&ts);
        }

        #[test]
        fn ts_roundtrip_jittery(start in any::<i64>(), step in 1i64..100_000_000_000,
                                jitter in proptest::collection::vec(-50i64..50, 1..3000)) {
            let mut ts: Vec<i64> = jitter.iter().enumerate()
                .map(|(i, j)| start.wrapping_add(step.wrapping_mul(i as i64)).wrapping_add(*j))
                .collect();
            // Blocks hold strictly increasing timestamps (wrapping may have broken that).
            ts.sort_unstable();
            ts.dedup();
            roundtrip(&ts);
        }

        #[test]
        fn ts_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100), n in 0usize..3000) {
            let mut out = Vec::new();
            let _ = decode_timestamps(&mut ByteReader::new(&bytes), n, &mut out);
        }
    }

    #[test]
    fn ts_not_increasing_is_rejected() {
        for ts in [[5i64, 5], [5, 4]] {
            let mut out = Vec::new();
            encode_timestamps(&ts, &mut out);
            assert!(decode_timestamps(&mut ByteReader::new(&out), 2, &mut Vec::new()).is_err());
        }
        let mut out = Vec::new();
        encode_timestamps(&[1, 2, 4, 3], &mut out);
        assert!(decode_timestamps(&mut ByteReader::new(&out), 4, &mut Vec::new()).is_err());
        // A regular block whose last timestamp would overflow.
        let mut out = vec![TAG_REGULAR];
        put_ivarint(&mut out, i64::MAX - 1);
        put_ivarint(&mut out, 1);
        assert!(decode_timestamps(&mut ByteReader::new(&out), 2, &mut Vec::new()).is_ok());
        assert!(decode_timestamps(&mut ByteReader::new(&out), 3, &mut Vec::new()).is_err());
    }

    #[test]
    fn ts_shapes() {
        let step = 15_000_000_000i64;
        let regular: Vec<i64> = (0..2048).map(|i| 1_700_000_000_000_000_000 + i * step).collect();
        assert!(roundtrip(&regular) <= 9);
        // Not a multiple of 10: unscaled.
        let odd: Vec<i64> = (0..2048).map(|i| 1_700_000_000_000_000_001 + i * step).collect();
        assert!(roundtrip(&odd) <= 16);
        roundtrip(&[0]);
        roundtrip(&[-1_000_000_000_000_000_000, 0, 1_000_000_000_000_000_000]);
        roundtrip(&[i64::MAX - 7]);
        roundtrip(&[i64::MIN]);
        roundtrip(&[i64::MIN + 8, 0]);
        // Scaled values whose product overflows, or a bad exponent, are rejected.
        let mut out = vec![TAG_REGULAR_SCALED, 18];
        put_ivarint(&mut out, 10);
        put_ivarint(&mut out, 1);
        assert!(decode_timestamps(&mut ByteReader::new(&out), 2, &mut Vec::new()).is_err());
        for e in [0u8, 19, 255] {
            let mut out = vec![TAG_REGULAR_SCALED, e];
            put_ivarint(&mut out, 1);
            put_ivarint(&mut out, 1);
            assert!(decode_timestamps(&mut ByteReader::new(&out), 2, &mut Vec::new()).is_err());
        }
        assert!(roundtrip(&[i64::MIN, i64::MAX]) <= 25);
        roundtrip(&[i64::MIN]);
        roundtrip(&[i64::MIN, -1, 0, i64::MAX]);
        // Millisecond-aligned scrapes with up to +-3 ms jitter.
        let jit: Vec<i64> = (0..2048i64)
            .map(|i| 1_700_000_000_000_000_000 + i * step + ((i * 7919) % 7 - 3) * 1_000_000)
            .collect();
        let n = roundtrip(&jit);
        eprintln!("jittery ms-aligned ts: {:.3} B/sample", n as f64 / 2048.0);
        assert!(n < 2048);
    }
}
