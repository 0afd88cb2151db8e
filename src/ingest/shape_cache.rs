//! Per event shape, what ingest built and validated once: the series it writes.
//!
//! An event's *shape* is every field that decides its series and its shape checks —
//! metric, tenant, sku, unit, currency and labels — hashed as read from the payload
//! ([`shape_key`]), before any validation. So the cache answers two questions on one
//! probe run of a [`KeyTable`]: "did fields identical to these pass the shape checks"
//! (then validation skips them, see `event::validate`) and "which series does this event
//! write" (keyed also by a [`price_tag`]: pricing adds an `unpriced` label or picks the
//! cost series' currency, and it depends on the event time).
//!
//! Several shapes can write the same series: an event carrying its cost in USD and one
//! priced in USD from the price book, or the same labels in another order or spacing.
//! So a shape seen for the first time is looked up by its [`series_key`] (the decoded
//! parts that decide the series) before anything is built: shapes share one entry, and
//! its label sets are built and checked against the store once.
use xxhash_rust::xxh3::xxh3_128;

use super::event::{Event, Reject, RejectCode};
use super::key_table::{KeyTable, NO_TAG};
use super::pricing::Unpriced;
use super::scan::{Fields, LabelsField};

/// Shapes kept before the cache starts over: bounds its memory under a flood of shapes,
/// including many shapes of few series (every entry has at least one shape).
const MAX_SHAPES: usize = 1_000_000;

pub(crate) struct ShapeCache<T> {
    /// (shape, price tag) → index in `entries`.
    by_shape: KeyTable,
    /// series key → index in `entries`.
    by_series: KeyTable,
    entries: Vec<T>,
    max_shapes: usize,
}

impl<T> Default for ShapeCache<T> {
    fn default() -> Self {
        ShapeCache::with_limit(MAX_SHAPES)
    }
}

impl<T> ShapeCache<T> {
    /// A cache that starts over once it holds `max_shapes` shapes.
    fn with_limit(max_shapes: usize) -> Self {
        ShapeCache {
            by_shape: KeyTable::default(),
            by_series: KeyTable::default(),
            entries: Vec::new(),
            max_shapes,
        }
    }

    /// Starts loading `shape`'s slot: call as soon as the key is known, then do other work.
    #[inline]
    pub fn prefetch(&self, shape: u128) {
        self.by_shape.prefetch(shape);
    }

    /// Whether `shape` has an entry (it passed validation before), under any price tag.
    /// Starts loading that entry too: it is most likely the one about to be used.
    pub fn knows(&self, shape: u128) -> bool {
        match self.by_shape.any_tag(shape) {
            Some(i) => {
                if let Some(e) = self.entries.get(i as usize) {
                    crate::cpu::prefetch_read(e as *const T as *const u8);
                }
                true
            }
            None => false,
        }
    }

    /// The entry of `(shape, tag)`. A new shape takes the entry of its series key (the
    /// key computed by `series_key`), or one `build` makes. A failed `series_key` or
    /// `build` adds nothing.
    pub fn get_or_try_insert<E>(
        &mut self,
        shape: u128,
        tag: u32,
        series_key: impl FnOnce() -> Result<u128, E>,
        build: impl FnOnce() -> Result<T, E>,
    ) -> Result<&mut T, E> {
        let i = match self.by_shape.get(shape, tag) {
            Some(i) => i as usize,
            None => {
                if self.by_shape.len() >= self.max_shapes {
                    self.entries.clear();
                    self.by_shape.clear();
                    self.by_series.clear();
                }
                let key = series_key()?;
                let i = match self.by_series.get(key, NO_TAG) {
                    Some(i) => i as usize,
                    None => {
                        self.entries.push(build()?);
                        let i = self.entries.len() - 1;
                        // i < max_shapes (entries never outnumber shapes), far below
                        // u32::MAX for any limit in use, so it is stored as is.
                        self.by_series.insert_new(key, NO_TAG, i as u32);
                        i
                    }
                };
                self.by_shape.insert_new(shape, tag, i as u32);
                i
            }
        };
        // In bounds: `i` came from the tables, which hold only indexes of `entries` (all
        // three are cleared together).
        Ok(&mut self.entries[i])
    }
}

