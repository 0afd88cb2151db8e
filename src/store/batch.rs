//! What callers append: series (by label set and kind) with their samples, and the
//! source positions the batch advances — all applied atomically.

use crate::model::{Labels, Sample, SeriesKind};

#[derive(Debug, Clone)]
pub struct SeriesWrite {
    pub labels: Labels,
    pub kind: SeriesKind,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub series: Vec<SeriesWrite>,
    /// `(source, position)`, e.g. `("cost.compute/3", 1042)`: durable with the samples.
    pub positions: Vec<(String, i64)>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, labels: Labels, kind: SeriesKind, samples: Vec<Sample>) -> &mut Self {
        self.series.push(SeriesWrite { labels, kind, samples });
        self
    }

    pub fn position(&mut self, source: impl Into<String>, position: i64) -> &mut Self {
        self.positions.push((source.into(), position));
        self
    }

    pub fn samples(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.series.iter().all(|s| s.samples.is_empty()) && self.positions.is_empty()
    }
}
