//! The JSON event contract and its validation at the edge.
//!
//! One event per Kafka message (or per NDJSON line):
//! `{"event_id": "...", "ts": "2026-11-22T03:00:00.123456789Z" | 1763780400123456789,
//!   "tenant": "acme", "metric": "compute_instance_hours", "value": 1.5,
//!   "unit": "hour", "sku": "compute.m5.large", "cost": "0.144" | 0.144, "currency": "USD",
//!   "labels": {"region": "eu-west-1", "cost_center": "cc-42"}}`
//!
//! Parsing borrows from the input (no copies of unescaped strings). Every rejection
//! carries a machine-readable [`RejectCode`] and a human reason.

use std::borrow::Cow;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::scan::{Fields, LabelsField};
use crate::model::{is_valid_label_name, is_valid_metric_name, LabelLimits, Money, NANOS_PER_UNIT};

/// Machine-readable rejection codes (stable: they appear in DLQ headers, HTTP responses
/// and the `reason` label of `tally_ingest_events_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectCode {
    PayloadTooLarge,
    InvalidJson,
    InvalidType,
    MissingField,
    InvalidEventId,
    InvalidTimestamp,
    TooLate,
    TooFarInFuture,
    InvalidTenant,
    InvalidMetricName,
    ReservedMetric,
    InvalidValue,
    InvalidLabel,
    ReservedLabel,
    TooManyLabels,
    LabelTooLong,
    InvalidCost,
    MissingCurrency,
    UnknownCurrency,
    ValueTooPrecise,
    CostOverflow,
    KindMismatch,
}

impl RejectCode {
    pub const ALL: [RejectCode; 22] = [
        RejectCode::PayloadTooLarge,
        RejectCode::InvalidJson,
        RejectCode::InvalidType,
        RejectCode::MissingField,
        RejectCode::InvalidEventId,
        RejectCode::InvalidTimestamp,
        RejectCode::TooLate,
        RejectCode::TooFarInFuture,
        RejectCode::InvalidTenant,
        RejectCode::InvalidMetricName,
        RejectCode::ReservedMetric,
        RejectCode::InvalidValue,
        RejectCode::InvalidLabel,
        RejectCode::ReservedLabel,
        RejectCode::TooManyLabels,
        RejectCode::LabelTooLong,
        RejectCode::InvalidCost,
        RejectCode::MissingCurrency,
        RejectCode::UnknownCurrency,
        RejectCode::ValueTooPrecise,
        RejectCode::CostOverflow,
        RejectCode::KindMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::PayloadTooLarge => "payload_too_large",
            RejectCode::InvalidJson => "invalid_json",
            RejectCode::InvalidType => "invalid_type",
            RejectCode::MissingField => "missing_field",
            RejectCode::InvalidEventId => "invalid_event_id",
            RejectCode::InvalidTimestamp => "invalid_timestamp",
            RejectCode::TooLate => "too_late",
            RejectCode::TooFarInFuture => "too_far_in_future",
            RejectCode::InvalidTenant => "invalid_tenant",
            RejectCode::InvalidMetricName => "invalid_metric_name",
            RejectCode::ReservedMetric => "reserved_metric",
            RejectCode::InvalidValue => "invalid_value",
            RejectCode::InvalidLabel => "invalid_label",
            RejectCode::ReservedLabel => "reserved_label",
            RejectCode::TooManyLabels => "too_many_labels",
            RejectCode::LabelTooLong => "label_too_long",
            RejectCode::InvalidCost => "invalid_cost",
            RejectCode::MissingCurrency => "missing_currency",
            RejectCode::UnknownCurrency => "unknown_currency",
            RejectCode::ValueTooPrecise => "value_too_precise",
            RejectCode::CostOverflow => "cost_overflow",
            RejectCode::KindMismatch => "kind_mismatch",
        }
    }

    pub fn index(self) -> usize {
        RejectCode::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an event was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct Reject {
    pub code: RejectCode,
    pub reason: String,
}

fn rej(code: RejectCode, reason: impl Into<String>) -> Reject {
    Reject {
        code,
        reason: reason.into(),
    }
}

/// Labels that ingest sets itself; events may not carry them in `labels`.
pub const RESERVED_LABELS: &[&str] = &["tenant", "sku", "unit", "currency", "source_metric", "unpriced"];

/// Validation limits (from `tally serve` flags).
#[derive(Debug, Clone)]
pub struct ValidationLimits {
    /// Largest accepted message / NDJSON line, bytes.
    pub max_payload_bytes: usize,
    /// Events older than `now - max_lateness_ns` are rejected as `too_late`.
    pub max_lateness_ns: i64,
    /// Events newer than `now + max_future_ns` are rejected as `too_far_in_future`.
    pub max_future_ns: i64,
    pub labels: LabelLimits,
    pub max_event_id_bytes: usize,
}

impl Default for ValidationLimits {
    fn default() -> Self {
        ValidationLimits {
            max_payload_bytes: 64 * 1024,
            max_lateness_ns: 48 * 3600 * 1_000_000_000,
            max_future_ns: 10 * 60 * 1_000_000_000,
            labels: LabelLimits::default(),
            max_event_id_bytes: 256,
        }
    }
}

/// Label pairs in input order (duplicates are an error, not "last wins").
#[derive(Debug, Default)]
pub struct LabelPairs<'a>(pub Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de: 'a, 'a> Deserialize<'de> for LabelPairs<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = LabelPairs<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of string label values")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = m.next_entry::<BorrowedStr<'a>, BorrowedStr<'a>>()? {
                    v.push((k.0, val.0));
                }
                Ok(LabelPairs(v))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A string that borrows from the input when it has no escapes.
