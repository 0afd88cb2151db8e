//! The WAL batch record: series definitions, samples and source positions in one
//! checksummed unit, so a batch and the Kafka offsets it advances are durable together.
//!
//! Payload layout (after the record header in `log.rs`; see storage-format.md):
//! ```text
//! u8 type = 1 (batch)
//! uvarint n_defs,   n_defs   × { uvarint ref, u8 kind, uvarint n_labels, n_labels × { bytes name, bytes value } }
//! uvarint n_groups, n_groups × { uvarint ref, uvarint n, ivarint ts0, (n-1) × ivarint delta, n × u64le value }
//! uvarint n_pos,    n_pos    × { bytes source, ivarint position }
//! ```
//! `bytes` is uvarint length + raw bytes. `ref` is the writer's series id; a ref is always
//! defined earlier in the same generation before it is used.

use crate::encoding::varint::{put_bytes, put_ivarint, put_uvarint, ByteReader, DecodeError};
use crate::model::{Label, Labels, SeriesKind};

const TYPE_BATCH: u8 = 1;
/// Bounds on counts read from disk, so corrupt input cannot request huge allocations.
const MAX_LABELS: usize = 1024;
const MAX_GROUP_SAMPLES: usize = 1 << 28;

#[derive(Debug, Clone, PartialEq)]
pub struct WalSeries {
    pub series_ref: u32,
    pub kind: SeriesKind,
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct WalSeriesSamples {
    pub series_ref: u32,
    pub ts: Vec<i64>,
    pub values: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct WalBatch {
    pub defs: Vec<WalSeries>,
    pub groups: Vec<WalSeriesSamples>,
    pub positions: Vec<(String, i64)>,
}

/// Serialises a batch payload into `out` (cleared first).
pub fn encode_batch(
    defs: &[WalSeries],
    groups: impl ExactSizeIterator<Item = (u32, impl AsRef<[i64]>, impl AsRef<[u64]>)>,
    positions: &[(String, i64)],
    out: &mut Vec<u8>,
) {
    out.clear();
    out.push(TYPE_BATCH);
    put_uvarint(out, defs.len() as u64);
    for d in defs {
        put_uvarint(out, d.series_ref as u64);
        out.push(d.kind.to_byte());
        put_uvarint(out, d.labels.len() as u64);
        for l in d.labels.iter() {
            put_bytes(out, l.name.as_bytes());
            put_bytes(out, l.value.as_bytes());
        }
    }
    put_uvarint(out, groups.len() as u64);
    for (r, ts, vals) in groups {
        let (ts, vals) = (ts.as_ref(), vals.as_ref());
        put_uvarint(out, r as u64);
        put_uvarint(out, ts.len() as u64);
        let mut prev = 0i64;
        for (i, &t) in ts.iter().enumerate() {
            put_ivarint(out, if i == 0 { t } else { t.wrapping_sub(prev) });
            prev = t;
        }
        out.reserve(vals.len() * 8);
        for &v in vals {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    put_uvarint(out, positions.len() as u64);
    for (s, p) in positions {
        put_bytes(out, s.as_bytes());
        put_ivarint(out, *p);
    }
}

/// Decodes a batch payload. The caller has already verified its checksum; this still
/// never trusts counts or lengths.
pub fn decode_batch(payload: &[u8]) -> Result<WalBatch, DecodeError> {
    let mut r = ByteReader::new(payload);
    let ty = r.u8()?;
    if ty != TYPE_BATCH {
        return Err(DecodeError::Invalid(format!("unknown WAL record type {ty}")));
    }
    let mut b = WalBatch::default();
    let n_defs = r.len_prefix(r.remaining())?;
    for _ in 0..n_defs {
        let series_ref = ref_of(r.uvarint()?)?;
        let kb = r.u8()?;
        let kind =
            SeriesKind::from_byte(kb).ok_or_else(|| DecodeError::Invalid(format!("unknown series kind {kb}")))?;
        let n = r.len_prefix(MAX_LABELS)?;
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.prefixed_str()?.into();
            let value = r.prefixed_str()?.into();
            labels.push(Label { name, value });
        }
        b.defs.push(WalSeries {
            series_ref,
            kind,
            labels: Labels::from_sorted_unchecked(labels),
        });
    }
    let n_groups = r.len_prefix(r.remaining())?;
    for _ in 0..n_groups {
        let series_ref = ref_of(r.uvarint()?)?;
        // Each sample takes at least 9 bytes (1 varint byte + 8 value bytes).
        let n = r.len_prefix(MAX_GROUP_SAMPLES.min(r.remaining() / 9))?;
        let mut ts = Vec::with_capacity(n);
        let mut prev = 0i64;
        for i in 0..n {
            let d = r.ivarint()?;
            prev = if i == 0 { d } else { prev.wrapping_add(d) };
            ts.push(prev);
        }
        let raw = r.bytes(n * 8)?;
        let values = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        b.groups.push(WalSeriesSamples { series_ref, ts, values });
    }
    let n_pos = r.len_prefix(r.remaining())?;
    for _ in 0..n_pos {
        let s = r.prefixed_str()?.to_string();
        let p = r.ivarint()?;
        b.positions.push((s, p));
    }
    if !r.is_empty() {
        return Err(DecodeError::Invalid(format!(
            "{} trailing bytes in WAL record",
            r.remaining()
        )));
    }
    Ok(b)
}

fn ref_of(v: u64) -> Result<u32, DecodeError> {
    u32::try_from(v).map_err(|_| DecodeError::Invalid(format!("series ref {v} out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LabelLimits;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn batch_roundtrip(
            groups in proptest::collection::vec((any::<u32>(), proptest::collection::vec((any::<i64>(), any::<u64>()), 0..20)), 0..5),
            positions in proptest::collection::vec(("[a-z./0-9]{0,12}", any::<i64>()), 0..3),
        ) {
            let defs = vec![WalSeries {
                series_ref: 7,
                kind: SeriesKind::MONEY,
                labels: Labels::from_pairs([("__name__", "cost"), ("tenant", "t1")], &LabelLimits::default()).unwrap(),
            }];
            let gs: Vec<WalSeriesSamples> = groups.iter().map(|(r, s)| WalSeriesSamples {
                series_ref: *r, ts: s.iter().map(|x| x.0).collect(), values: s.iter().map(|x| x.1).collect(),
            }).collect();
            let positions: Vec<(String, i64)> = positions;
            let mut out = Vec::new();
            encode_batch(&defs, gs.iter().map(|g| (g.series_ref, &g.ts, &g.values)), &positions, &mut out);
            let b = decode_batch(&out).unwrap();
            prop_assert_eq!(b.defs, defs);
            prop_assert_eq!(b.groups, gs);
            prop_assert_eq!(b.positions, positions);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_batch(&bytes);
        }
    }
}
