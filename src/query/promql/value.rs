//! Query result values as the API returns them, and the per-step working form the
//! evaluator passes between nodes.
//!
//! Timestamps here are **milliseconds** since the Unix epoch (PromQL's unit); the
//! engine converts to the store's nanoseconds only when it builds a `SelectRequest`.

use crate::model::Labels;

/// One sample of an instant vector: labels, evaluation timestamp (ms) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorSample {
    pub labels: Labels,
    pub t: i64,
    pub v: f64,
}

/// One series of a range vector / range-query result: points sorted by time (ms).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub points: Vec<(i64, f64)>,
}

/// The result of a query, in Prometheus's four result types.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryValue {
    Scalar { t: i64, v: f64 },
    String { t: i64, s: String },
    Vector(Vec<VectorSample>),
    Matrix(Vec<Series>),
}

impl QueryValue {
    /// Prometheus's `resultType` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            QueryValue::Scalar { .. } => "scalar",
            QueryValue::String { .. } => "string",
            QueryValue::Vector(_) => "vector",
            QueryValue::Matrix(_) => "matrix",
        }
    }
}

/// An element of an instant vector at one (implicit) evaluation step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Elem {
    pub labels: Labels,
    pub v: f64,
}

/// An instant vector at one step.
pub(crate) type Vector = Vec<Elem>;

/// The value of an expression over every step of an evaluation range.
///
/// Instant vectors are kept as one [`Vector`] per step: each operator then works on
/// one step at a time exactly like Prometheus's instant semantics, and a range query is
/// just the same computation at every step (labels are `Arc`-shared, so the per-step
/// copies cost a reference count, not a string copy).
#[derive(Debug, Clone)]
pub(crate) enum Val {
    /// One value per step.
    Scalar(Vec<f64>),
    String(String),
    /// One vector per step.
    Vector(Vec<Vector>),
    /// A range vector; only a valid *result* of an instant query.
    Matrix(Vec<Series>),
}

impl Val {
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::String(_) => "string",
            Val::Vector(_) => "instant vector",
            Val::Matrix(_) => "range vector",
        }
    }
}

/// The staleness marker: a NaN with this exact bit pattern ends a series (Prometheus
/// writes it when a target disappears; test files spell it `stale`).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether `v` is the staleness marker (not just any NaN).
#[inline]
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// The staleness marker as a value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}
