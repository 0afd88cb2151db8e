//! Inverted postings (label name → value → series bitmap) and per-tenant bitmaps.

use std::collections::HashMap;

use roaring::RoaringBitmap;

use super::matcher::{MatchOp, Matcher};
use super::series::SeriesId;
use crate::model::Labels;

/// The set of series ids owned by one tenant. Every series is in exactly one.
#[derive(Debug, Default, Clone)]
pub struct TenantBitmap(pub RoaringBitmap);

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Values of one label name. A hash map, not an ordered one: every new series looks up
/// each of its values (an ordered map compared a dozen strings per lookup, each a cache
/// miss, at 77k instance values); readers that list values sort them.
pub type ValuePostings = FastMap<String, RoaringBitmap>;

#[derive(Debug, Default)]
pub struct Postings {
    by_label: FastMap<String, ValuePostings>,
    tenants: FastMap<String, TenantBitmap>,
    all: RoaringBitmap,
}

impl Postings {
    /// Adds a new series. Names, values and tenants are looked up borrowed and copied
    /// only when new: ingest creating series at a high rate paid two string allocations
    /// per label here, for keys that almost always existed already.
    pub fn add(&mut self, id: SeriesId, labels: &Labels, tenant: &str) {
        for l in labels.iter() {
            let values = match self.by_label.get_mut(l.name.as_str()) {
                Some(v) => v,
                None => self.by_label.entry(l.name.to_string()).or_default(),
            };
            match values.get_mut(l.value.as_str()) {
                Some(b) => b,
                None => values.entry(l.value.to_string()).or_default(),
            }
            .insert(id.0);
        }
        match self.tenants.get_mut(tenant) {
            Some(b) => b,
            None => self.tenants.entry(tenant.to_string()).or_default(),
        }
        .0
        .insert(id.0);
        self.all.insert(id.0);
    }

    pub fn tenant(&self, tenant: &str) -> Option<&TenantBitmap> {
        self.tenants.get(tenant)
    }

    pub fn tenant_names(&self) -> impl Iterator<Item = &String> {
        self.tenants.keys()
    }

    /// In no particular order.
    pub fn values_of(&self, name: &str) -> Option<&ValuePostings> {
        self.by_label.get(name)
    }

    /// Resolves matchers to series ids.
    ///
    /// Every matcher is read as "the series' value for this label (empty when absent)
    /// satisfies it". A matcher that rejects the empty string can only keep series that
    /// have the label: intersect with the union of matching values. One that accepts the
    /// empty string keeps everything except series whose value it rejects: subtract.
    /// Intersections run first so subtractions work on a small set.
    pub fn select(&self, tenant: Option<&str>, matchers: &[Matcher]) -> RoaringBitmap {
        let mut set = match tenant {
            Some(t) => match self.tenants.get(t) {
                Some(b) => b.0.clone(),
                None => return RoaringBitmap::new(),
            },
            None => self.all.clone(),
        };
        let (narrowing, widening): (Vec<&Matcher>, Vec<&Matcher>) = matchers.iter().partition(|m| !m.matches_empty());
        for m in narrowing {
            if set.is_empty() {
                return set;
            }
            let values = self.by_label.get(&m.name);
            if m.op == MatchOp::Equal {
                match values.and_then(|v| v.get(&m.value)) {
                    Some(b) => set &= b,
                    None => return RoaringBitmap::new(),
                }
                continue;
            }
            let mut keep = RoaringBitmap::new();
            for (v, b) in values.into_iter().flatten() {
                if m.matches(v) {
                    keep |= b;
                }
            }
            set &= keep;
        }
        for m in widening {
            if set.is_empty() {
                return set;
            }
            if let Some(values) = self.by_label.get(&m.name) {
                if m.op == MatchOp::NotEqual {
                    if let Some(b) = values.get(&m.value) {
                        set -= b;
                    }
                    continue;
                }
                for (v, b) in values {
                    if !m.matches(v) {
                        set -= b;
                    }
                }
            }
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LabelLimits;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied(), &LabelLimits::default()).unwrap()
    }

    proptest! {
        /// Postings resolution agrees with evaluating each matcher on every series' labels.
        #[test]
        fn select_matches_naive_scan(
            series in proptest::collection::vec((0u8..3, proptest::option::of(0u8..3), proptest::option::of(0u8..3)), 1..40),
            ms in proptest::collection::vec((0u8..2, 0u8..4, 0u8..4), 0..4),
            tenant in proptest::option::of(0u8..3),
        ) {
            let mut p = Postings::default();
            let mut all = Vec::new();
            for (i, (t, a, b)) in series.iter().enumerate() {
                let mut pairs = vec![("__name__".to_string(), "m".to_string()), ("tenant".to_string(), format!("t{t}"))];
                if let Some(a) = a { pairs.push(("a".into(), format!("v{a}"))); }
                if let Some(b) = b { pairs.push(("b".into(), format!("v{b}"))); }
                let l = Labels::from_pairs(pairs, &LabelLimits::default()).unwrap();
                p.add(SeriesId(i as u32), &l, &format!("t{t}"));
                all.push(l);
            }
            let ops = [MatchOp::Equal, MatchOp::NotEqual, MatchOp::Regex, MatchOp::NotRegex];
            let matchers: Vec<Matcher> = ms.iter().map(|&(n, op, v)| {
                let name = if n == 0 { "a" } else { "b" };
                let value = match v { 0 => "".to_string(), 1 => "v1".to_string(), 2 => "v[01]".to_string(), _ => "v.*".to_string() };
                Matcher::new(ops[op as usize], name, value).unwrap()
            }).collect();
            let tname = tenant.map(|t| format!("t{t}"));
            let got = p.select(tname.as_deref(), &matchers);
            for (i, l) in all.iter().enumerate() {
                let want = tname.as_deref().is_none_or(|t| l.tenant() == Some(t))
                    && matchers.iter().all(|m| m.matches(l.get(&m.name).unwrap_or("")));
                prop_assert_eq!(got.contains(i as u32), want, "series {} {:?}", i, l);
            }
        }
    }

    #[test]
    fn unknown_tenant_sees_nothing() {
        let mut p = Postings::default();
        p.add(SeriesId(0), &labels(&[("__name__", "m"), ("tenant", "a")]), "a");
        assert!(p.select(Some("b"), &[]).is_empty());
        assert_eq!(p.select(Some("a"), &[]).len(), 1);
    }
}