/// The shape of `f` (see the module doc), using `buf` as scratch.
pub(crate) fn shape_key(f: &Fields<'_>, buf: &mut Vec<u8>) -> u128 {
    buf.clear();
    // Parts end in 0xff, a byte UTF-8 text never holds: the parts cannot run together.
    // Absent and empty fields read the same, as validation treats them the same.
    let mut part = |s: Option<&str>| {
        buf.extend_from_slice(s.unwrap_or("").as_bytes());
        buf.push(0xff);
    };
    part(f.metric.as_deref());
    part(f.tenant.as_deref());
    part(f.sku.as_deref());
    part(f.unit.as_deref());
    part(f.currency.as_deref());
    // The labels come last, tagged by their form, so the forms never read alike.
    match &f.labels {
        None => buf.push(0),
        Some(LabelsField::Text(t)) => {
            buf.push(1);
            buf.extend_from_slice(t.as_bytes());
        }
        Some(LabelsField::Pairs(p)) => {
            buf.push(2);
            for (k, v) in p {
                for s in [k, v] {
                    buf.extend_from_slice(s.as_bytes());
                    buf.push(0xff);
                }
            }
        }
    }
    xxh3_128(buf)
}

/// What pricing decides about an event's series, beyond its shape: the `unpriced` reason,
/// and whether the event writes a cost series and in which currency (the event's own, or
/// the price book's for a computed cost). Currencies are ISO 4217 codes, three ASCII
/// letters (the event's is checked by validation, the price book's at load), so they
/// pack into 24 bits, none of them zero.
pub(crate) fn price_tag(unpriced: Option<Unpriced>, cost_currency: Option<&str>) -> u32 {
    let reason = unpriced.map_or(0, |u| u as u32 + 1);
    let currency = cost_currency.map_or(0, |c| c.bytes().take(3).fold(0u32, |acc, b| acc << 8 | b as u32));
    reason << 24 | currency
}

/// The identity of the series an event writes: the decoded parts that decide its usage
/// and cost label sets (metric, tenant, sku, unit, unpriced reason, cost currency and
/// labels), using `buf` as scratch.
pub(crate) fn series_key(
    ev: &Event<'_>,
    cost_currency: Option<&str>,
    unpriced: Option<&str>,
    buf: &mut Vec<u8>,
) -> Result<u128, Reject> {
    buf.clear();
    let mut part = |s: &str| {
        buf.extend_from_slice(s.as_bytes());
        buf.push(0xff);
    };
    part(&ev.metric);
    part(&ev.tenant);
    part(ev.sku.as_deref().unwrap_or(""));
    part(ev.unit.as_deref().unwrap_or(""));
    part(unpriced.unwrap_or(""));
    // A currency is a valid ISO 4217 code (never empty), so "" cannot collide with it.
    part(cost_currency.unwrap_or(""));
    // Sorted by name (names are unique after validation): the order they came in does not
    // decide the series.
    let mut pairs = ev.labels.pairs().ok_or_else(unreadable_labels)?.into_owned();
    pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (k, v) in &pairs {
        part(k);
        part(v);
    }
    Ok(xxh3_128(buf))
}

/// A scanner's labels text that does not list again: the scanner never produces one.
pub(crate) fn unreadable_labels() -> Reject {
    Reject {
        code: RejectCode::InvalidJson,
        reason: "labels: unreadable object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many shapes of one series (e.g. labels respaced in every event) do not grow the
    /// cache past its limit; entries and shapes start over together and stay consistent.
    #[test]
    fn a_flood_of_shapes_stays_bounded() {
        let mut c: ShapeCache<u64> = ShapeCache::with_limit(100);
        let mut builds = 0;
        for shape in 0..1000u128 {
            let shape = shape.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
            let v = *c
                .get_or_try_insert(
                    shape,
                    0,
                    || Ok::<_, ()>(7),
                    || {
                        builds += 1;
                        Ok(42)
                    },
                )
                .unwrap();
            assert_eq!(v, 42);
            assert!(c.by_shape.len() <= 100 && c.entries.len() <= c.by_shape.len());
            assert!(c.knows(shape));
        }
        // One build per start-over: the shapes shared the series' entry in between.
        assert_eq!(builds, 10);
    }
}
