//! tally — an embedded time-series cost store with a Prometheus-compatible query server.
//!
//! Data flows bottom-up: [`model`] defines series and exact money; [`encoding`] packs
//! sample columns; [`wal`] makes appends durable; [`segment`] holds immutable columnar
//! files; [`index`] resolves label matchers to series via postings and tenant bitmaps;
//! [`store`] ties them into an embeddable handle; [`query`] evaluates PromQL over it;
//! [`api`] and [`cli`] are the HTTP and command-line edges.

pub mod api;
pub mod cli;
pub mod cpu;
pub mod encoding;
pub mod export;
pub mod index;
pub mod ingest;
pub mod mem;
pub mod model;
pub mod query;
pub mod segment;
pub mod store;
pub mod tier;
pub mod wal;
pub mod workload;
