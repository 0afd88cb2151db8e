//! Per-series memoization of label computations across evaluation steps.

use std::collections::HashMap;

use crate::model::Labels;

/// Memoizes a per-series computation on labels (grouping key, match signature, name
/// dropping, group id) across evaluation steps: a series keeps the same shared
/// `Labels` at every step, so the result is looked up by the allocation's address
/// instead of being recomputed per step. Each entry holds a clone of its input, which
/// keeps that allocation alive and its address from being reused by other labels.
pub(crate) struct LabelMemo<T: Clone, F: FnMut(&Labels) -> T> {
    /// foldhash: the key is one address, SipHash would cost more than the lookup.
    map: HashMap<usize, (Labels, T), foldhash::fast::RandomState>,
    f: F,
}

impl<T: Clone, F: FnMut(&Labels) -> T> LabelMemo<T, F> {
    pub fn new(f: F) -> Self {
        LabelMemo {
            map: HashMap::default(),
            f,
        }
    }

    pub fn get(&mut self, l: &Labels) -> T {
        let key = l.as_slice().as_ptr() as usize;
        if let Some((_, out)) = self.map.get(&key) {
            return out.clone();
        }
        let out = (self.f)(l);
        self.map.insert(key, (l.clone(), out.clone()));
        out
    }

    /// Computes without memoizing, for inputs seen only once.
    pub fn compute(&mut self, l: &Labels) -> T {
        (self.f)(l)
    }
}
