//! Where each series of the store sits in one segment: series id → local ordinal.
//!
//! Every read of a series asks each overlapping segment for its ordinal, so this lookup
//! runs once per series and segment on every query. Series ids are dense within an
//! open store, and a segment usually holds most of them (every active series lands in
//! every flush of a partition), so the map is a plain array indexed by id: one load,
//! from memory a scan in id order walks sequentially. A hash map probe costs a hash and
//! a random miss into a table several times larger. Segments holding only a few of the
//! ids (after heavy series churn) keep a hash map, so memory stays proportional to the
//! segment's own series.

use std::collections::HashMap;

use crate::index::SeriesId;

/// Marks an id the segment does not hold (local ordinals are below the segment's
/// series count, which is far below `u32::MAX`).
const ABSENT: u32 = u32::MAX;

/// An array is used while it has at most this many slots per held series.
const DENSE_SLOTS_PER_SERIES: usize = 4;

#[derive(Debug, Clone, Default)]
pub(crate) struct LocalOrdinals {
    /// `dense[id] = ordinal`, [`ABSENT`] where the segment lacks the id; empty when
    /// `sparse` is used.
    dense: Vec<u32>,
    sparse: HashMap<SeriesId, u32>,
}

impl LocalOrdinals {
    /// Builds the map from `(id, ordinal)` pairs with distinct ids.
    pub fn from_pairs(pairs: Vec<(SeriesId, u32)>) -> LocalOrdinals {
        let slots = pairs.iter().map(|(id, _)| id.0 as usize + 1).max().unwrap_or(0);
        if slots <= pairs.len().saturating_mul(DENSE_SLOTS_PER_SERIES) {
            let mut dense = vec![ABSENT; slots];
            for (id, ord) in pairs {
                // In bounds: `slots` exceeds every id.
                dense[id.0 as usize] = ord;
            }
            LocalOrdinals {
                dense,
                sparse: HashMap::new(),
            }
        } else {
            LocalOrdinals {
                dense: Vec::new(),
                sparse: pairs.into_iter().collect(),
            }
        }
    }

    #[inline]
    pub fn get(&self, id: SeriesId) -> Option<u32> {
        if self.sparse.is_empty() {
            self.dense.get(id.0 as usize).copied().filter(|&o| o != ABSENT)
        } else {
            self.sparse.get(&id).copied()
        }
    }

    /// The ids held, in no particular order.
    pub fn ids(&self) -> Box<dyn Iterator<Item = SeriesId> + '_> {
        if self.sparse.is_empty() {
            Box::new(
                self.dense
                    .iter()
                    .enumerate()
                    .filter(|(_, &o)| o != ABSENT)
                    .map(|(i, _)| SeriesId(i as u32)),
            )
        } else {
            Box::new(self.sparse.keys().copied())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Dense or sparse, the map answers exactly like a hash map of the same pairs.
        #[test]
        fn answers_like_a_hash_map(
            ids in proptest::collection::btree_set(0u32..5000, 0..300),
            spread in 1u32..40,
            probes in proptest::collection::vec(0u32..200_000, 0..200),
        ) {
            let pairs: Vec<(SeriesId, u32)> =
                ids.iter().enumerate().map(|(i, &id)| (SeriesId(id * spread), i as u32)).collect();
            let model: HashMap<SeriesId, u32> = pairs.iter().copied().collect();
            let map = LocalOrdinals::from_pairs(pairs);
            for p in probes.into_iter().chain(ids.iter().map(|id| id * spread)) {
                prop_assert_eq!(map.get(SeriesId(p)), model.get(&SeriesId(p)).copied());
            }
            let mut got: Vec<SeriesId> = map.ids().collect();
            got.sort();
            let mut want: Vec<SeriesId> = model.keys().copied().collect();
            want.sort();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn few_ids_spread_wide_use_a_hash_map() {
        let map = LocalOrdinals::from_pairs(vec![(SeriesId(3), 0), (SeriesId(1_000_000), 1)]);
        assert!(map.dense.is_empty());
        assert_eq!(map.get(SeriesId(1_000_000)), Some(1));
        let map = LocalOrdinals::from_pairs(vec![(SeriesId(3), 0), (SeriesId(5), 1)]);
        assert_eq!(map.dense.len(), 6);
        assert_eq!(map.get(SeriesId(5)), Some(1));
        assert_eq!(map.get(SeriesId(4)), None);
        assert_eq!(map.get(SeriesId(6)), None);
    }
}
