//! `event_id` de-duplication over a window, bounded in memory, surviving restarts.
//!
//! Keys are 128-bit xxh3 hashes of `tenant \0 event_id` (a collision among 10^7 keys has
//! probability ~1e-25). They live in generations: one in-memory table maps each key to
//! the generation that inserted it, and each generation has an append-only log file under
//! `<data>/ingest/dedup/`. A new generation starts every `window / 8` or every
//! `max_keys / 8` keys; the oldest generation is dropped once it is older than the window
//! or the total exceeds `max_keys` (memory stays bounded; under extreme rates the
//! effective window shrinks, counted in `tally_ingest_dedup_evicted_total`).
//!
//! **Crash consistency (write-ahead).** Before a batch is appended to the store, its keys
//! are written to the log together with the source positions the batch advances
//! (`topic/partition` → next offset, `http` → request sequence). On load, a record counts
//! only if the store holds every one of its positions (store position ≥ record
//! position): a batch logged but never stored (crash between the two writes) is ignored,
//! so its re-read events are not mistaken for duplicates; a batch stored is always logged
//! first, so its keys survive. SIGKILL loses nothing written (page cache); against power
//! loss the log is fdatasync'ed before the store append when `fsync` is on.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::hash::Hasher;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use xxhash_rust::xxh3::{xxh3_128, Xxh3};

use super::key_table::{self, KeyTable, NO_TAG};

#[derive(Debug, Clone)]
pub struct DedupConfig {
    pub window: Duration,
    pub max_keys: usize,
    /// fdatasync the log before each store append.
    pub fsync: bool,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            window: Duration::from_secs(24 * 3600),
            max_keys: 10_000_000,
            fsync: true,
        }
    }
}

/// Keys are already uniformly random: use their low 64 bits as the hash.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ *b as u64;
        }
    }
    fn write_u128(&mut self, i: u128) {
        self.0 = i as u64;
    }
}

/// The dedup key of an event.
pub fn dedup_key(tenant: &str, event_id: &str) -> u128 {
    // Small: zeroing it is part of every event's cost (longer keys take the streaming path).
    let mut buf = [0u8; 160];
    let n = tenant.len() + 1 + event_id.len();
    if n <= buf.len() {
        buf[..tenant.len()].copy_from_slice(tenant.as_bytes());
        buf[tenant.len() + 1..n].copy_from_slice(event_id.as_bytes());
        return xxh3_128(&buf[..n]);
    }
    let mut h = Xxh3::new();
    h.update(tenant.as_bytes());
    h.update(&[0]);
    h.update(event_id.as_bytes());
    h.digest128()
}

/// A generation: its keys live in the table (valued by `id`) and in its log file only.
struct Gen {
    id: u32,
    created_secs: i64,
    /// Keys it inserted (its share of the table).
    count: usize,
    path: PathBuf,
}

pub struct Dedup {
    dir: PathBuf,
    cfg: DedupConfig,
    /// key → the generation that inserted it (dedup keys use no tag: [`NO_TAG`]).
    map: KeyTable,
    gens: VecDeque<Gen>,
    file: Option<File>,
    buf: Vec<u8>,
    pub evicted: u64,
}

fn now_secs() -> i64 {
    crate::store::now_ns() / 1_000_000_000
}

