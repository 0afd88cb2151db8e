//! The price book: effective-dated unit prices per SKU (TOML).
//!
//! ```toml
//! [[price]]
//! sku = "compute.m5.large"
//! unit = "hour"                        # pricing unit; an event with another `unit` is unpriced
//! unit_price = "0.096"                 # exact decimal (string), at most 9 fractional digits
//! currency = "USD"                     # ISO 4217
//! valid_from = "2026-01-01T00:00:00Z"  # inclusive; optional (default: always)
//! valid_to = "2027-01-01T00:00:00Z"    # exclusive; optional (default: forever)
//! ```
//! Periods of one SKU may not overlap. Cost = quantity × unit price, computed exactly in
//! nano-units ([`Money::mul_decimal`]).

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::event::{is_iso4217, parse_rfc3339_ns};
use crate::model::Money;

#[derive(Debug, thiserror::Error)]
pub enum PriceBookError {
    #[error("reading price book {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing price book: {0}")]
    Parse(String),
    #[error("price book entry {index} (sku {sku:?}): {reason}")]
    Entry { index: usize, sku: String, reason: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    sku: String,
    unit: String,
    unit_price: String,
    currency: String,
    valid_from: Option<String>,
    valid_to: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    #[serde(default)]
    price: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub unit: String,
    pub unit_price: Money,
    pub currency: String,
    pub valid_from: i64,
    pub valid_to: i64,
}

/// Why an event with a SKU got no computed cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unpriced {
    UnknownSku,
    NoPriceAtTime,
    UnitMismatch,
    CurrencyMismatch,
    QuantityTooPrecise,
    Overflow,
}