#[derive(Debug)]
pub struct BorrowedStr<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for BorrowedStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        d.deserialize_str(V).map(BorrowedStr)
    }
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow, default)]
    event_id: Option<BorrowedStr<'a>>,
    #[serde(borrow, default)]
    ts: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tenant: Option<BorrowedStr<'a>>,
    #[serde(borrow, default)]
    metric: Option<BorrowedStr<'a>>,
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
    #[serde(borrow, default)]
    unit: Option<BorrowedStr<'a>>,
    #[serde(borrow, default)]
    sku: Option<BorrowedStr<'a>>,
    #[serde(borrow, default)]
    cost: Option<&'a RawValue>,
    #[serde(borrow, default)]
    currency: Option<BorrowedStr<'a>>,
    #[serde(borrow, default)]
    labels: Option<LabelPairs<'a>>,
}

/// A validated event, still borrowing from its input bytes.
#[derive(Debug)]
pub struct Event<'a> {
    pub event_id: Cow<'a, str>,
    /// UTC nanoseconds.
    pub ts: i64,
    pub tenant: Cow<'a, str>,
    pub metric: Cow<'a, str>,
    pub value: f64,
    /// The usage quantity as an exact decimal in nano-units, when the JSON number has
    /// at most 9 fractional digits and no exponent (needed to price the event).
    pub qty_nanos: Option<i64>,
    pub unit: Option<Cow<'a, str>>,
    pub sku: Option<Cow<'a, str>>,
    pub cost: Option<Money>,
    pub currency: Option<Cow<'a, str>>,
    /// Listed (`Pairs`) whenever the labels were validated here; left as the scanner's
    /// text when the event's shape was known valid (see [`validate`]).
    pub labels: LabelsField<'a>,
}

fn opt_nonempty(s: Option<Cow<'_, str>>) -> Option<Cow<'_, str>> {
    s.filter(|s| !s.is_empty())
}

/// The contract's fields via serde_json: the reference parser, used whenever the fast
/// scanner ([`super::scan`]) declines an input. Its errors are the rejections.
fn parse_fields_serde(bytes: &[u8]) -> Result<Fields<'_>, Reject> {
    let raw: RawEvent<'_> = serde_json::from_slice(bytes).map_err(|e| {
        let code = match e.classify() {
            serde_json::error::Category::Data => RejectCode::InvalidType,
            _ => RejectCode::InvalidJson,
        };
        rej(code, e.to_string())
    })?;
    Ok(Fields {
        event_id: raw.event_id.map(|s| s.0),
        ts: raw.ts.map(RawValue::get),
        tenant: raw.tenant.map(|s| s.0),
        metric: raw.metric.map(|s| s.0),
        value: raw.value.map(RawValue::get),
        unit: raw.unit.map(|s| s.0),
        sku: raw.sku.map(|s| s.0),
        cost: raw.cost.map(RawValue::get),
        currency: raw.currency.map(|s| s.0),
        labels: raw.labels.map(|l| LabelsField::Pairs(l.0)),
    })
}