impl Dedup {
    /// Opens `dir`, keeping only log records whose positions the store holds.
    pub fn open(dir: &Path, cfg: DedupConfig, stored: &dyn Fn(&str) -> Option<i64>) -> io::Result<Dedup> {
        fs::create_dir_all(dir)?;
        let mut names: Vec<(u32, i64, PathBuf)> = Vec::new();
        for ent in fs::read_dir(dir)? {
            let ent = ent?;
            let name = ent.file_name().to_string_lossy().to_string();
            let Some(stem) = name.strip_suffix(".log") else {
                continue;
            };
            let Some((id, created)) = stem.split_once('-') else {
                continue;
            };
            if let (Ok(id), Ok(created)) = (id.parse::<u32>(), created.parse::<i64>()) {
                names.push((id, created, ent.path()));
            }
        }
        names.sort();
        let mut d = Dedup {
            dir: dir.to_path_buf(),
            cfg,
            map: KeyTable::default(),
            gens: VecDeque::new(),
            file: None,
            buf: Vec::new(),
            evicted: 0,
        };
        for (id, created_secs, path) in names {
            let mut bytes = Vec::new();
            File::open(&path)?.read_to_end(&mut bytes)?;
            let mut count = 0;
            for_each_record(&bytes, |positions, ks| {
                if positions.iter().all(|(s, p)| stored(s).is_some_and(|sp| sp >= *p)) {
                    for k in ks {
                        d.map.upsert(*k, NO_TAG, id);
                    }
                    count += ks.len();
                }
            });
            d.gens.push_back(Gen {
                id,
                created_secs,
                count,
                path,
            });
        }
        d.start_gen()?;
        d.evict(now_secs());
        Ok(d)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    pub fn contains(&self, k: u128) -> bool {
        self.map.get(k, NO_TAG).is_some()
    }

    /// Starts loading `k`'s slot: callers checking a batch of keys prefetch a few ahead.
    #[inline]
    pub fn prefetch(&self, k: u128) {
        self.map.prefetch(k);
    }

    /// Inserts `k` if absent; true when it was new (not a duplicate).
    pub fn check_insert(&mut self, k: u128) -> bool {
        let Some(cur) = self.gens.back_mut() else { return true };
        let fresh = self.map.insert_new(k, NO_TAG, cur.id);
        cur.count += fresh as usize;
        fresh
    }

    /// Forgets keys inserted (by `check_insert`, into the current generation) by a batch
    /// that was not stored.
    pub fn rollback(&mut self, keys: &[u128]) {
        for k in keys {
            self.map.remove(*k, NO_TAG);
        }
        if let Some(cur) = self.gens.back_mut() {
            cur.count = cur.count.saturating_sub(keys.len());
        }
    }

    /// Write-ahead: logs the keys of a batch with the positions it advances. Call before
    /// the store append; then rotates/evicts generations.
    pub fn log(&mut self, positions: &[(String, i64)], keys: &[u128]) -> io::Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; 8]);
        self.buf.extend_from_slice(&(positions.len() as u16).to_le_bytes());
        for (s, p) in positions {
            let sb = s.as_bytes();
            self.buf
                .extend_from_slice(&(sb.len().min(u16::MAX as usize) as u16).to_le_bytes());
            self.buf.extend_from_slice(&sb[..sb.len().min(u16::MAX as usize)]);
            self.buf.extend_from_slice(&p.to_le_bytes());
        }
        self.buf.extend_from_slice(&(keys.len() as u32).to_le_bytes());
        for k in keys {
            self.buf.extend_from_slice(&k.to_le_bytes());
        }
        let payload_len = (self.buf.len() - 8) as u32;
        let crc = crc32c::crc32c(&self.buf[8..]);
        self.buf[0..4].copy_from_slice(&payload_len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        if let Some(f) = self.file.as_mut() {
            f.write_all(&self.buf)?;
            if self.cfg.fsync {
                f.sync_data()?;
            }
        }
        let now = now_secs();
        let rotate = self.gens.back().is_some_and(|g| {
            g.count >= (self.cfg.max_keys / 8).max(1)
                || now - g.created_secs >= (self.cfg.window.as_secs() as i64 / 8).max(1)
        });
        if rotate {
            self.start_gen()?;
        }
        self.evict(now);
        Ok(())
    }

    fn start_gen(&mut self) -> io::Result<()> {
        if let Some(f) = self.file.take() {
            f.sync_all()?;
        }
        let id = self.gens.back().map_or(0, |g| g.id.wrapping_add(1));
        let created_secs = now_secs();
        let path = self.dir.join(format!("{id:010}-{created_secs}.log"));
        let f = OpenOptions::new().create(true).append(true).open(&path)?;
        self.file = Some(f);
        self.gens.push_back(Gen {
            id,
            created_secs,
            count: 0,
            path,
        });
        Ok(())
    }

    /// Drops the oldest generations while they are past the window or the table holds
    /// more than `max_keys`: their keys leave the table in one pass over it (no per-key
    /// list is kept in memory: the table's value is the generation), their logs are deleted.
    fn evict(&mut self, now: i64) {
        let window = self.cfg.window.as_secs() as i64;
        let mut remaining = self.map.len();
        let mut dropped = Vec::new();
        while self.gens.len() > 1 {
            let Some(old) = self.gens.front() else { break };
            let too_old = old.created_secs + (window / 8).max(1) < now - window;
            if !too_old && remaining <= self.cfg.max_keys {
                break;
            }
            let Some(old) = self.gens.pop_front() else { break };
            if !too_old {
                self.evicted += old.count as u64;
            }
            remaining = remaining.saturating_sub(old.count);
            dropped.push(key_table::stored(old.id));
            if let Err(e) = fs::remove_file(&old.path) {
                tracing::warn!(path = %old.path.display(), error = %e, "cannot remove old dedup log");
            }
        }
        if !dropped.is_empty() {
            self.map.retain(|gen| !dropped.contains(&gen));
        }
    }
}

