//! PromQL with Prometheus **2.x** semantics, evaluated over a [`SeriesSource`].
//!
//! Parsing is delegated to the `promql-parser` crate; evaluation is ours. The choices
//! that make the result match Prometheus 2.42 rather than 3.x:
//!
//! * range selectors `x[r]` at time `t` include samples in the **closed** window
//!   `[t - r, t]` (3.x made the left end open);
//! * instant selectors look back `lookback` (5m) for the latest sample and treat the
//!   staleness marker ([`value::STALE_NAN_BITS`]) as "no sample";
//! * `holt_winters` exists (3.x renamed it `double_exponential_smoothing`). The parser
//!   crate only knows the new name, so we register `holt_winters` once as an *extra*
//!   function with the 2.x signature (`matrix, scalar, scalar`). Registering (instead of
//!   rewriting the query text) cannot corrupt string literals or label values that
//!   happen to contain the name. Functions and syntax that exist only in 3.x are
//!   rejected as `bad_data` (see [`parse`]).
//!
//! Timestamps in this API are **milliseconds**; the store is read in nanoseconds.
//!
//! Layout: `dialect` (parsing, 2.x dialect checks) → `engine` (evaluation
//! ranges, selectors, lookback, subqueries, limits) → `functions/*`, `aggregate`,
//! `binary` (operators, one step at a time) → [`value`] (results). [`testfile`] runs
//! Prometheus's test files against any [`SeriesSource`]; [`memsource`] is an
//! in-memory source for tests. `difftest` (tests only) compares answers with a live
//! Prometheus 2.42.

mod aggregate;
mod binary;
mod cache;
mod dialect;
mod engine;
mod functions;
mod input;
mod memo;
pub mod memsource;
mod rollup;
mod rows;
pub mod testfile;
pub mod value;

/// PromQL works in milliseconds; storage in nanoseconds.
const NANOS_PER_MILLI: i64 = 1_000_000;

use std::time::Duration;

use promql_parser::parser::Expr;

use crate::store::SeriesSource;
pub use cache::{CacheStats, ResultCache};
pub use value::{QueryValue, Series, VectorSample};

/// Query errors, with the `errorType` Prometheus's HTTP API reports for them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromError {
    /// The query (or a parameter) is malformed: `bad_data`.
    #[error("{0}")]
    BadData(String),
    /// The query is valid but failed while running: `execution`.
    #[error("{0}")]
    Execution(String),
    /// The query ran past [`EngineOptions::timeout`]: `timeout`.
    #[error("query timed out in query execution")]
    Timeout,
    /// Reading from storage failed: `internal`.
    #[error("storage error: {0}")]
    Storage(String),
}

impl PromError {
    /// Prometheus's `errorType` string.
    pub fn error_type(&self) -> &'static str {
        match self {
            PromError::BadData(_) => "bad_data",
            PromError::Execution(_) => "execution",
            PromError::Timeout => "timeout",
            PromError::Storage(_) => "internal",
        }
    }
}

/// Evaluation limits and defaults.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far an instant selector looks back for a sample (Prometheus: 5m).
    pub lookback_ms: i64,
    /// Most samples a query may load (plus instant-selector points and subquery steps),
    /// counted cumulatively, before it fails with an `execution` error instead of
    /// exhausting memory (Prometheus: 50M).
    pub max_samples: usize,
    /// Wall-clock budget per query; `None` = unlimited.
    pub timeout: Option<Duration>,
    /// Step of subqueries written without one (`x[1h:]`): Prometheus uses the global
    /// evaluation interval, 1m by default.
    pub default_subquery_step_ms: i64,
    /// Answer qualifying range functions from rollups when the source has them (see
    /// `rollup.rs` and the README's error bounds); off reads raw samples only.
    pub use_rollups: bool,
    /// Most threads one query evaluates series on (range functions and selectors
    /// under an aggregation, see `rows.rs`); 0 = the machine's available parallelism.
    /// Results do not depend on it: series are folded into the result in one fixed
    /// order whatever thread evaluated them.
    pub threads: usize,
    /// Fewest selected series per thread worth a thread: fewer series use fewer
    /// threads (starting threads costs more than evaluating a handful of series).
    pub min_series_per_thread: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_ms: 5 * 60 * 1000,
            max_samples: 50_000_000,
            timeout: Some(Duration::from_secs(120)),
            default_subquery_step_ms: 60 * 1000,
            use_rollups: true,
            threads: 0,
            min_series_per_thread: 64,
        }
    }
}

/// A configured engine; a thin holder of [`EngineOptions`].
#[derive(Debug, Clone, Default)]
pub struct Engine {
    pub opts: EngineOptions,
}

impl Engine {
    pub fn new(opts: EngineOptions) -> Engine {
        Engine { opts }
    }

    pub fn instant_query(
        &self,
        src: &dyn SeriesSource,
        tenant: Option<&str>,
        query: &str,
        time_ms: i64,
    ) -> Result<QueryValue, PromError> {
        instant_query(src, tenant, query, time_ms, &self.opts)
    }

    pub fn range_query(
        &self,
        src: &dyn SeriesSource,
        tenant: Option<&str>,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<QueryValue, PromError> {
        range_query(src, tenant, query, start_ms, end_ms, step_ms, &self.opts)
    }
}

/// Evaluates `query` at `time_ms`. Every read is restricted to `tenant` (all tenants
/// when `None`).
pub fn instant_query(
    src: &dyn SeriesSource,
    tenant: Option<&str>,
    query: &str,
    time_ms: i64,
    opts: &EngineOptions,
) -> Result<QueryValue, PromError> {
    let expr = parse(query)?;
    engine::exec_instant(src, tenant, &expr, time_ms, opts)
}

/// Evaluates `query` at `start_ms, start_ms + step_ms, … ≤ end_ms`; the result is a
/// matrix sorted by labels. Only scalar and instant-vector expressions are allowed.
pub fn range_query(
    src: &dyn SeriesSource,
    tenant: Option<&str>,
    query: &str,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
    opts: &EngineOptions,
) -> Result<QueryValue, PromError> {
    check_range(start_ms, end_ms, step_ms)?;
    let expr = parse(query)?;
    engine::exec_range(src, tenant, &expr, start_ms, end_ms, step_ms, opts)
}

/// The range parameters Prometheus rejects before parsing the query.
fn check_range(start_ms: i64, end_ms: i64, step_ms: i64) -> Result<(), PromError> {
    if step_ms <= 0 {
        return Err(PromError::BadData(
            "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
        ));
    }
    if end_ms < start_ms {
        return Err(PromError::BadData("end timestamp must not be before start time".into()));
    }
    if (i128::from(end_ms) - i128::from(start_ms)) / i128::from(step_ms) > 11_000 {
        return Err(PromError::BadData(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
                .into(),
        ));
    }
    Ok(())
}

/// Parses a query in the Prometheus 2.x dialect (see the module docs).
pub fn parse(query: &str) -> Result<Expr, PromError> {
    dialect::parse(query)
}

/// Parses a series selector (the `match[]` parameter of the metadata endpoints) into
/// the store's matchers, with the same regex semantics as query selectors.
pub fn parse_selector(selector: &str) -> Result<Vec<crate::index::Matcher>, PromError> {
    let expr = parse(selector)?;
    match engine::unparen(&expr) {
        Expr::VectorSelector(vs) => engine::Ctx::matchers(vs),
        _ => Err(PromError::BadData(format!(
            "invalid series selector {selector:?}: expected a vector selector"
        ))),
    }
}

#[cfg(test)]
mod difftest;
#[cfg(test)]
mod tests;