/// Parses and validates one event. `now_ns` is the wall clock (UTC ns) used for the
/// lateness / future checks.
pub fn parse_event<'a>(bytes: &'a [u8], limits: &ValidationLimits, now_ns: i64) -> Result<Event<'a>, Reject> {
    validate(read_fields(bytes, limits)?, limits, now_ns, || false)
}

/// The contract's fields of one payload, read but not validated: by the fast scanner, or
/// by serde_json when the scanner declines (whose errors are then the rejections).
pub(crate) fn read_fields<'a>(bytes: &'a [u8], limits: &ValidationLimits) -> Result<Fields<'a>, Reject> {
    if bytes.len() > limits.max_payload_bytes {
        return Err(rej(
            RejectCode::PayloadTooLarge,
            format!("payload is {} bytes (limit {})", bytes.len(), limits.max_payload_bytes),
        ));
    }
    match super::scan::scan(bytes) {
        Some(f) => Ok(f),
        None => parse_fields_serde(bytes),
    }
}

/// Validates the contract's fields (shared by the fast scanner and the serde path).
///
/// The *shape* checks (tenant, metric, currency, unit, sku and labels: names, lengths,
/// count, reserved names) depend on those fields alone. `shape_known` is asked once,
/// where the shape checks begin, whether fields identical to these passed them before:
/// then they are skipped, and the labels are not even listed. The outcome is the same
/// either way (no shape check could fail), so the order of the remaining checks, which
/// decides the rejection of an event with several faults, is unchanged.
pub(crate) fn validate<'a>(
    raw: Fields<'a>,
    limits: &ValidationLimits,
    now_ns: i64,
    shape_known: impl FnOnce() -> bool,
) -> Result<Event<'a>, Reject> {
    let event_id = opt_nonempty(raw.event_id).ok_or_else(|| rej(RejectCode::MissingField, "missing event_id"))?;
    if event_id.len() > limits.max_event_id_bytes || has_control(&event_id) {
        return Err(rej(
            RejectCode::InvalidEventId,
            format!(
                "event_id must be at most {} bytes without control characters",
                limits.max_event_id_bytes
            ),
        ));
    }
    let ts_raw = raw.ts.ok_or_else(|| rej(RejectCode::MissingField, "missing ts"))?;
    let ts = parse_ts(ts_raw)?;
    if ts < now_ns.saturating_sub(limits.max_lateness_ns) {
        return Err(rej(
            RejectCode::TooLate,
            format!(
                "event time is {}s before now, beyond the accepted lateness of {}s",
                (now_ns - ts) / 1_000_000_000,
                limits.max_lateness_ns / 1_000_000_000
            ),
        ));
    }
    if ts > now_ns.saturating_add(limits.max_future_ns) {
        return Err(rej(
            RejectCode::TooFarInFuture,
            format!(
                "event time is {}s in the future (limit {}s)",
                (ts - now_ns) / 1_000_000_000,
                limits.max_future_ns / 1_000_000_000
            ),
        ));
    }
    let known = shape_known();
    let tenant = opt_nonempty(raw.tenant).ok_or_else(|| rej(RejectCode::MissingField, "missing tenant"))?;
    if !known && (tenant.len() > limits.labels.max_value_len.min(128) || has_control(&tenant)) {
        return Err(rej(
            RejectCode::InvalidTenant,
            "tenant must be 1..128 bytes without control characters",
        ));
    }
    let metric = opt_nonempty(raw.metric).ok_or_else(|| rej(RejectCode::MissingField, "missing metric"))?;
    if !known && (!is_valid_metric_name(&metric) || metric.len() > limits.labels.max_value_len) {
        return Err(rej(
            RejectCode::InvalidMetricName,
            format!("invalid metric name {metric:?}: must match [a-zA-Z_:][a-zA-Z0-9_:]*"),
        ));
    }
    if !known && metric == "cost" {
        return Err(rej(
            RejectCode::ReservedMetric,
            "metric name \"cost\" is reserved for the money series tally derives",
        ));
    }
    let (value, qty_nanos) = parse_value(raw.value)?;
    let cost = parse_cost(raw.cost)?;
    let currency = opt_nonempty(raw.currency);
    if let Some(c) = &currency {
        if !known && !is_iso4217(c) {
            return Err(rej(
                RejectCode::UnknownCurrency,
                format!("unknown currency {c:?} (ISO 4217 code expected)"),
            ));
        }
    } else if cost.is_some() {
        return Err(rej(RejectCode::MissingCurrency, "cost given without currency"));
    }
    let unit = opt_nonempty(raw.unit);
    let sku = opt_nonempty(raw.sku);
    let labels = match raw.labels {
        Some(l) if known => l,
        labels => LabelsField::Pairs(check_shape_rest(&unit, &sku, labels, limits)?),
    };
    Ok(Event {
        event_id,
        ts,
        tenant,
        metric,
        value,
        qty_nanos,
        unit,
        sku,
        cost,
        currency,
        labels,
    })
}

