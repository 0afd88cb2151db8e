//! WAL files: a 16-byte header, then records `u32le len | u32le crc32c(payload) | payload`.
//!
//! Replay stops at the first record that is incomplete or fails its checksum, truncates
//! the file there (logging what was cut) and carries on with the next generation: a torn
//! tail is the normal result of a crash mid-write, and never a reason to refuse to open.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::record::{decode_batch, WalBatch};

const MAGIC: &[u8; 8] = b"TALLYWAL";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 16;
const RECORD_HEADER_LEN: usize = 8;
/// Largest record accepted (a single append batch). Larger batches must be split by the caller.
pub const MAX_RECORD_LEN: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("WAL file {path} is not a tally WAL (bad header)")]
    BadHeader { path: PathBuf },
    #[error("WAL record of {len} bytes exceeds the {max}-byte limit; split the batch")]
    RecordTooLarge { len: usize, max: usize },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// When an append counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before acknowledging every batch: survives power loss.
    EveryBatch,
    /// Acknowledge once written to the OS (survives a process crash); a background
    /// fsync bounds what a power loss can take to this interval.
    Interval(Duration),
}

pub fn file_name(gen: u64) -> String {
    format!("{gen:020}.wal")
}

/// Generations present in `dir`, ascending.
pub fn list_generations(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut gens = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(gens),
        Err(e) => {
            return Err(WalError::Io {
                path: dir.to_path_buf(),
                source: e,
            })
        }
    };
    for ent in rd {
        let ent = ent.map_err(io_err(dir))?;
        let name = ent.file_name();
        let name = name.to_string_lossy();
        if let Some(g) = name.strip_suffix(".wal").and_then(|s| s.parse::<u64>().ok()) {
            gens.push(g);
        }
    }
    gens.sort_unstable();
    Ok(gens)
}

/// Appends records to one generation file.
pub struct WalWriter {
    path: PathBuf,
    file: Arc<File>,
    gen: u64,
    policy: FsyncPolicy,
    bytes: u64,
    dirty: bool,
    last_sync: Instant,
    /// Observed fsync latencies are reported here (seconds).
    pub on_fsync: Option<Arc<dyn Fn(f64) + Send + Sync>>,
}

