//! Series identity: a metric name plus a sorted label set.
//!
//! Invariants of [`Labels`]: sorted by name, names unique, no empty values (an
//! empty value means "label absent", as in Prometheus), `__name__` present when
//! built through [`LabelsBuilder::build`] with a metric name.

use std::fmt;
use std::sync::Arc;

/// The reserved label holding the metric name.
pub const METRIC_NAME: &str = "__name__";
/// The first-class tenant label: every series belongs to exactly one tenant.
pub const TENANT: &str = "tenant";

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ModelError {
    #[error("invalid metric name {0:?}: must match [a-zA-Z_:][a-zA-Z0-9_:]*")]
    InvalidMetricName(String),
    #[error("invalid label name {0:?}: must match [a-zA-Z_][a-zA-Z0-9_]* and not start with \"__\"")]
    InvalidLabelName(String),
    #[error("duplicate label name {0:?}")]
    DuplicateLabel(String),
    #[error("too many labels: {count} (limit {limit})")]
    TooManyLabels { count: usize, limit: usize },
    #[error("label name {name:?} is {len} bytes long (limit {limit})")]
    LabelNameTooLong { name: String, len: usize, limit: usize },
    #[error("value of label {name:?} is {len} bytes long (limit {limit})")]
    LabelValueTooLong { name: String, len: usize, limit: usize },
    #[error("series has no metric name (__name__)")]
    MissingMetricName,
}

/// Limits on label sets; enforced on every write path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct LabelLimits {
    pub max_labels: usize,
    pub max_name_len: usize,
    pub max_value_len: usize,
}

impl Default for LabelLimits {
    fn default() -> Self {
        LabelLimits {
            max_labels: 64,
            max_name_len: 128,
            max_value_len: 2048,
        }
    }
}

/// One label. Names and values are [`LabelStr`]s: nearly all are short (`tenant`,
/// `us-east-1`, `db-r6g-0042`), and a series' label set is built on ingest's hot path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    pub name: LabelStr,
    pub value: LabelStr,
}

/// A label name or value: text of up to 24 bytes is stored inline (no allocation),
/// longer text on the heap. Compares, orders and hashes like `str`.
pub type LabelStr = compact_str::CompactString;

/// An immutable, sorted label set. Cheap to clone (shared).
///
/// Carries the hash of its labels, computed once when built: a label set is hashed many
/// times in its life (the ingest consumer's store lookup, the writer's kind check and
/// insert, every query that groups by it), and hashing a dozen strings each time was a
/// tenth of the ingest writer thread. `Hash` feeds only that value; equality compares the
/// labels (after the hashes, which differ for almost all unequal sets).
///
/// The hash is keyed by a seed drawn once per process, so label sets chosen to collide
/// cannot be precomputed (the same defence as a randomly seeded `HashMap`); it is never
/// stored or sent anywhere.
#[derive(Clone)]
pub struct Labels {
    set: Arc<[Label]>,
    hash: u64,
}

/// The process's seed for [`Labels`] hashes.
fn labels_hasher() -> &'static foldhash::fast::RandomState {
    static SEED: std::sync::OnceLock<foldhash::fast::RandomState> = std::sync::OnceLock::new();
    SEED.get_or_init(Default::default)
}

impl PartialEq for Labels {
    fn eq(&self, other: &Labels) -> bool {
        Arc::ptr_eq(&self.set, &other.set) || (self.hash == other.hash && self.set == other.set)
    }
}

impl Eq for Labels {}