/// The usage value (a JSON number's raw text): its float, and its exact nano-units when it
/// has at most 9 fractional digits and no exponent (needed to price the event).
fn parse_value(raw: Option<&str>) -> Result<(f64, Option<i64>), Reject> {
    let vtext = raw.ok_or_else(|| rej(RejectCode::MissingField, "missing value"))?;
    if !vtext.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return Err(rej(
            RejectCode::InvalidType,
            format!("value must be a JSON number, got {vtext}"),
        ));
    }
    let qty_nanos = vtext.parse::<Money>().ok().map(|m| m.nanos());
    let value = match qty_nanos.and_then(exact_f64_of_nanos) {
        Some(v) => v,
        None => vtext
            .parse()
            .map_err(|_| rej(RejectCode::InvalidValue, format!("value {vtext} is not a number")))?,
    };
    if !value.is_finite() {
        return Err(rej(RejectCode::InvalidValue, format!("value {vtext} is not finite")));
    }
    Ok((value, qty_nanos))
}

/// The cost (a JSON string or number's raw text) as exact money.
fn parse_cost(raw: Option<&str>) -> Result<Option<Money>, Reject> {
    Ok(match raw {
        None => None,
        Some(t) => {
            let text: Cow<str> = if let Some(inner) = t
                .strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .filter(|x| !x.contains('\\'))
            {
                // A JSON string without escapes: its contents are the text between the quotes.
                Cow::Borrowed(inner)
            } else if t.starts_with('"') {
                serde_json::from_str::<String>(t)
                    .map(Cow::Owned)
                    .map_err(|e| rej(RejectCode::InvalidCost, e.to_string()))?
            } else {
                Cow::Borrowed(t)
            };
            Some(
                text.parse::<Money>()
                    .map_err(|e| rej(RejectCode::InvalidCost, e.to_string()))?,
            )
        }
    })
}

/// The shape checks of unit, sku and labels (in the order the contract lists them); the
/// labels' pairs.
fn check_shape_rest<'a>(
    unit: &Option<Cow<'a, str>>,
    sku: &Option<Cow<'a, str>>,
    labels: Option<LabelsField<'a>>,
    limits: &ValidationLimits,
) -> Result<super::scan::Pairs<'a>, Reject> {
    for (what, v) in [("unit", unit), ("sku", sku)] {
        if let Some(v) = v {
            if v.len() > limits.labels.max_value_len {
                return Err(rej(
                    RejectCode::LabelTooLong,
                    format!("{what} is {} bytes long", v.len()),
                ));
            }
        }
    }
    let labels = match labels {
        None => Vec::new(),
        Some(LabelsField::Pairs(p)) => p,
        Some(text) => text
            .pairs()
            .ok_or_else(|| rej(RejectCode::InvalidJson, "labels: unreadable object"))?
            .into_owned(),
    };
    // tenant + __name__ + unit/sku/unpriced are added to the event's own labels.
    if labels.len() + 5 > limits.labels.max_labels {
        return Err(rej(
            RejectCode::TooManyLabels,
            format!(
                "{} labels (limit {})",
                labels.len(),
                limits.labels.max_labels.saturating_sub(5)
            ),
        ));
    }
    for (i, (k, v)) in labels.iter().enumerate() {
        if !is_valid_label_name(k) {
            return Err(rej(
                RejectCode::InvalidLabel,
                format!("invalid label name {k:?}: must match [a-zA-Z_][a-zA-Z0-9_]* and not start with \"__\""),
            ));
        }
        if RESERVED_LABELS.contains(&k.as_ref()) {
            return Err(rej(
                RejectCode::ReservedLabel,
                format!("label {k:?} is set by tally and may not be given"),
            ));
        }
        if k.len() > limits.labels.max_name_len || v.len() > limits.labels.max_value_len {
            return Err(rej(
                RejectCode::LabelTooLong,
                format!("label {k:?} name or value is too long"),
            ));
        }
        if labels[..i].iter().any(|(k2, _)| k2 == k) {
            return Err(rej(RejectCode::InvalidLabel, format!("duplicate label {k:?}")));
        }
    }
    Ok(labels)
}