impl WalWriter {
    /// Creates generation `gen` in `dir` (fsyncing the directory so the file survives).
    pub fn create(dir: &Path, gen: u64, policy: FsyncPolicy) -> Result<WalWriter, WalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(file_name(gen));
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&VERSION.to_le_bytes());
        file.write_all(&header).map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))?;
        crate::store::fsutil::sync_dir(dir).map_err(io_err(dir))?;
        Ok(WalWriter {
            path,
            file: Arc::new(file),
            gen,
            policy,
            bytes: HEADER_LEN as u64,
            dirty: false,
            last_sync: Instant::now(),
            on_fsync: None,
        })
    }

    pub fn generation(&self) -> u64 {
        self.gen
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes one record and makes it durable according to the policy before returning.
    pub fn append(&mut self, payload: &[u8]) -> Result<(), WalError> {
        if payload.len() > MAX_RECORD_LEN {
            return Err(WalError::RecordTooLarge {
                len: payload.len(),
                max: MAX_RECORD_LEN,
            });
        }
        let mut head = [0u8; RECORD_HEADER_LEN];
        head[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        head[4..].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        let mut f: &File = &self.file;
        // Two writes into the page cache; a crash between them leaves a torn record, which
        // replay trims. The ack below happens only after both (and fsync if required).
        f.write_all(&head).map_err(io_err(&self.path))?;
        f.write_all(payload).map_err(io_err(&self.path))?;
        self.bytes += (RECORD_HEADER_LEN + payload.len()) as u64;
        self.dirty = true;
        match self.policy {
            FsyncPolicy::EveryBatch => self.sync()?,
            FsyncPolicy::Interval(d) => {
                if self.last_sync.elapsed() >= d {
                    self.sync()?;
                }
            }
        }
        Ok(())
    }

    /// fsyncs outstanding writes.
    pub fn sync(&mut self) -> Result<(), WalError> {
        if !self.dirty {
            return Ok(());
        }
        let t = Instant::now();
        self.file.sync_data().map_err(io_err(&self.path))?;
        if let Some(cb) = &self.on_fsync {
            cb(t.elapsed().as_secs_f64());
        }
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayStats {
    pub files: usize,
    pub records: usize,
    /// Bytes cut from torn or corrupt tails, per file.
    pub trimmed: Vec<(PathBuf, u64)>,
}

/// Replays every generation after `checkpoint`, in order, calling `apply(gen, batch)`.
/// Torn/corrupt tails are truncated on disk and logged.
pub fn replay(
    dir: &Path,
    checkpoint: Option<u64>,
    mut apply: impl FnMut(u64, WalBatch),
) -> Result<ReplayStats, WalError> {
    let mut stats = ReplayStats::default();
    for gen in list_generations(dir)? {
        if checkpoint.is_some_and(|c| gen <= c) {
            continue;
        }
        let path = dir.join(file_name(gen));
        let mut buf = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .map_err(io_err(&path))?;
        stats.files += 1;
        if buf.len() < HEADER_LEN {
            // Created but the header never made it to disk: nothing was acknowledged here.
            if !buf.is_empty() {
                tracing::warn!(file = %path.display(), "WAL file shorter than its header; treating as empty");
                trim(&path, 0, buf.len() as u64, &mut stats)?;
            }
            continue;
        }
        if &buf[..8] != MAGIC {
            return Err(WalError::BadHeader { path });
        }
        let mut pos = HEADER_LEN;
        let good_end = loop {
            if pos == buf.len() {
                break pos;
            }
            if buf.len() - pos < RECORD_HEADER_LEN {
                break pos;
            }
            let len = u32::from_le_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
            let crc = u32::from_le_bytes([buf[pos + 4], buf[pos + 5], buf[pos + 6], buf[pos + 7]]);
            let start = pos + RECORD_HEADER_LEN;
            if len > MAX_RECORD_LEN || buf.len() - start < len {
                break pos;
            }
            let payload = &buf[start..start + len];
            if crc32c::crc32c(payload) != crc {
                break pos;
            }
            match decode_batch(payload) {
                Ok(b) => apply(gen, b),
                Err(e) => {
                    tracing::warn!(file = %path.display(), offset = pos, error = %e, "undecodable WAL record");
                    break pos;
                }
            }
            stats.records += 1;
            pos = start + len;
        };
        if good_end < buf.len() {
            trim(&path, good_end as u64, buf.len() as u64, &mut stats)?;
        }
    }
    Ok(stats)
}

fn trim(path: &Path, at: u64, len: u64, stats: &mut ReplayStats) -> Result<(), WalError> {
    tracing::warn!(file = %path.display(), offset = at, bytes = len - at, "trimming torn or corrupt WAL tail");
    let f = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
    f.set_len(at).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    stats.trimmed.push((path.to_path_buf(), len - at));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::encode_batch;

    fn payload(i: i64) -> Vec<u8> {
        let mut out = Vec::new();
        let ts = vec![i];
        let vals = vec![i as u64];
        encode_batch(
            &[],
            std::iter::once((1u32, &ts, &vals)),
            &[("src".to_string(), i)],
            &mut out,
        );
        out
    }

    fn write_records(dir: &Path, gen: u64, n: i64) -> PathBuf {
        let mut w = WalWriter::create(dir, gen, FsyncPolicy::EveryBatch).unwrap();
        for i in 0..n {
            w.append(&payload(i)).unwrap();
        }
        dir.join(file_name(gen))
    }

    fn replayed(dir: &Path) -> (Vec<i64>, ReplayStats) {
        let mut seen = Vec::new();
        let stats = replay(dir, None, |_, b| seen.push(b.positions[0].1)).unwrap();
        (seen, stats)
    }

    #[test]
    fn every_truncation_point_keeps_a_prefix() {
        let tmp = tempfile::tempdir().unwrap();
        let path = write_records(tmp.path(), 1, 5);
        let full = fs::read(&path).unwrap();
        for cut in 0..full.len() {
            fs::write(&path, &full[..cut]).unwrap();
            let (seen, _) = replayed(tmp.path());
            assert!(seen.iter().copied().eq(0..seen.len() as i64), "cut {cut}: {seen:?}");
            // Trimmed to a record boundary: a second replay sees the same and trims nothing.
            let (again, stats) = replayed(tmp.path());
            assert_eq!(again, seen);
            assert!(stats.trimmed.is_empty());
        }
    }

    #[test]
    fn flipped_byte_stops_at_the_damaged_record() {
        let tmp = tempfile::tempdir().unwrap();
        let path = write_records(tmp.path(), 1, 5);
        let mut bytes = fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0x40; // inside the last record's payload
        fs::write(&path, &bytes).unwrap();
        let (seen, stats) = replayed(tmp.path());
        assert_eq!(seen, [0, 1, 2, 3]);
        assert_eq!(stats.trimmed.len(), 1);
    }

    #[test]
    fn checkpointed_generations_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        write_records(tmp.path(), 1, 2);
        write_records(tmp.path(), 2, 3);
        let mut gens = Vec::new();
        replay(tmp.path(), Some(1), |g, _| gens.push(g)).unwrap();
        assert_eq!(gens, [2, 2, 2]);
    }

    #[test]
    fn foreign_file_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(file_name(3)), b"definitely not a wal file").unwrap();
        let e = replay(tmp.path(), None, |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("00000000000000000003.wal"), "{e}");
    }
}
