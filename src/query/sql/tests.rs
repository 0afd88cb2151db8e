//! Engine tests over an in-memory store.

use super::*;
