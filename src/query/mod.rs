//! Query engines over the read contract ([`crate::store::SeriesSource`]).
//!
//! [`promql`] evaluates PromQL with Prometheus 2.x semantics (the dialect Debian's
//! Prometheus 2.42 speaks, and that tally's Prometheus-compatible API promises).

pub mod promql;
pub mod sql;
