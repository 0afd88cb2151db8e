//! A map from a 128-bit hash and a 32-bit tag to a `u32`, by open addressing: the dedup
//! set (event key → generation) and the series cache (event shape → cache entry).
//!
//! Why not a `HashMap`: every event probes both, and at millions of keys each probe is a
//! cache miss (a sixth of the Kafka writer thread for dedup, a tenth of the consumer for
//! the series cache). Keys are xxh3 hashes, so their low bits already are a uniform slot
//! number: a key's slot is known without hashing, and [`KeyTable::prefetch`] can start
//! loading it while other work goes on. A slot is 24 bytes: the hash in two halves (no
//! 16-byte alignment padding), the tag and the value.
//!
//! The tag is part of the key but not of the slot choice: every entry of one hash lives in
//! the same probe run, so [`KeyTable::any_tag`] asks "is this hash known under any tag".
//!
//! Linear probing with backward-shift deletion (no tombstones): invariant — every key
//! sits in the run of occupied slots that starts at its home slot, with no empty slot
//! between its home and its position. Load stays at most 3/4.

use crate::mem::HugeSlice;

/// One slot; `val == EMPTY` marks a free slot (stored values skip that value).
#[derive(Clone, Copy)]
struct Slot {
    lo: u64,
    hi: u64,
    tag: u32,
    val: u32,
}

const EMPTY: u32 = u32::MAX;

/// The tag of tables whose keys need none (dedup keys, series keys).
pub(crate) const NO_TAG: u32 = 0;
const FREE: Slot = Slot {
    lo: 0,
    hi: 0,
    tag: 0,
    val: EMPTY,
};
const MIN_SLOTS: usize = 1024;

pub(crate) struct KeyTable {
    /// Huge-page backed once large: its pages are touched in random order (see [`crate::mem`]).
    slots: HugeSlice<Slot>,
    len: usize,
}

impl Default for KeyTable {
    fn default() -> Self {
        KeyTable {
            slots: HugeSlice::filled(MIN_SLOTS, FREE),
            len: 0,
        }
    }
}

/// A value as stored: `u32::MAX` marks free slots, so it is stored as its neighbour. The
/// dedup set stores generation ids (after 4 billion generations two could share an id,
/// which only makes eviction keep a key one generation longer); the series cache stores
/// indexes below its size limit, which never reach it.
pub(crate) fn stored(val: u32) -> u32 {
    val.min(EMPTY - 1)
}

