//! Sample values and how a series treats them.

use super::money::Money;

/// How a series' values are represented. Fixed when the series is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ValueKind {
    /// IEEE-754 double (gauges, counters, usage).
    Float,
    /// Exact decimal money in nano-units ([`Money`]).
    Money,
}

/// What happens when a series receives a second sample at a timestamp it already has.
///
/// The rule is deterministic and applied identically in the head, in compaction and
/// at read time; precedence among copies is append order (later wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DupPolicy {
    /// Scraped gauges and counters: an identical re-append is a no-op; a conflicting value
    /// replaces the old one (and is counted in `tally_duplicate_samples_replaced_total`).
    Replace,
    /// Delta series fed by distinct usage events: the values add, because both were
    /// real usage. Re-deliveries of the same event are dropped upstream (ingest
    /// de-duplicates by `event_id`); WAL replay never applies a record twice.
    Sum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SeriesKind {
    pub value: ValueKind,
    pub dup: DupPolicy,
}

impl SeriesKind {
    pub const GAUGE: SeriesKind = SeriesKind {
        value: ValueKind::Float,
        dup: DupPolicy::Replace,
    };
    pub const DELTA: SeriesKind = SeriesKind {
        value: ValueKind::Float,
        dup: DupPolicy::Sum,
    };
    pub const MONEY: SeriesKind = SeriesKind {
        value: ValueKind::Money,
        dup: DupPolicy::Sum,
    };

    /// One byte on disk (see storage-format.md): bit 0 money, bit 1 sum.
    pub fn to_byte(self) -> u8 {
        (matches!(self.value, ValueKind::Money) as u8) | ((matches!(self.dup, DupPolicy::Sum) as u8) << 1)
    }

    pub fn from_byte(b: u8) -> Option<SeriesKind> {
        if b > 3 {
            return None;
        }
        Some(SeriesKind {
            value: if b & 1 != 0 { ValueKind::Money } else { ValueKind::Float },
            dup: if b & 2 != 0 { DupPolicy::Sum } else { DupPolicy::Replace },
        })
    }
}

/// A sample value as the caller supplies it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Float(f64),
    Money(Money),
}

impl Value {
    pub fn to_f64(self) -> f64 {
        match self {
            Value::Float(f) => f,
            Value::Money(m) => m.to_f64(),
        }
    }
}

/// A timestamp (UTC nanoseconds) and a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub ts: i64,
    pub value: Value,
}

/// Raw 64-bit storage of a value of a known kind: f64 bits, or i64 nanos.
#[inline]
pub(crate) fn raw_of(kind: ValueKind, v: Value) -> Option<u64> {
    match (kind, v) {
        (ValueKind::Float, Value::Float(f)) => Some(f.to_bits()),
        (ValueKind::Money, Value::Money(m)) => Some(m.0 as u64),
        _ => None,
    }
}

/// Combines two raw values at the same timestamp by the series' policy; `newer` was appended later.
#[inline]
pub(crate) fn combine(kind: SeriesKind, older: u64, newer: u64) -> u64 {
    match kind.dup {
        DupPolicy::Replace => newer,
        DupPolicy::Sum => match kind.value {
            ValueKind::Float => (f64::from_bits(older) + f64::from_bits(newer)).to_bits(),
            ValueKind::Money => (older as i64).wrapping_add(newer as i64) as u64,
        },
    }
}