impl std::hash::Hash for Labels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// By the labels, name then value, pair by pair (the Prometheus series order).
impl Ord for Labels {
    fn cmp(&self, other: &Labels) -> std::cmp::Ordering {
        self.set.cmp(&other.set)
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Labels) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Labels {
    /// The one constructor: every label set gets its hash here.
    fn new(set: Arc<[Label]>) -> Labels {
        use std::hash::BuildHasher;
        let hash = labels_hasher().hash_one(&*set);
        Labels { set, hash }
    }

    /// An empty label set.
    pub fn empty() -> Labels {
        Labels::new(Arc::from(Vec::new()))
    }

    /// Builds from pairs, validating names, limits and uniqueness. Empty values are dropped.
    pub fn from_pairs<N: Into<LabelStr>, V: Into<LabelStr>>(
        pairs: impl IntoIterator<Item = (N, V)>,
        limits: &LabelLimits,
    ) -> Result<Labels, ModelError> {
        let mut b = LabelsBuilder::new();
        for (n, v) in pairs {
            b.push(n, v);
        }
        b.build(limits)
    }

    /// Builds from already-validated, sorted, unique labels (e.g. decoded from our own
    /// checksummed files). Sorting is re-established defensively; no other validation.
    pub fn from_sorted_unchecked(mut labels: Vec<Label>) -> Labels {
        labels.sort();
        labels.dedup_by(|a, b| a.name == b.name);
        labels.retain(|l| !l.value.is_empty());
        Labels::new(Arc::from(labels))
    }

    /// The value of label `name`. Small sets are scanned: comparing for equality looks
    /// at a name's bytes only when its length matches, while a binary search reads the
    /// bytes of every name it visits, each a separate allocation (a cache miss apiece
    /// when a query touches 10k label sets once each).
    pub fn get(&self, name: &str) -> Option<&str> {
        if self.set.len() <= 16 {
            return self.set.iter().find(|l| l.name == name).map(|l| l.value.as_str());
        }
        self.set
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .ok()
            .map(|i| self.set[i].value.as_str())
    }

    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    pub fn tenant(&self) -> Option<&str> {
        self.get(TENANT)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.set.iter()
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    pub fn as_slice(&self) -> &[Label] {
        &self.set
    }

    /// A copy without the metric name (PromQL drops it from most function results).
    pub fn without_metric_name(&self) -> Labels {
        self.without(&[METRIC_NAME])
    }

    pub fn without(&self, names: &[&str]) -> Labels {
        Labels::new(
            self.set
                .iter()
                .filter(|l| !names.contains(&l.name.as_str()))
                .cloned()
                .collect(),
        )
    }

    pub fn only(&self, names: &[&str]) -> Labels {
        Labels::new(
            self.set
                .iter()
                .filter(|l| names.contains(&l.name.as_str()))
                .cloned()
                .collect(),
        )
    }

    /// Returns a copy with `name` set to `value` (removed when `value` is empty).
    pub fn with(&self, name: &str, value: &str) -> Labels {
        let mut v: Vec<Label> = self.set.iter().filter(|l| l.name != name).cloned().collect();
        if !value.is_empty() {
            v.push(Label {
                name: name.into(),
                value: value.into(),
            });
            v.sort();
        }
        Labels::new(Arc::from(v))
    }

    /// Approximate heap bytes, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.set
            .iter()
            .map(|l| l.name.len() + l.value.len() + 2 * std::mem::size_of::<String>())
            .sum()
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Prometheus text form: `name{a="b", c="d"}`.
impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.metric_name() {
            f.write_str(n)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for l in self.set.iter().filter(|l| l.name != METRIC_NAME) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

/// Collects labels, then validates once in [`LabelsBuilder::build`].
#[derive(Debug, Default, Clone)]
pub struct LabelsBuilder {
    labels: Vec<Label>,
}

impl LabelsBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `n` labels without growing.
    pub fn with_capacity(n: usize) -> Self {
        LabelsBuilder {
            labels: Vec::with_capacity(n),
        }
    }

    pub fn metric(&mut self, name: impl Into<LabelStr>) -> &mut Self {
        self.push(METRIC_NAME, name)
    }

    pub fn push(&mut self, name: impl Into<LabelStr>, value: impl Into<LabelStr>) -> &mut Self {
        self.labels.push(Label {
            name: name.into(),
            value: value.into(),
        });
        self
    }

    pub fn build(mut self, limits: &LabelLimits) -> Result<Labels, ModelError> {
        self.labels.retain(|l| !l.value.is_empty());
        self.labels.sort();
        for w in self.labels.windows(2) {
            if w[0].name == w[1].name {
                return Err(ModelError::DuplicateLabel(w[0].name.to_string()));
            }
        }
        if self.labels.len() > limits.max_labels {
            return Err(ModelError::TooManyLabels {
                count: self.labels.len(),
                limit: limits.max_labels,
            });
        }
        for l in &self.labels {
            if l.name.len() > limits.max_name_len {
                return Err(ModelError::LabelNameTooLong {
                    name: l.name.to_string(),
                    len: l.name.len(),
                    limit: limits.max_name_len,
                });
            }
            if l.value.len() > limits.max_value_len {
                return Err(ModelError::LabelValueTooLong {
                    name: l.name.to_string(),
                    len: l.value.len(),
                    limit: limits.max_value_len,
                });
            }
            if l.name == METRIC_NAME {
                if !is_valid_metric_name(&l.value) {
                    return Err(ModelError::InvalidMetricName(l.value.to_string()));
                }
            } else if !is_valid_label_name(&l.name) {
                return Err(ModelError::InvalidLabelName(l.name.to_string()));
            }
        }
        Ok(Labels::new(Arc::from(self.labels)))
    }
}

/// Byte classes of Prometheus names, one table lookup per byte (ingest checks the
/// metric and label names of every event; a chain of range tests per byte was 4 % of it).
const FIRST_LABEL: u8 = 1; // [a-zA-Z_]
const LABEL: u8 = 2; // [a-zA-Z0-9_]
const METRIC_EXTRA: u8 = 4; // ':' (allowed anywhere in metric names)

static NAME_BYTES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphabetic() || b == b'_' {
            t[c] = FIRST_LABEL | LABEL;
        } else if b.is_ascii_digit() {
            t[c] = LABEL;
        } else if b == b':' {
            t[c] = METRIC_EXTRA;
        }
        c += 1;
    }
    t
};

/// `first` for the first byte, `rest` for the others (bit masks of `NAME_BYTES`).
fn name_matches(s: &str, first: u8, rest: u8) -> bool {
    let b = s.as_bytes();
    match b.split_first() {
        Some((&c, tail)) => {
            NAME_BYTES[c as usize] & first != 0 && tail.iter().all(|&c| NAME_BYTES[c as usize] & rest != 0)
        }
        None => false,
    }
}

/// Prometheus metric-name rule: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_metric_name(s: &str) -> bool {
    name_matches(s, FIRST_LABEL | METRIC_EXTRA, LABEL | METRIC_EXTRA)
}

