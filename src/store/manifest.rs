//! The manifest: which segment files are live, the WAL checkpoint, and the durable
//! source positions (Kafka offsets) that were covered by flushed data.
//!
//! Format: a UTF-8 JSON document, a newline, then the trailer line `#crc32c=XXXXXXXX\n`
//! holding the crc32c of the JSON bytes in hex. It is replaced atomically (write new
//! file, fsync, rename over, fsync directory), so a reader sees the old or the new one.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::fsutil::write_atomic;
use super::StoreError;

pub const MANIFEST_FILE: &str = "MANIFEST";
pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentEntry {
    /// Path relative to the data directory.
    pub file: String,
    pub partition_start: i64,
    /// Precedence for duplicate resolution: a higher rank holds newer appends.
    pub rank: u64,
    pub min_t: i64,
    pub max_t: i64,
    pub series: u32,
    pub samples: u64,
    pub bytes: u64,
    /// Object key once the segment is uploaded *and verified*; from then on only the
    /// stub ([`SegmentEntry::stub_file`]) is kept locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiered: Option<String>,
    /// Rollup segments only: the window width (ns) of their aggregates (None: raw data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution_ns: Option<i64>,
    /// Rollup segments only: rank of the single raw segment they were computed from;
    /// a different raw rank means the rollup is stale (recomputed, never read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollup_of: Option<u64>,
}

impl SegmentEntry {
    /// Raw data (not a rollup).
    pub fn is_raw(&self) -> bool {
        self.resolution_ns.is_none()
    }

    /// Local stub of a tiered segment: the file's series table and footer.
    pub fn stub_file(&self) -> String {
        match self.file.strip_suffix(".seg") {
            Some(base) => format!("{base}.stub"),
            None => format!("{}.stub", self.file),
        }
    }

    /// The file this entry keeps in the data directory.
    pub fn local_file(&self) -> String {
        if self.tiered.is_some() {
            self.stub_file()
        } else {
            self.file.clone()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub partition_width_ns: i64,
    /// Next number for a segment file name / rank.
    pub next_seq: u64,
    /// WAL generations up to and including this one are fully contained in segments.
    pub wal_checkpoint: Option<u64>,
    pub segments: Vec<SegmentEntry>,
    /// Source positions (e.g. `topic/partition` → next offset) covered by segments.
    pub source_positions: BTreeMap<String, i64>,
    /// Object keys no longer referenced (compacted or expired) still to be deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tier_garbage: Vec<String>,
}

impl Manifest {
    pub fn new(partition_width_ns: i64) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            partition_width_ns,
            next_seq: 1,
            wal_checkpoint: None,
            segments: Vec::new(),
            source_positions: BTreeMap::new(),
            tier_garbage: Vec::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data structs to JSON cannot fail.
        let mut json = serde_json::to_vec_pretty(self).expect("manifest serialises");
        let crc = crc32c::crc32c(&json);
        json.extend_from_slice(format!("\n#crc32c={crc:08x}\n").as_bytes());
        json
    }

    pub fn decode(bytes: &[u8], file: &str) -> Result<Manifest, StoreError> {
        let corrupt = |reason: String| StoreError::CorruptManifest {
            file: file.to_string(),
            reason,
        };
        let text = std::str::from_utf8(bytes).map_err(|_| corrupt("not UTF-8".into()))?;
        let (json, trailer) = text
            .rsplit_once("\n#crc32c=")
            .ok_or_else(|| corrupt("checksum trailer missing (truncated?)".into()))?;
        let stored = u32::from_str_radix(trailer.trim_end_matches('\n'), 16)
            .map_err(|_| corrupt("malformed checksum trailer".into()))?;
        if trailer.len() != 9 || crc32c::crc32c(json.as_bytes()) != stored {
            return Err(corrupt("checksum mismatch".into()));
        }
        let m: Manifest = serde_json::from_str(json).map_err(|e| corrupt(format!("invalid JSON: {e}")))?;
        if m.version != MANIFEST_VERSION {
            return Err(corrupt(format!("unsupported manifest version {}", m.version)));
        }
        if m.partition_width_ns <= 0 {
            return Err(corrupt(format!(
                "partition width {} must be positive",
                m.partition_width_ns
            )));
        }
        Ok(m)
    }

    pub fn load(dir: &Path) -> Result<Option<Manifest>, StoreError> {
        let path = dir.join(MANIFEST_FILE);
        match std::fs::read(&path) {
            Ok(b) => Manifest::decode(&b, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// Drops the entries `gone` says are gone, queueing the objects of tiered ones for deletion.
    pub fn remove_segments(&mut self, gone: impl Fn(&SegmentEntry) -> bool) {
        let mut kept = Vec::with_capacity(self.segments.len());
        for e in self.segments.drain(..) {
            if gone(&e) {
                if let Some(key) = e.tiered {
                    self.tier_garbage.push(key);
                }
            } else {
                kept.push(e);
            }
        }
        self.segments = kept;
    }

    pub fn store(&self, dir: &Path) -> Result<(), StoreError> {
        let path = dir.join(MANIFEST_FILE);
        write_atomic(&path, &self.encode()).map_err(|source| StoreError::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_damage_is_named() {
        let mut m = Manifest::new(86_400_000_000_000);
        m.source_positions.insert("cost.compute/0".into(), 42);
        let b = m.encode();
        assert_eq!(Manifest::decode(&b, "MANIFEST").unwrap(), m);
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x01;
            if let Ok(got) = Manifest::decode(&c, "data/MANIFEST") {
                panic!("flip at {i} accepted: {got:?}");
            }
        }
        let e = Manifest::decode(&b[..b.len() / 2], "data/MANIFEST").unwrap_err();
        assert!(e.to_string().contains("data/MANIFEST"), "{e}");
    }
}
