//! Series dictionary, label postings and per-tenant bitmaps.
//!
//! The index lives in memory and is rebuilt on open from segment series tables and
//! the WAL; series ids are therefore local to one process lifetime and never written
//! into segment files (segments carry label sets, which stay meaningful everywhere).

mod matcher;
mod postings;
mod series;

pub use matcher::{MatchOp, Matcher, MatcherError};
pub use postings::{Postings, TenantBitmap};
pub use series::{KindMismatch, SeriesEntry, SeriesId, SeriesIndex};
