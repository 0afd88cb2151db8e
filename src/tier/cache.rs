//! A byte-bounded LRU of object pages, so repeated queries over tiered partitions do
//! not refetch what they read a moment ago.
//!
//! Pages are fixed-size aligned slices of one object (the last page may be shorter);
//! an object's pages never change, because tiered segment objects are immutable and a
//! key is never reused for different bytes (segment sequence numbers only grow).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

type PageKey = (Arc<str>, u64);

#[derive(Debug)]
pub struct PageCache {
    capacity: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    pages: HashMap<PageKey, (Bytes, u64)>,
    /// Last-use tick → page; the smallest tick is evicted first.
    by_use: BTreeMap<u64, PageKey>,
    tick: u64,
    bytes: u64,
}

impl PageCache {
    pub fn new(capacity: u64) -> PageCache {
        PageCache {
            capacity,
            state: Mutex::new(State::default()),
        }
    }

    pub fn get(&self, object: &Arc<str>, page: u64) -> Option<Bytes> {
        let mut st = self.state.lock();
        st.tick += 1;
        let tick = st.tick;
        let key = (object.clone(), page);
        let (bytes, old) = {
            let entry = st.pages.get_mut(&key)?;
            let old = std::mem::replace(&mut entry.1, tick);
            (entry.0.clone(), old)
        };
        st.by_use.remove(&old);
        st.by_use.insert(tick, key);
        Some(bytes)
    }

    /// Inserts a page, evicting least recently used pages beyond the capacity. A page
    /// larger than the whole cache is not kept.
    pub fn insert(&self, object: &Arc<str>, page: u64, bytes: Bytes) {
        let len = bytes.len() as u64;
        if len > self.capacity {
            return;
        }
        let mut st = self.state.lock();
        st.tick += 1;
        let tick = st.tick;
        let key = (object.clone(), page);
        if let Some((old, old_tick)) = st.pages.insert(key.clone(), (bytes, tick)) {
            st.bytes -= old.len() as u64;
            st.by_use.remove(&old_tick);
        }
        st.by_use.insert(tick, key);
        st.bytes += len;
        while st.bytes > self.capacity {
            let Some((_, victim)) = st.by_use.pop_first() else {
                break;
            };
            if let Some((b, _)) = st.pages.remove(&victim) {
                st.bytes -= b.len() as u64;
            }
        }
    }

    /// Drops every page of `object` (it was deleted or replaced).
    pub fn forget(&self, object: &str) {
        let mut st = self.state.lock();
        let victims: Vec<(PageKey, u64)> = st
            .pages
            .iter()
            .filter(|(k, _)| &*k.0 == object)
            .map(|(k, v)| (k.clone(), v.1))
            .collect();
        for (k, tick) in victims {
            if let Some((b, _)) = st.pages.remove(&k) {
                st.bytes -= b.len() as u64;
            }
            st.by_use.remove(&tick);
        }
    }

    pub fn bytes(&self) -> u64 {
        self.state.lock().bytes
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_within_capacity() {
        let c = PageCache::new(30);
        let a: Arc<str> = Arc::from("a");
        for p in 0..3 {
            c.insert(&a, p, Bytes::from(vec![p as u8; 10]));
        }
        assert_eq!(c.bytes(), 30);
        assert!(c.get(&a, 0).is_some()); // 0 is now the most recent
        c.insert(&a, 3, Bytes::from(vec![3; 10]));
        assert_eq!(c.bytes(), 30);
        assert!(c.get(&a, 1).is_none(), "least recently used page evicted");
        assert_eq!(c.get(&a, 0).unwrap()[0], 0);
        assert_eq!(c.get(&a, 3).unwrap()[0], 3);
        c.insert(&a, 9, Bytes::from(vec![0; 31]));
        assert!(c.get(&a, 9).is_none(), "a page larger than the cache is not kept");
        c.forget("a");
        assert_eq!(c.bytes(), 0);
    }
}
