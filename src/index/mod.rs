//! Series dictionary, label postings and per-tenant bitmaps.

mod matcher;

pub use matcher::{MatchOp, Matcher, MatcherError};
