//! The store: WAL + head + time-partitioned segments behind one embeddable handle.

pub mod fsutil;
mod head;
pub mod read;

pub use read::{ReadError, SampleValues, SelectRequest, SeriesSamples, SeriesSource, SeriesStream};
