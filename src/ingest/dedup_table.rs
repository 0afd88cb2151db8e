//! The in-memory set of dedup keys: key → generation, open addressing.
//!
//! Why not a `HashMap`: every accepted event probes this set, and at millions of keys each
//! probe is a cache miss (a sixth of the Kafka writer thread). Keys are xxh3 hashes, so
//! their low bits already are a uniform slot number: the slot of a key is known without
//! hashing, and [`DedupTable::prefetch`] can start loading it a few events ahead. Slots
//! are 24 bytes (a `u128` in two halves, so no 16-byte alignment padding), not 32.
//!
//! Linear probing with backward-shift deletion (no tombstones): invariant — every key
//! sits in the run of occupied slots that starts at its home slot, with no empty slot
//! between its home and its position. Load stays at most 3/4.

/// One slot; `gen == EMPTY` marks a free slot (generation ids skip that value).
#[derive(Clone, Copy)]
struct Slot {
    lo: u64,
    hi: u64,
    gen: u32,
}

const EMPTY: u32 = u32::MAX;
const FREE: Slot = Slot {
    lo: 0,
    hi: 0,
    gen: EMPTY,
};
const MIN_SLOTS: usize = 1024;

pub(crate) struct DedupTable {
    slots: Vec<Slot>,
    len: usize,
}

impl Default for DedupTable {
    fn default() -> Self {
        DedupTable {
            slots: vec![FREE; MIN_SLOTS],
            len: 0,
        }
    }
}

/// A generation id as stored: `EMPTY` is mapped onto its neighbour (ids are compared for
/// equality with the generation that inserted a key; after 4 billion generations two
/// could share an id, which only makes eviction keep a key one generation longer).
fn stored_gen(gen: u32) -> u32 {
    if gen == EMPTY {
        EMPTY - 1
    } else {
        gen
    }
}

impl DedupTable {
    pub fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, key: u128) -> usize {
        key as usize & self.mask()
    }

    /// Starts loading `key`'s home slot into the cache.
    #[inline]
    pub fn prefetch(&self, key: u128) {
        if let Some(s) = self.slots.get(self.home(key)) {
            crate::cpu::prefetch_read(s as *const Slot as *const u8);
        }
    }

    /// The slot holding `key`, or the empty slot ending its probe run.
    fn find(&self, key: u128) -> (usize, bool) {
        let (lo, hi) = (key as u64, (key >> 64) as u64);
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            let s = &self.slots[i];
            if s.gen == EMPTY {
                return (i, false);
            }
            if s.lo == lo && s.hi == hi {
                return (i, true);
            }
            i = (i + 1) & mask;
        }
    }

    pub fn get(&self, key: u128) -> Option<u32> {
        match self.find(key) {
            (i, true) => Some(self.slots[i].gen),
            _ => None,
        }
    }

    /// Inserts `key` with `gen` unless present; true when inserted.
    pub fn insert_new(&mut self, key: u128, gen: u32) -> bool {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        match self.find(key) {
            (_, true) => false,
            (i, false) => {
                self.slots[i] = Slot {
                    lo: key as u64,
                    hi: (key >> 64) as u64,
                    gen: stored_gen(gen),
                };
                self.len += 1;
                true
            }
        }
    }

    /// Sets `key`'s generation, inserting it if absent.
    pub fn upsert(&mut self, key: u128, gen: u32) {
        if !self.insert_new(key, gen) {
            let (i, _) = self.find(key);
            self.slots[i].gen = stored_gen(gen);
        }
    }

    /// Removes `key` if present.
    pub fn remove(&mut self, key: u128) {
        let (mut hole, found) = self.find(key);
        if !found {
            return;
        }
        self.len -= 1;
        // Backward shift: move later members of the run into the hole when their home is
        // not inside (hole, j], keeping the run invariant without tombstones.
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if s.gen == EMPTY {
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

    /// Removes `key` if it belongs to generation `gen`.
    pub fn remove_if_gen(&mut self, key: u128, gen: u32) {
        if self.get(key) == Some(stored_gen(gen)) {
            self.remove(key);
        }
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![FREE; size]);
        self.len = 0;
        for s in old.into_iter().filter(|s| s.gen != EMPTY) {
            let (i, _) = self.find((s.hi as u128) << 64 | s.lo as u128);
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
        /// Answers like a `HashMap` under inserts, upserts, removes and generation
        /// evictions, with keys crowded into few home slots (long runs that wrap around
        /// the end of the table) as well as spread out.
        #[test]
        fn behaves_like_a_map(
            ops in proptest::collection::vec((0u8..4, 0u64..3000, 0u32..4, any::<bool>()), 0..3000),
        ) {
            let mut t = DedupTable::default();
            let mut model: HashMap<u128, u32> = HashMap::new();
            for (op, k, gen, crowd) in ops {
                // Crowded keys share home slots 1020..1023 (near the end: runs wrap).
                let key = if crowd { (k as u128) << 64 | (1020 + k % 4) as u128 } else { (k as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15) };
                match op {
                    0 => {
                        let fresh = !model.contains_key(&key);
                        if fresh {
                            model.insert(key, gen);
                        }
                        prop_assert_eq!(t.insert_new(key, gen), fresh);
                    }
                    1 => {
                        t.upsert(key, gen);
                        model.insert(key, gen);
                    }
                    2 => {
                        t.remove(key);
                        model.remove(&key);
                    }
                    _ => {
                        t.remove_if_gen(key, gen);
                        if model.get(&key) == Some(&gen) {
                            model.remove(&key);
                        }
                    }
                }
                prop_assert_eq!(t.len(), model.len());
            }
            for (k, g) in &model {
                prop_assert_eq!(t.get(*k), Some(*g));
            }
            for k in 0u64..3000 {
                for key in [(k as u128) << 64 | (1020 + k % 4) as u128, (k as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15)] {
                    prop_assert_eq!(t.get(key), model.get(&key).copied());
                }
            }
        }
    }

    #[test]
    fn the_empty_marker_is_never_stored() {
        let mut t = DedupTable::default();
        assert!(t.insert_new(7, EMPTY));
        assert_eq!(t.get(7), Some(EMPTY - 1));
        t.remove_if_gen(7, EMPTY);
        assert_eq!(t.get(7), None);
    }
}
