//! Write-ahead log: every acknowledged append is in here before it is in the head.
//!
//! The log is a sequence of generations (`wal/<gen>.wal`). A flush rotates to a new
//! generation, writes the old one's samples into segments, and records the generation
//! as the manifest's checkpoint; replay skips checkpointed generations, so no record
//! is ever applied twice (which matters for `Sum` series).

mod log;
mod record;

pub use log::{file_name as log_file_name, list_generations, replay, FsyncPolicy, ReplayStats, WalError, WalWriter};
pub use record::{decode_batch, encode_batch, WalBatch, WalSeries, WalSeriesSamples};