/// Prometheus's `LabelNameRE`, `[a-zA-Z_][a-zA-Z0-9_]*`, reserved `__` names included
/// (what PromQL functions and the HTTP API accept as a label name).
pub fn is_label_name_syntax(s: &str) -> bool {
    name_matches(s, FIRST_LABEL, LABEL)
}

/// A label name a series may carry: [`is_label_name_syntax`] and not starting with `__`
/// (reserved for tally's own labels such as `__name__`).
pub fn is_valid_label_name(s: &str) -> bool {
    !s.starts_with("__") && is_label_name_syntax(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The byte-table name checks answer exactly like the rules written as character
        /// tests, on ASCII and non-ASCII text.
        #[test]
        fn name_tables_match_the_rules(
            s in proptest::prop_oneof!["[a-zA-Z0-9_:é -]{0,6}", "(?s).{0,4}"],
        ) {
            let first_label = |c: char| c.is_ascii_alphabetic() || c == '_';
            let label = |c: char| c.is_ascii_alphanumeric() || c == '_';
            let mut cs = s.chars();
            let syntax = cs.next().is_some_and(first_label) && cs.all(label);
            let mut cs = s.chars();
            let metric = cs.next().is_some_and(|c| first_label(c) || c == ':') && cs.all(|c| label(c) || c == ':');
            proptest::prop_assert_eq!(is_label_name_syntax(&s), syntax);
            proptest::prop_assert_eq!(is_valid_label_name(&s), syntax && !s.starts_with("__"));
            proptest::prop_assert_eq!(is_valid_metric_name(&s), metric);
        }
    }

    #[test]
    fn sorted_and_validated() {
        let l = Labels::from_pairs(
            [("__name__", "cpu"), ("tenant", "a"), ("az", "x")],
            &LabelLimits::default(),
        )
        .unwrap();
        let names: Vec<_> = l.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["__name__", "az", "tenant"]);
        assert_eq!(l.tenant(), Some("a"));
        assert_eq!(l.to_string(), "cpu{az=\"x\", tenant=\"a\"}");
    }

    #[test]
    fn rejects_bad_input() {
        let lim = LabelLimits::default();
        assert!(matches!(
            Labels::from_pairs([("__name__", "1cpu")], &lim),
            Err(ModelError::InvalidMetricName(_))
        ));
        assert!(matches!(
            Labels::from_pairs([("a-b", "x")], &lim),
            Err(ModelError::InvalidLabelName(_))
        ));
        assert!(matches!(
            Labels::from_pairs([("a", "x"), ("a", "y")], &lim),
            Err(ModelError::DuplicateLabel(_))
        ));
        let small = LabelLimits { max_labels: 1, ..lim };
        assert!(matches!(
            Labels::from_pairs([("a", "x"), ("b", "y")], &small),
            Err(ModelError::TooManyLabels { count: 2, limit: 1 })
        ));
        let short = LabelLimits {
            max_value_len: 2,
            ..lim
        };
        assert!(matches!(
            Labels::from_pairs([("a", "xyz")], &short),
            Err(ModelError::LabelValueTooLong { .. })
        ));
    }

    #[test]
    fn empty_values_mean_absent() {
        let l = Labels::from_pairs([("a", ""), ("b", "1")], &LabelLimits::default()).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l.get("a"), None);
    }

    proptest::proptest! {
        /// `get` finds exactly the pairs given, in small (scanned) and large (searched)
        /// sets, and nothing else.
        #[test]
        fn get_finds_every_label_and_only_those(
            pairs in proptest::collection::btree_map("[a-z][a-z_]{0,5}", "[a-z0-9]{1,4}", 0..40),
            absent in "[a-z][a-z_]{0,6}",
        ) {
            let limits = LabelLimits { max_labels: 64, ..LabelLimits::default() };
            let l = Labels::from_pairs(pairs.clone(), &limits).unwrap();
            for (k, v) in &pairs {
                proptest::prop_assert_eq!(l.get(k), Some(v.as_str()));
            }
            proptest::prop_assert_eq!(l.get(&absent), pairs.get(&absent).map(String::as_str));
        }
    }

    proptest::proptest! {
        /// Label sets built apart (from pairs in any order, or derived by `with`/`without`)
        /// are equal, hash alike and compare `Equal` exactly when their labels are equal,
        /// whatever the cached hashes hold.
        #[test]
        fn equality_and_hash_follow_the_labels(
            a in proptest::collection::btree_map("[a-c]", "[xy]{1,2}", 0..4),
            b in proptest::collection::btree_map("[a-c]", "[xy]{1,2}", 0..4),
        ) {
            use std::hash::BuildHasher;
            let limits = LabelLimits::default();
            let la = Labels::from_pairs(a.clone(), &limits).unwrap();
            let la_rev = Labels::from_pairs(a.clone().into_iter().rev(), &limits).unwrap();
            let lb = Labels::from_pairs(b.clone(), &limits).unwrap();
            let h = std::collections::hash_map::RandomState::new();
            proptest::prop_assert_eq!(&la, &la_rev);
            proptest::prop_assert_eq!(h.hash_one(&la), h.hash_one(&la_rev));
            proptest::prop_assert_eq!(la == lb, a == b);
            proptest::prop_assert_eq!(la.cmp(&lb), a.iter().cmp(b.iter()));
            if a == b {
                proptest::prop_assert_eq!(h.hash_one(&la), h.hash_one(&lb));
            }
            let derived = la.with("zz", "1").without(&["zz"]);
            proptest::prop_assert_eq!(&derived, &la);
            proptest::prop_assert_eq!(h.hash_one(&derived), h.hash_one(&la));
        }
    }
}