impl Unpriced {
    pub fn as_str(self) -> &'static str {
        match self {
            Unpriced::UnknownSku => "unknown_sku",
            Unpriced::NoPriceAtTime => "no_price_at_time",
            Unpriced::UnitMismatch => "unit_mismatch",
            Unpriced::CurrencyMismatch => "currency_mismatch",
            Unpriced::QuantityTooPrecise => "quantity_too_precise",
            Unpriced::Overflow => "cost_overflow",
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct PriceBook {
    /// foldhash: every priced event looks its SKU up; SipHash cost more than the lookup.
    by_sku: HashMap<String, Vec<Price>, foldhash::fast::RandomState>,
}

impl PriceBook {
    pub fn load(path: &Path) -> Result<PriceBook, PriceBookError> {
        let text = std::fs::read_to_string(path).map_err(|source| PriceBookError::Io {
            path: path.display().to_string(),
            source,
        })?;
        PriceBook::parse(&text)
    }

    pub fn parse(text: &str) -> Result<PriceBook, PriceBookError> {
        let file: PriceFile = toml::from_str(text).map_err(|e| PriceBookError::Parse(e.to_string()))?;
        let mut by_sku: HashMap<String, Vec<Price>, foldhash::fast::RandomState> = HashMap::default();
        for (index, e) in file.price.into_iter().enumerate() {
            let err = |reason: String| PriceBookError::Entry {
                index,
                sku: e.sku.clone(),
                reason,
            };
            let unit_price: Money = e
                .unit_price
                .parse()
                .map_err(|x: crate::model::MoneyError| err(x.to_string()))?;
            if !is_iso4217(&e.currency) {
                return Err(err(format!("unknown currency {:?}", e.currency)));
            }
            let ts = |s: &Option<String>, default: i64| -> Result<i64, PriceBookError> {
                match s {
                    None => Ok(default),
                    Some(s) => parse_rfc3339_ns(s).ok_or_else(|| err(format!("invalid RFC 3339 time {s:?}"))),
                }
            };
            let valid_from = ts(&e.valid_from, i64::MIN)?;
            let valid_to = ts(&e.valid_to, i64::MAX)?;
            if valid_from >= valid_to {
                return Err(err("valid_from must be before valid_to".into()));
            }
            by_sku.entry(e.sku.clone()).or_default().push(Price {
                unit: e.unit.clone(),
                unit_price,
                currency: e.currency.clone(),
                valid_from,
                valid_to,
            });
        }
        for (sku, v) in by_sku.iter_mut() {
            v.sort_by_key(|p| p.valid_from);
            for w in v.windows(2) {
                if w[1].valid_from < w[0].valid_to {
                    return Err(PriceBookError::Entry {
                        index: 0,
                        sku: sku.clone(),
                        reason: "overlapping validity periods".into(),
                    });
                }
            }
        }
        Ok(PriceBook { by_sku })
    }

    pub fn len(&self) -> usize {
        self.by_sku.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_sku.is_empty()
    }

    /// The price in effect for `sku` at `ts`.
    pub fn lookup(&self, sku: &str, ts: i64) -> Result<&Price, Unpriced> {
        let v = self.by_sku.get(sku).ok_or(Unpriced::UnknownSku)?;
        v.iter()
            .find(|p| p.valid_from <= ts && ts < p.valid_to)
            .ok_or(Unpriced::NoPriceAtTime)
    }

    /// Exact cost of `qty_nanos` units of `sku` at `ts`, with its currency.
    pub fn price(
        &self,
        sku: &str,
        ts: i64,
        unit: Option<&str>,
        currency: Option<&str>,
        qty_nanos: Option<i64>,
    ) -> Result<(Money, &str), Unpriced> {
        let p = self.lookup(sku, ts)?;
        if unit.is_some_and(|u| u != p.unit) {
            return Err(Unpriced::UnitMismatch);
        }
        if currency.is_some_and(|c| c != p.currency) {
            return Err(Unpriced::CurrencyMismatch);
        }
        let q = qty_nanos.ok_or(Unpriced::QuantityTooPrecise)?;
        let cost = Money::mul_decimal(q, p.unit_price).ok_or(Unpriced::Overflow)?;
        Ok((cost, &p.currency))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOK: &str = r#"
[[price]]
sku = "m5"
unit = "hour"
unit_price = "0.096"
currency = "USD"
valid_to = "2026-01-01T00:00:00Z"

[[price]]
sku = "m5"
unit = "hour"
unit_price = "0.1"
currency = "USD"
valid_from = "2026-01-01T00:00:00Z"
"#;

    #[test]
    fn effective_dated_exact_prices() {
        let b = PriceBook::parse(BOOK).unwrap();
        let t2025 = parse_rfc3339_ns("2025-06-01T00:00:00Z").unwrap();
        let t2026 = parse_rfc3339_ns("2026-06-01T00:00:00Z").unwrap();
        let q = "2.5".parse::<Money>().unwrap().nanos();
        assert_eq!(
            b.price("m5", t2025, Some("hour"), None, Some(q)).unwrap().0.to_string(),
            "0.24"
        );
        assert_eq!(
            b.price("m5", t2026, None, Some("USD"), Some(q)).unwrap().0.to_string(),
            "0.25"
        );
        assert_eq!(
            b.price("x", t2026, None, None, Some(q)).unwrap_err(),
            Unpriced::UnknownSku
        );
        assert_eq!(
            b.price("m5", t2026, Some("gb"), None, Some(q)).unwrap_err(),
            Unpriced::UnitMismatch
        );
        assert_eq!(
            b.price("m5", t2026, None, Some("EUR"), Some(q)).unwrap_err(),
            Unpriced::CurrencyMismatch
        );
    }

    #[test]
    fn rejects_overlaps_and_bad_prices() {
        let overlap = BOOK.replace(
            "valid_from = \"2026-01-01T00:00:00Z\"",
            "valid_from = \"2025-01-01T00:00:00Z\"",
        );
        assert!(PriceBook::parse(&overlap).is_err());
        assert!(PriceBook::parse(&BOOK.replace("0.096", "0.0000000001")).is_err());
        assert!(PriceBook::parse(&BOOK.replace("\"USD\"", "\"XYZ\"")).is_err());
    }
}