/// Calls `f(positions, keys)` for each intact record; stops at the first torn/corrupt one.
fn for_each_record(mut bytes: &[u8], mut f: impl FnMut(&[(String, i64)], &[u128])) {
    while bytes.len() >= 8 {
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        let Some(payload) = bytes.get(8..8 + len) else { return };
        if crc32c::crc32c(payload) != crc {
            return;
        }
        bytes = &bytes[8 + len..];
        let Some((positions, keys)) = decode(payload) else {
            return;
        };
        f(&positions, &keys);
    }
}

type Record = (Vec<(String, i64)>, Vec<u128>);

fn decode(p: &[u8]) -> Option<Record> {
    let mut r = p;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (a, b) = r.split_at_checked(n)?;
        r = b;
        Some(a)
    };
    let np = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
    let mut positions = Vec::with_capacity(np);
    for _ in 0..np {
        let sl = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
        let s = String::from_utf8(take(sl)?.to_vec()).ok()?;
        let pos = i64::from_le_bytes(take(8)?.try_into().ok()?);
        positions.push((s, pos));
    }
    let nk = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
    let kb = take(nk.checked_mul(16)?)?;
    let keys = kb
        .chunks_exact(16)
        .filter_map(|c| c.try_into().ok().map(u128::from_le_bytes))
        .collect();
    Some((positions, keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys are persisted in the dedup logs: the stack-buffer path and the streaming path
    /// must give the same key for every length, across the buffer's size.
    #[test]
    fn key_is_the_same_on_both_paths() {
        for len in 0..400 {
            let (tenant, id) = ("tenant-042", "e".repeat(len));
            let mut h = Xxh3::new();
            h.update(tenant.as_bytes());
            h.update(&[0]);
            h.update(id.as_bytes());
            assert_eq!(dedup_key(tenant, &id), h.digest128(), "event_id of {len} bytes");
        }
    }

    #[test]
    fn survives_reopen_and_ignores_unstored_batches() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DedupConfig {
            fsync: false,
            ..Default::default()
        };
        let (a, b, c) = (dedup_key("t", "a"), dedup_key("t", "b"), dedup_key("t", "c"));
        {
            let mut d = Dedup::open(dir.path(), cfg.clone(), &|_| None).unwrap();
            assert!(d.check_insert(a));
            assert!(!d.check_insert(a));
            d.log(&[("top/0".into(), 10)], &[a]).unwrap();
            assert!(d.check_insert(b));
            d.log(&[("top/0".into(), 20)], &[b]).unwrap();
            assert!(d.check_insert(c));
            d.log(&[("http".into(), 1)], &[c]).unwrap();
        }
        // The store holds top/0 up to 10 only, and no http batch: only `a` is a duplicate.
        let d = Dedup::open(dir.path(), cfg, &|s| (s == "top/0").then_some(10)).unwrap();
        assert!(d.contains(a));
        assert!(!d.contains(b));
        assert!(!d.contains(c));
    }

    #[test]
    fn memory_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DedupConfig {
            fsync: false,
            max_keys: 800,
            ..Default::default()
        };
        let mut d = Dedup::open(dir.path(), cfg, &|_| None).unwrap();
        for i in 0..10_000u32 {
            let k = dedup_key("t", &i.to_string());
            assert!(d.check_insert(k));
            d.log(&[("x/0".into(), i as i64)], &[k]).unwrap();
        }
        assert!(d.len() <= 800, "{}", d.len());
        assert!(d.evicted > 0);
        // The oldest generations went, whole; the newest keys stayed.
        let key = |i: u32| dedup_key("t", &i.to_string());
        assert!(!d.contains(key(0)));
        assert!((9_900..10_000).all(|i| d.contains(key(i))));
        assert_eq!((0..10_000).filter(|i| d.contains(key(*i))).count(), d.len());
        assert!(fs::read_dir(dir.path()).unwrap().count() <= 10);
    }
}