impl KeyTable {
    pub fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, hash: u128) -> usize {
        hash as usize & self.mask()
    }

    /// Starts loading `hash`'s home slot into the cache.
    #[inline]
    pub fn prefetch(&self, hash: u128) {
        if let Some(s) = self.slots.get(self.home(hash)) {
            crate::cpu::prefetch_read(s as *const Slot as *const u8);
        }
    }

    /// Walks `hash`'s probe run: the index of the first slot `hit` accepts, or of the
    /// empty slot ending the run (`false`).
    #[inline]
    fn probe(&self, hash: u128, hit: impl Fn(&Slot) -> bool) -> (usize, bool) {
        let (lo, hi) = (hash as u64, (hash >> 64) as u64);
        let mask = self.mask();
        let mut i = self.home(hash);
        loop {
            let s = &self.slots[i];
            if s.val == EMPTY {
                return (i, false);
            }
            if s.lo == lo && s.hi == hi && hit(s) {
                return (i, true);
            }
            i = (i + 1) & mask;
        }
    }

    fn find(&self, hash: u128, tag: u32) -> (usize, bool) {
        self.probe(hash, |s| s.tag == tag)
    }

    pub fn get(&self, hash: u128, tag: u32) -> Option<u32> {
        match self.find(hash, tag) {
            (i, true) => Some(self.slots[i].val),
            _ => None,
        }
    }

    /// The value of some entry of `hash`, whatever its tag.
    pub fn any_tag(&self, hash: u128) -> Option<u32> {
        match self.probe(hash, |_| true) {
            (i, true) => Some(self.slots[i].val),
            _ => None,
        }
    }

    /// Inserts `(hash, tag)` with `val` (as [`stored`]) unless present; true when inserted.
    pub fn insert_new(&mut self, hash: u128, tag: u32, val: u32) -> bool {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        match self.find(hash, tag) {
            (_, true) => false,
            (i, false) => {
                self.slots[i] = Slot {
                    lo: hash as u64,
                    hi: (hash >> 64) as u64,
                    tag,
                    val: stored(val),
                };
                self.len += 1;
                true
            }
        }
    }

    /// Sets `(hash, tag)`'s value, inserting it if absent.
    pub fn upsert(&mut self, hash: u128, tag: u32, val: u32) {
        if !self.insert_new(hash, tag, val) {
            let (i, _) = self.find(hash, tag);
            self.slots[i].val = stored(val);
        }
    }

    /// Removes `(hash, tag)` if present.
    pub fn remove(&mut self, hash: u128, tag: u32) {
        let (hole, found) = self.find(hash, tag);
        if found {
            self.remove_at(hole);
        }
    }

    /// Keeps only the entries whose value (as [`stored`]) `keep` accepts, in one pass over
    /// the slots: cheaper than a probe per removed key when a large share goes at once.
    pub fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        // Removing at `i` shifts later members of the run back into `i`, so `i` is looked
        // at again. Entries only ever move backwards along their run: one that wraps from
        // the table's start (already kept) to its end is looked at twice, harmlessly; an
        // entry not yet looked at never moves into the part already passed.
        let mut i = 0;
        while i < self.slots.len() {
            let v = self.slots[i].val;
            if v != EMPTY && !keep(v) {
                self.remove_at(i);
            } else {
                i += 1;
            }
        }
    }

    /// Empties slot `hole` (occupied), keeping the run invariant.
    fn remove_at(&mut self, mut hole: usize) {
        self.len -= 1;
        // Backward shift: move later members of the run into the hole when their home is
        // not inside (hole, j], keeping the run invariant without tombstones.
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if s.val == EMPTY {
                break;
            }
            let home = (s.lo as usize) & mask;
            // Distance from home to j vs from hole to j (cyclic).
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = FREE;
    }

    /// Empties the table, keeping its size.
    pub fn clear(&mut self) {
        self.slots.fill(FREE);
        self.len = 0;
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, HugeSlice::filled(size, FREE));
        self.len = 0;
        for s in old.iter().copied().filter(|s| s.val != EMPTY) {
            let (i, _) = self.find((s.hi as u128) << 64 | s.lo as u128, s.tag);
            self.slots[i] = s;
            self.len += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// Answers like a `HashMap` keyed by (hash, tag) under inserts, upserts, removes
        /// and retains, with hashes crowded into few home slots (long runs that wrap around
        /// the end of the table) as well as spread out, and several tags per hash.
        #[test]
        fn behaves_like_a_map(
            ops in proptest::collection::vec((0u8..5, 0u64..3000, 0u32..3, 0u32..4, any::<bool>()), 0..3000),
        ) {
            let mut t = KeyTable::default();
            let mut model: HashMap<(u128, u32), u32> = HashMap::new();
            let hash_of = |k: u64, crowd: bool| {
                // Crowded hashes share home slots 1020..1023 (near the end: runs wrap).
                if crowd { (k as u128) << 64 | (1020 + k % 4) as u128 } else { (k as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15) }
            };
            for (op, k, tag, val, crowd) in ops {
                let hash = hash_of(k, crowd);
                match op {
                    0 => {
                        let fresh = !model.contains_key(&(hash, tag));
                        if fresh {
                            model.insert((hash, tag), val);
                        }
                        prop_assert_eq!(t.insert_new(hash, tag, val), fresh);
                    }
                    1 => {
                        t.upsert(hash, tag, val);
                        model.insert((hash, tag), val);
                    }
                    2 => {
                        t.remove(hash, tag);
                        model.remove(&(hash, tag));
                    }
                    // Rarely (it empties a quarter of the table): drop one value.
                    3 if k % 50 == 0 => {
                        t.retain(|v| v != val);
                        model.retain(|_, v| *v != val);
                    }
                    _ => {
                        let any = (0..3).any(|tag| model.contains_key(&(hash, tag)));
                        prop_assert_eq!(t.any_tag(hash).is_some(), any);
                    }
                }
                prop_assert_eq!(t.len(), model.len());
            }
            for ((hash, tag), v) in &model {
                prop_assert_eq!(t.get(*hash, *tag), Some(*v));
            }
            for k in 0u64..3000 {
                for hash in [hash_of(k, true), hash_of(k, false)] {
                    for tag in 0..3 {
                        prop_assert_eq!(t.get(hash, tag), model.get(&(hash, tag)).copied());
                    }
                    if let Some(v) = t.any_tag(hash) {
                        prop_assert!((0..3).any(|tag| model.get(&(hash, tag)) == Some(&v)));
                    }
                }
            }
            t.clear();
            prop_assert_eq!(t.len(), 0);
            prop_assert_eq!(t.any_tag(hash_of(1, true)), None);
        }
    }

    /// Past 2 MiB the slots move to huge-page backed memory: growth must carry every key.
    #[test]
    fn keys_survive_growth_into_huge_pages() {
        let mut t = KeyTable::default();
        let key = |i: u64| (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        for i in 0..200_000u64 {
            assert!(t.insert_new(key(i), 0, i as u32));
        }
        assert!(t.slots.len() * std::mem::size_of::<Slot>() >= crate::mem::HUGE_PAGE);
        for i in 0..200_000u64 {
            assert_eq!(t.get(key(i), 0), Some(i as u32));
        }
        assert_eq!(t.get(key(200_000), 0), None);
    }

    #[test]
    fn the_empty_marker_is_never_stored() {
        let mut t = KeyTable::default();
        assert!(t.insert_new(7, 0, EMPTY));
        assert_eq!(t.get(7, 0), Some(EMPTY - 1));
        t.remove(7, 0);
        assert_eq!(t.get(7, 0), None);
    }
}
