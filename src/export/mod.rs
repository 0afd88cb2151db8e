//! Exports for finance tools: the monthly ledger ([`ledger`]) written as Parquet (zstd,
//! column statistics) or Arrow IPC, optionally Hive-partitioned (`month=…/tenant=…`).
//! [`rounding`] does minor-unit rounding that keeps totals exact.

pub mod ledger;
pub mod rounding;
pub mod writer;

pub use ledger::{build_ledger, Grain, Ledger, LedgerOptions, LedgerRow};
pub use writer::{
    ledger_batch, ledger_schema, partition_file, read_arrow_ledger, split_by_tenant, write_batches, write_ledger,
    write_partitioned, write_partitioned_batches, Format,
};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Invalid(String),
    #[error("storage error: {0}")]
    Read(#[from] crate::store::ReadError),
    #[error("writing {what}: {reason}")]
    Write { what: String, reason: String },
}