/// Whether `s` holds a control character (`char::is_control`: C0, DEL and C1). ASCII
/// text, nearly every id, is checked byte by byte instead of decoding characters.
fn has_control(s: &str) -> bool {
    if s.is_ascii() {
        s.bytes().any(|b| b < 0x20 || b == 0x7f)
    } else {
        s.chars().any(char::is_control)
    }
}

/// The float a decimal of `nanos` nano-units parses to, without parsing it again: when
/// `|nanos| < 2^53` both `nanos` and 1e9 are exact floats, and IEEE division rounds their
/// exact quotient (the decimal's value) correctly — what `str::parse::<f64>` returns.
/// `None` for zero (the text may be `-0`, whose sign the nano count lost) and beyond 2^53.
fn exact_f64_of_nanos(nanos: i64) -> Option<f64> {
    const EXACT: i64 = 1 << 53;
    (nanos != 0 && nanos.abs() < EXACT).then(|| nanos as f64 / NANOS_PER_UNIT as f64)
}

/// `"2026-11-22T03:00:00.123456789Z"` / `"...+02:00"` or integer epoch nanoseconds.
fn parse_ts(text: &str) -> Result<i64, Reject> {
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        parse_rfc3339_ns(inner).ok_or_else(|| {
            rej(
                RejectCode::InvalidTimestamp,
                format!("ts {inner:?} is not RFC 3339 (e.g. 2026-11-22T03:00:00.123456789Z)"),
            )
        })
    } else if text.bytes().all(|c| c.is_ascii_digit() || c == b'-') {
        text.parse::<i64>().map_err(|_| {
            rej(
                RejectCode::InvalidTimestamp,
                format!("ts {text} is out of range for epoch nanoseconds"),
            )
        })
    } else {
        Err(rej(
            RejectCode::InvalidTimestamp,
            format!("ts {text} must be an RFC 3339 string or integer epoch nanoseconds"),
        ))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Parses RFC 3339 (`T` or space separator, fraction up to 9 digits, `Z` or `±HH:MM`).
pub fn parse_rfc3339_ns(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    // At most 4 digits: no overflow.
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b.get(r)?
            .iter()
            .try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + (c - b'0') as u32))
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y as i64, mo) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || digits > 9 {
            return None;
        }
        // At most 9 digits: fits an i64.
        frac = b[start..i].iter().fold(0i64, |n, &c| n * 10 + (c - b'0') as i64);
        frac *= 10i64.pow((9 - digits) as u32);
    }
    let offset_secs: i64 = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)? as i64;
            let om = num(i + 4..i + 6)? as i64;
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *c == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y as i64, mo, d);
    let secs = days * 86400 + h as i64 * 3600 + mi as i64 * 60 + se.min(59) as i64 - offset_secs;
    secs.checked_mul(1_000_000_000)?.checked_add(frac)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Formats UTC nanoseconds as RFC 3339 with nanoseconds (used by the generator and docs).
