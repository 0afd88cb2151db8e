//! Which series the current WAL generation has defined already.

/// A dense bit set over series ids. Why not a roaring bitmap: it is asked about every
/// series of every append, and ids are dense and small, so one bit per id is a single
/// load and store, while a roaring insert searched (and, for sorted array containers,
/// shifted) on each call: 3 % of the Kafka writer thread.
#[derive(Debug, Default)]
pub(crate) struct DeclaredSeries {
    words: Vec<u64>,
}

impl DeclaredSeries {
    /// Marks `id`; true if it was not marked before.
    pub fn insert(&mut self, id: u32) -> bool {
        let (w, bit) = ((id / 64) as usize, 1u64 << (id % 64));
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let fresh = self.words[w] & bit == 0;
        self.words[w] |= bit;
        fresh
    }

    pub fn remove(&mut self, id: u32) {
        if let Some(word) = self.words.get_mut((id / 64) as usize) {
            *word &= !(1u64 << (id % 64));
        }
    }

    /// Unmarks every id (keeps the allocation: the next generation declares as many).
    pub fn clear(&mut self) {
        self.words.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        /// Answers like a set under any sequence of inserts, removes and clears.
        #[test]
        fn behaves_like_a_set(ops in proptest::collection::vec((0u8..3, 0u32..300), 0..400)) {
            let (mut d, mut model) = (DeclaredSeries::default(), BTreeSet::new());
            for (op, id) in ops {
                match op {
                    0 => prop_assert_eq!(d.insert(id), model.insert(id)),
                    1 => {
                        d.remove(id);
                        model.remove(&id);
                    }
                    _ => {
                        if id % 16 == 0 {
                            d.clear();
                            model.clear();
                        }
                    }
                }
            }
            for id in 0..320 {
                prop_assert_eq!(!d.insert(id), model.contains(&id));
            }
        }
    }
}
