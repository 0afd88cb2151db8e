//! What changed in the store since a moment: the question a cache of query results
//! asks before it reuses an answer computed from an older state.
//!
//! Two kinds of change are told apart:
//! * **appends** of samples, which alter answers only near their timestamps: each one
//!   is recorded with the earliest sample time it wrote, so a cache can keep every
//!   result that depends on earlier data only;
//! * **view edits** (flush, compaction, retention, tiering, rollups, quarantine), after
//!   which nothing is assumed: the *epoch* moves on and every older mark is stale.
//!   Most edits leave every answer as it was; they are rare, so recomputing once after
//!   each is cheaper than proving that.
//!
//! Appends are recorded after their samples are readable, and a reader takes its mark
//! before it reads: a sample it missed always has a later generation than its mark.

use std::collections::VecDeque;

use parking_lot::Mutex;

/// Appends remembered; a mark older than the oldest forgotten one learns `Unknown`.
const HISTORY: usize = 1024;

/// A moment in the store's history of changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeMark {
    epoch: u64,
    generation: u64,
}

/// What changed between a mark and now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangesSince {
    /// Nothing was written and the view is the same.
    Nothing,
    /// Samples were appended; the earliest of them has this timestamp (ns). Nothing
    /// else changed.
    AppendedFrom(i64),
    /// The view was edited, or too many appends ago to tell: assume anything changed.
    Unknown,
}

#[derive(Debug, Default)]
struct Log {
    epoch: u64,
    generation: u64,
    /// `(generation, earliest ts)` of appends, earliest ts strictly increasing from
    /// front to back: an append whose earliest time is not below a later one's tells
    /// nothing that one does not (any mark before the first is also before the second).
    appends: VecDeque<(u64, i64)>,
    /// Marks with a generation below this may have missed a forgotten append.
    forgotten_below: u64,
}

/// The store's change log (one per open store).
#[derive(Debug, Default)]
pub(crate) struct ChangeLog {
    log: Mutex<Log>,
}

impl ChangeLog {
    pub fn mark(&self) -> ChangeMark {
        let log = self.log.lock();
        ChangeMark {
            epoch: log.epoch,
            generation: log.generation,
        }
    }

    /// Records an append whose earliest sample is at `min_ts` (ns); call after its
    /// samples are readable.
    pub fn appended(&self, min_ts: i64) {
        let mut log = self.log.lock();
        log.generation += 1;
        let generation = log.generation;
        while log.appends.back().is_some_and(|&(_, ts)| ts >= min_ts) {
            log.appends.pop_back();
        }
        log.appends.push_back((generation, min_ts));
        if log.appends.len() > HISTORY {
            if let Some((g, _)) = log.appends.pop_front() {
                log.forgotten_below = g;
            }
        }
    }

    /// Records a view edit; call after the new view is published.
    pub fn view_edited(&self) {
        let mut log = self.log.lock();
        log.epoch += 1;
        log.appends.clear();
        log.forgotten_below = log.generation;
    }

    /// What changed since `mark`, and the mark of now (taken in the same instant).
    pub fn since(&self, mark: ChangeMark) -> (ChangesSince, ChangeMark) {
        let log = self.log.lock();
        let now = ChangeMark {
            epoch: log.epoch,
            generation: log.generation,
        };
        let changes = if mark.epoch != log.epoch || mark.generation < log.forgotten_below {
            ChangesSince::Unknown
        } else if mark.generation == log.generation {
            ChangesSince::Nothing
        } else {
            // The first recorded append after the mark has the smallest earliest time of
            // all appends after it (times increase along the deque).
            match log.appends.iter().find(|&&(g, _)| g > mark.generation) {
                Some(&(_, ts)) => ChangesSince::AppendedFrom(ts),
                // Unreachable while the invariants hold; be safe, not clever.
                None => ChangesSince::Unknown,
            }
        };
        (changes, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_report_their_earliest_time_since_a_mark() {
        let log = ChangeLog::default();
        let m0 = log.mark();
        assert_eq!(log.since(m0).0, ChangesSince::Nothing);
        log.appended(100);
        log.appended(50);
        let m1 = log.mark();
        log.appended(70);
        log.appended(200);
        assert_eq!(log.since(m0).0, ChangesSince::AppendedFrom(50));
        assert_eq!(log.since(m1).0, ChangesSince::AppendedFrom(70));
        let (_, now) = log.since(m1);
        assert_eq!(log.since(now).0, ChangesSince::Nothing);
    }

    #[test]
    fn a_view_edit_makes_every_older_mark_unknown() {
        let log = ChangeLog::default();
        let m0 = log.mark();
        log.view_edited();
        assert_eq!(log.since(m0).0, ChangesSince::Unknown);
        let m1 = log.mark();
        assert_eq!(log.since(m1).0, ChangesSince::Nothing);
        log.appended(5);
        assert_eq!(log.since(m1).0, ChangesSince::AppendedFrom(5));
        assert_eq!(log.since(m0).0, ChangesSince::Unknown);
    }

    #[test]
    fn forgotten_history_is_unknown_not_wrong() {
        let log = ChangeLog::default();
        let m0 = log.mark();
        log.appended(-1); // the earliest of all: must not be lost silently
        let m1 = log.mark();
        for t in 0..(HISTORY as i64 + 10) {
            log.appended(t);
        }
        assert_eq!(log.since(m0).0, ChangesSince::Unknown);
        assert_eq!(log.since(m1).0, ChangesSince::Unknown);
        let recent = log.mark();
        log.appended(7);
        assert_eq!(log.since(recent).0, ChangesSince::AppendedFrom(7));
    }

    /// Against a plain list of every append: the log answers the minimum over the
    /// appends after the mark, or `Unknown`, never a later time than the truth.
    #[test]
    fn matches_a_full_history() {
        let log = ChangeLog::default();
        let mut all: Vec<i64> = Vec::new();
        let mut marks = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 3 == 0 {
                marks.push((log.mark(), all.len()));
            }
            let ts = (x % 10_000) as i64 + all.len() as i64;
            log.appended(ts);
            all.push(ts);
        }
        for (m, n) in marks {
            let truth = all[n..].iter().copied().min();
            match log.since(m).0 {
                ChangesSince::AppendedFrom(ts) => assert_eq!(Some(ts), truth),
                ChangesSince::Nothing => assert_eq!(truth, None),
                ChangesSince::Unknown => assert!(n + HISTORY <= all.len(), "unknown too early"),
            }
        }
    }
}