pub fn format_rfc3339_ns(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    // civil_from_days
    let z = days + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Active ISO 4217 currency codes (plus precious metals / SDR), excluding XTS and XXX.
const ISO4217: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP \
BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS \
GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR \
LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR \
PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD \
TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU \
XUA YER ZAR ZMW ZWG ZWL";

/// Bit `index(code)` set for every code of [`ISO4217`], built at compile time: the
/// check runs for every event with a currency, and a walk of the ~180 codes was a few
/// percent of the consumer thread.
const ISO4217_SET: [u64; ISO4217_WORDS] = {
    let b = ISO4217.as_bytes();
    let mut set = [0u64; ISO4217_WORDS];
    let mut i = 0;
    while i + 3 <= b.len() {
        let k = code_index(b[i], b[i + 1], b[i + 2]);
        set[k / 64] |= 1 << (k % 64);
        i += 4;
    }
    set
};
const ISO4217_WORDS: usize = (26 * 26 * 26usize).div_ceil(64);

/// The place of an upper-case three-letter code among all 26^3 of them.
const fn code_index(a: u8, b: u8, c: u8) -> usize {
    ((a - b'A') as usize * 26 + (b - b'A') as usize) * 26 + (c - b'A') as usize
}

pub fn is_iso4217(code: &str) -> bool {
    match code.as_bytes() {
        &[a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => {
            let k = code_index(a, b, c);
            // k < 26^3, so the word exists.
            ISO4217_SET[k / 64] & (1 << (k % 64)) != 0
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_763_780_400_000_000_000; // 2025-11-22T03:00:00Z

    fn parse(s: &str) -> Result<Event<'_>, Reject> {
        parse_event(s.as_bytes(), &ValidationLimits::default(), NOW)
    }

    /// The set answers exactly like a walk of the list, for every three-letter code
    /// and some near misses.
    #[test]
    fn currency_set_equals_the_list() {
        let listed = |code: &str| ISO4217.split(' ').any(|c| c == code);
        let mut n = 0;
        for a in b'A'..=b'Z' {
            for b in b'A'..=b'Z' {
                for c in b'A'..=b'Z' {
                    let code = String::from_utf8(vec![a, b, c]).unwrap();
                    assert_eq!(is_iso4217(&code), listed(&code), "{code}");
                    n += usize::from(listed(&code));
                }
            }
        }
        assert_eq!(n, ISO4217.split(' ').count());
        for bad in ["usd", "US", "USDD", "", "U$D", "ÜSD", "XTS", "XXX"] {
            assert!(!is_iso4217(bad), "{bad}");
        }
        assert!(is_iso4217("USD") && is_iso4217("EUR") && is_iso4217("ZWL"));
    }

    /// An event with several faults is rejected for the first in the contract's order
    /// (shape checks skipped for known shapes must not change that, see `validate`).
    #[test]
    fn faults_are_reported_in_the_contracts_order() {
        let ts = NOW - 1_000;
        let code = |s: &str| parse(s).map(|_| ()).unwrap_err().code;
        let e = format!(r#"{{"event_id":"x","ts":{ts},"tenant":"a\u0001","metric":"m","value":"v","cost":"c"}}"#);
        assert_eq!(code(&e), RejectCode::InvalidTenant);
        let e = format!(r#"{{"event_id":"x","ts":{ts},"tenant":"a","metric":"1m","value":1e999,"cost":"c"}}"#);
        assert_eq!(code(&e), RejectCode::InvalidMetricName);
        let e = format!(r#"{{"event_id":"x","ts":{ts},"tenant":"a","value":"v"}}"#);
        assert_eq!(code(&e), RejectCode::MissingField);
        let e = format!(r#"{{"event_id":"x","ts":{ts},"tenant":"a","metric":"m","value":1e999,"cost":"c"}}"#);
        assert_eq!(code(&e), RejectCode::InvalidValue);
        let e =
            format!(r#"{{"event_id":"x","ts":{ts},"tenant":"a","metric":"m","value":1,"cost":"c","currency":"ZZZ"}}"#);
        assert_eq!(code(&e), RejectCode::InvalidCost);
    }

    #[test]
    fn rfc3339_roundtrip() {
        assert_eq!(parse_rfc3339_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ns("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        assert_eq!(parse_rfc3339_ns("1970-01-01T02:00:00+02:00"), Some(0));
        assert_eq!(parse_rfc3339_ns("2025-11-22T03:00:00Z"), Some(NOW));
        assert_eq!(parse_rfc3339_ns("2025-02-29T03:00:00Z"), None);
        assert_eq!(parse_rfc3339_ns("2025-11-22T03:00:00.1234567891Z"), None);
        for ns in [0, NOW, NOW + 123_456_789, 951_782_400_000_000_001] {
            assert_eq!(parse_rfc3339_ns(&format_rfc3339_ns(ns)), Some(ns));
        }
    }

    #[test]
    fn valid_event() {
        let e = parse(
            r#"{"event_id":"e1","ts":"2025-11-22T02:59:00Z","tenant":"acme","metric":"cpu_hours","value":1.25,
            "sku":"m5","cost":"0.10","currency":"USD","labels":{"region":"eu","cost_center":"cc1"}}"#,
        )
        .unwrap();
        assert_eq!(e.qty_nanos, Some(1_250_000_000));
        assert_eq!(e.cost, Some(Money(100_000_000)));
        assert_eq!(e.labels.pairs().unwrap().len(), 2);
        let text = format!(
            r#"{{"event_id":"e1","ts":{NOW},"tenant":"acme","metric":"cpu","value":2,"cost":0.3,"currency":"EUR"}}"#
        );
        let e = parse(&text).unwrap();
        assert_eq!(e.ts, NOW);
        assert_eq!(e.cost, Some(Money(300_000_000)));
    }

    #[test]
    fn rejections_have_codes() {
        let cases = [
            ("{", RejectCode::InvalidJson),
            (
                r#"{"ts":1,"tenant":"a","metric":"m","value":1}"#,
                RejectCode::MissingField,
            ),
            (
                r#"{"event_id":"x","ts":"yesterday","tenant":"a","metric":"m","value":1}"#,
                RejectCode::InvalidTimestamp,
            ),
            (
                r#"{"event_id":"x","ts":"2025-11-19T03:00:00Z","tenant":"a","metric":"m","value":1}"#,
                RejectCode::TooLate,
            ),
            (
                r#"{"event_id":"x","ts":"2025-11-23T03:00:00Z","tenant":"a","metric":"m","value":1}"#,
                RejectCode::TooFarInFuture,
            ),
            (
                r#"{"event_id":"x","ts":"2025-11-22T03:00:00Z","tenant":"a","metric":"1m","value":1}"#,
                RejectCode::InvalidMetricName,
            ),
            (
                r#"{"event_id":"x","ts":"2025-11-22T03:00:00Z","tenant":"a","metric":"m","value":"1"}"#,
                RejectCode::InvalidType,
            ),
            (
                r#"{"event_id":"x","ts":"2025-11-22T03:00:00Z","tenant":"a","metric":"m","value":1e999}"#,
                RejectCode::InvalidValue,
            ),
            (
                r#"{"event_id":"x","ts":"2025-11-22T03:00:00Z","tenant":"a","metric":"m","value":1,"cost":"1","currency":"ABC"}"#,
                RejectCode::UnknownCurrency,
            ),
            (
                r#"{"event_id":"x","ts":"2025-11-22T03:00:00Z","tenant":"a","metric":"m","value":1,"cost":"1"}"#,
                RejectCode::MissingCurrency,
            ),
            (
                r#"{"event_id":"x","ts":"2025-11-22T03:00:00Z","tenant":"a","metric":"m","value":1,"cost":"1.2.3","currency":"USD"}"#,
                RejectCode::InvalidCost,
            ),
            (
                r#"{"event_id":"x","ts":"2025-11-22T03:00:00Z","tenant":"a","metric":"m","value":1,"labels":{"a-b":"x"}}"#,
                RejectCode::InvalidLabel,
            ),
            (
                r#"{"event_id":"x","ts":"2025-11-22T03:00:00Z","tenant":"a","metric":"m","value":1,"labels":{"sku":"x"}}"#,
                RejectCode::ReservedLabel,
            ),
            (
                r#"{"event_id":"x","ts":"2025-11-22T03:00:00Z","tenant":"a","metric":"m","value":1,"labels":{"a":1}}"#,
                RejectCode::InvalidType,
            ),
            (
                r#"{"event_id":"x","ts":"2025-11-22T03:00:00Z","tenant":"a","metric":"cost","value":1}"#,
                RejectCode::ReservedMetric,
            ),
        ];
        for (input, code) in cases {
            match parse(input) {
                Err(r) => assert_eq!(r.code, code, "{input}: {}", r.reason),
                Ok(_) => panic!("{input} accepted"),
            }
        }
        let big = format!(r#"{{"event_id":"{}"}}"#, "x".repeat(70_000));
        assert_eq!(parse(&big).unwrap_err().code, RejectCode::PayloadTooLarge);
    }
}

#[cfg(test)]
mod fast_path_tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_763_780_400_000_000_000;

    /// Both parsers on the same bytes: the fast scanner's answer (when it gives one) must
    /// be exactly serde's, as a validated event or as a rejection.
    fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
        let limits = ValidationLimits::default();
        let Some(fast) = crate::ingest::scan::scan(bytes) else {
            return Ok(());
        };
        let slow = parse_fields_serde(bytes);
        prop_assert!(
            slow.is_ok(),
            "fast path accepted what serde rejects: {:?}",
            String::from_utf8_lossy(bytes)
        );
        let slow = slow.unwrap_or_default();
        prop_assert_eq!(&fast, &slow);
        let a = format!("{:?}", validate(fast, &limits, NOW, || false));
        let b = format!("{:?}", validate(slow, &limits, NOW, || false));
        prop_assert_eq!(a, b);
        Ok(())
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("\"x\"".to_string()),
            Just("\"2025-11-22T02:59:00Z\"".to_string()),
            Just("\"0.10\"".to_string()),
            Just("\"a\\\"b\"".to_string()),
            Just("\"\"".to_string()),
            Just("\"USD\"".to_string()),
            Just("\"é😀\"".to_string()),
            Just("\"a-long-value-with-région-in-the-middle\"".to_string()),
            Just("\"a-long-ascii-value-of-thirty-bytes\"".to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
            Just("[1]".to_string()),
            Just("{\"region\":\"eu\",\"a\":\"b\"}".to_string()),
            Just("{\"a\":\"1\",\"a\":\"2\"}".to_string()),
            Just("{ }".to_string()),
            Just("{\"a\":1}".to_string()),
            Just(NOW.to_string()),
            Just("1763780400000000000.5".to_string()),
            "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{1,12})?([eE][+-]?[0-9]{1,3})?",
            "[-0-9.eE+]{1,8}",
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("event_id"),
            Just("ts"),
            Just("tenant"),
            Just("metric"),
            Just("value"),
            Just("unit"),
            Just("sku"),
            Just("cost"),
            Just("currency"),
            Just("labels"),
            Just("other"),
            Just("event\\u005fid"),
        ]
        .prop_map(str::to_string)
    }

    fn event() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec((key(), value()), 0..12),
            prop_oneof![Just(""), Just(" "), Just("\n\t")],
        )
            .prop_map(|(fields, ws)| {
                let body: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{ws}\"{k}\"{ws}:{ws}{v}{ws}"))
                    .collect();
                format!("{ws}{{{}}}{ws}", body.join(","))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// The control-character check agrees with `char::is_control` on any text.
        #[test]
        fn control_check_agrees(s in "(?s).{0,12}") {
            prop_assert_eq!(has_control(&s), s.chars().any(char::is_control));
        }

        /// Every time tally formats parses back to itself, also with a numeric offset and a
        /// trimmed fraction; a non-digit in any numeric field is refused.
        #[test]
        fn rfc3339_parses_what_it_formats(ns in 0i64..4_000_000_000_000_000_000, at in 0usize..19, offset_min in -900i64..900) {
            let text = format_rfc3339_ns(ns);
            prop_assert_eq!(parse_rfc3339_ns(&text), Some(ns), "{}", text);
            // The same instant written in another zone (whole minutes).
            let shifted = format_rfc3339_ns(ns + offset_min * 60_000_000_000);
            let sign = if offset_min < 0 { '-' } else { '+' };
            let zoned = format!("{}{sign}{:02}:{:02}", &shifted[..shifted.len() - 1], offset_min.abs() / 60, offset_min.abs() % 60);
            prop_assert_eq!(parse_rfc3339_ns(&zoned), Some(ns), "{}", zoned);
            if text.as_bytes()[at].is_ascii_digit() {
                let mut bad = text.into_bytes();
                bad[at] = b'x';
                prop_assert_eq!(parse_rfc3339_ns(std::str::from_utf8(&bad).unwrap()), None);
            }
        }

        /// A usage value taken from its exact decimal is the float `parse` gives, bit
        /// for bit, for every decimal the money parser accepts (up to 9 fraction digits).
        #[test]
        fn value_from_nanos_equals_parse(text in "-?(0|[1-9][0-9]{0,9})(\\.[0-9]{1,9})?") {
            if let Some(v) = text.parse::<Money>().ok().and_then(|m| exact_f64_of_nanos(m.nanos())) {
                prop_assert_eq!(v.to_bits(), text.parse::<f64>().unwrap().to_bits(), "{}", text);
            }
        }

        #[test]
        fn fast_path_agrees(e in event()) {
            check(e.as_bytes())?;
        }

        #[test]
        fn fast_path_agrees_on_mutations(e in event(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()) {
            let mut b = e.into_bytes();
            let i = at.index(b.len().max(1)).min(b.len());
            if cut {
                b.truncate(i);
            } else if i < b.len() {
                b[i] = byte;
            }
            check(&b)?;
        }
    }

    #[test]
    fn generator_events_take_the_fast_path() {
        for e in crate::ingest::generator::sample_events(200, 5, 3) {
            assert!(crate::ingest::scan::scan(e.as_bytes()).is_some(), "{e}");
            check(e.as_bytes()).unwrap();
        }
    }
}
