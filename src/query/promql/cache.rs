//! A cache of range-query results, so that a dashboard refreshing a panel computes only
//! the steps whose data may have changed (the idea of VictoriaMetrics' rollup result
//! cache and of the Cortex/Thanos query-frontend).
//!
//! A PromQL step's value depends only on the samples within a fixed reach of its
//! time: `[t - behind, t + ahead]`, from lookback, ranges, offsets and subqueries (see
//! [`Reach`]). A result is kept with the store's [`ChangeMark`] taken before it was
//! computed. On the next request for the same query, step and step phase, the store
//! tells what changed since: nothing (every cached step stands), appends whose
//! earliest sample is at `m` (steps with `t + ahead < m` stand), or anything (a view
//! edit: recompute). Only the missing and invalidated steps are evaluated, and the two
//! parts are merged by label set.
//!
//! Not cached: queries with `@` (a step's value then depends on the query's range or
//! a fixed time, not on its own time), results that are not matrices, and results
//! larger than a quarter of the budget. The budget counts points (and at most
//! [`MAX_ENTRIES`] results); the least recently used entries go first.
//!
//! Invariant: a merged answer equals evaluating the whole range at once, because each
//! step is evaluated independently of the others and reused steps saw no change in
//! their reach.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use promql_parser::parser::Expr;

use super::engine::{self, dur_ms, offset_ms};
use super::value::{QueryValue, Series};
use super::{check_range, parse, EngineOptions, PromError, NANOS_PER_MILLI};
use crate::store::{ChangeMark, ChangesSince, Store};

/// Most results kept, whatever their size: eviction scans the entries for the least
/// recently used, so many tiny results must not make each insert slow.
const MAX_ENTRIES: usize = 4096;

/// How far from a step's time the samples it depends on can lie (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reach {
    pub behind: i64,
    pub ahead: i64,
}

impl Reach {
    const NONE: Reach = Reach { behind: 0, ahead: 0 };

    fn max(self, o: Reach) -> Reach {
        Reach {
            behind: self.behind.max(o.behind),
            ahead: self.ahead.max(o.ahead),
        }
    }

    /// A window `[t - offset - range, t - offset]` around data of reach `inner`.
    fn window(range: i64, offset: i64, inner: Reach) -> Reach {
        Reach {
            behind: offset.saturating_add(range).saturating_add(inner.behind),
            ahead: inner.ahead.saturating_sub(offset),
        }
    }

    /// The reach of `expr`, or `None` when a step's value may depend on more than
    /// its own time (`@`).
    pub fn of(expr: &Expr, opts: &EngineOptions) -> Option<Reach> {
        Some(match expr {
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Reach::NONE,
            Expr::VectorSelector(vs) => {
                if vs.at.is_some() {
                    return None;
                }
                Reach::window(opts.lookback_ms, offset_ms(&vs.offset), Reach::NONE)
            }
            Expr::MatrixSelector(ms) => {
                if ms.vs.at.is_some() {
                    return None;
                }
                Reach::window(dur_ms(&ms.range), offset_ms(&ms.vs.offset), Reach::NONE)
            }
            Expr::Subquery(sq) => {
                if sq.at.is_some() {
                    return None;
                }
                let inner = Reach::of(&sq.expr, opts)?;
                Reach::window(dur_ms(&sq.range), offset_ms(&sq.offset), inner)
            }
            Expr::Paren(p) => Reach::of(&p.expr, opts)?,
            Expr::Unary(u) => Reach::of(&u.expr, opts)?,
            Expr::Binary(b) => Reach::of(&b.lhs, opts)?.max(Reach::of(&b.rhs, opts)?),
            Expr::Aggregate(a) => {
                let r = Reach::of(&a.expr, opts)?;
                match &a.param {
                    Some(p) => r.max(Reach::of(p, opts)?),
                    None => r,
                }
            }
            Expr::Call(c) => {
                let mut r = Reach::NONE;
                for a in &c.args.args {
                    r = r.max(Reach::of(a, opts)?);
                }
                r
            }
            Expr::Extension(_) => return None,
        })
    }

    /// The last step time of phase `start` that no sample at or after `from_ns` can
    /// reach, if any is at or after `start`.
    fn last_unreached(&self, from_ns: i64, start: i64, step: i64) -> Option<i64> {
        // A sample at `from_ns` ns lies at or after `from_ms` ms; one ms of slack
        // covers the rounding.
        let from_ms = from_ns.div_euclid(NANOS_PER_MILLI);
        let limit = from_ms.saturating_sub(self.ahead.max(0)).saturating_sub(1);
        if limit <= start {
            return None;
        }
        Some(start + (limit - 1 - start) / step * step)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    tenant: Option<String>,
    query: String,
    step: i64,
    /// `start mod step`: only steps on the same grid are shared.
    phase: i64,
    // Options that change values.
    lookback_ms: i64,
    default_subquery_step_ms: i64,
    use_rollups: bool,
}

struct Entry {
    start: i64,
    end: i64,
    mark: ChangeMark,
    series: Arc<Vec<Series>>,
    points: usize,
    used: u64,
}

/// Counts for `/metrics`.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Requests answered without evaluating a step.
    pub hits: AtomicU64,
    /// Requests that reused some cached steps and evaluated the rest.
    pub partial: AtomicU64,
    /// Requests evaluated in full (nothing cached, or nothing reusable).
    pub misses: AtomicU64,
    /// Requests the cache does not take (`@`, non-matrix results).
    pub uncacheable: AtomicU64,
    pub steps_reused: AtomicU64,
    pub steps_evaluated: AtomicU64,
}

/// The range-query result cache of one server; cheap to share (`&ResultCache` is `Sync`).
pub struct ResultCache {
    max_points: usize,
    state: Mutex<State>,
    pub stats: CacheStats,
}

#[derive(Default)]
struct State {
    entries: HashMap<Key, Entry, foldhash::fast::RandomState>,
    points: usize,
    tick: u64,
}

/// What the cache can reuse for one request.
struct Reuse {
    series: Arc<Vec<Series>>,
    /// Last reusable step (inclusive).
    until: i64,
}

impl ResultCache {
    /// A cache holding at most `max_points` result points (about 16 bytes each plus
    /// the label sets); 0 disables it.
    pub fn new(max_points: usize) -> ResultCache {
        ResultCache {
            max_points,
            state: Mutex::new(State::default()),
            stats: CacheStats::default(),
        }
    }

    /// Points held now.
    pub fn points(&self) -> usize {
        self.state.lock().points
    }

    /// [`super::range_query`] over `store`, reusing and refreshing cached steps.
    #[allow(clippy::too_many_arguments)]
    pub fn range_query(
        &self,
        store: &Store,
        tenant: Option<&str>,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
        opts: &EngineOptions,
    ) -> Result<QueryValue, PromError> {
        check_range(start, end, step)?;
        let expr = parse(query)?;
        let reach = match Reach::of(&expr, opts) {
            Some(r) if self.max_points > 0 => r,
            other => {
                if self.max_points > 0 && other.is_none() {
                    self.stats.uncacheable.fetch_add(1, Ordering::Relaxed);
                }
                let snap = store.snapshot();
                return engine::exec_range(&snap, tenant, &expr, start, end, step, opts);
            }
        };
        let key = Key {
            tenant: tenant.map(str::to_string),
            query: query.to_string(),
            step,
            phase: start.rem_euclid(step),
            lookback_ms: opts.lookback_ms,
            default_subquery_step_ms: opts.default_subquery_step_ms,
            use_rollups: opts.use_rollups,
        };
        // The mark comes before the snapshot: whatever the evaluation below misses
        // is after it, and the next request learns of it.
        let (reuse, mark) = self.reusable(store, &key, reach, start, end, step);
        let from = match &reuse {
            Some(r) => r.until + step,
            None => start,
        };
        let steps = |a: i64, b: i64| if b < a { 0 } else { ((b - a) / step + 1) as u64 };
        let fresh = if from <= end {
            let snap = store.snapshot();
            match engine::exec_range(&snap, tenant, &expr, from, end, step, opts)? {
                QueryValue::Matrix(m) => m,
                other => {
                    self.stats.uncacheable.fetch_add(1, Ordering::Relaxed);
                    return Ok(other);
                }
            }
        } else {
            Vec::new()
        };
        let result = match &reuse {
            Some(r) => {
                let reused = steps(start, r.until.min(end));
                self.stats.steps_reused.fetch_add(reused, Ordering::Relaxed);
                let counter = if from > end {
                    &self.stats.hits
                } else {
                    &self.stats.partial
                };
                counter.fetch_add(1, Ordering::Relaxed);
                merge(&r.series, start, r.until, fresh)
            }
            None => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                fresh
            }
        };
        self.stats
            .steps_evaluated
            .fetch_add(steps(from, end), Ordering::Relaxed);
        let result = Arc::new(result);
        self.insert(key, start, end, mark, result.clone());
        Ok(QueryValue::Matrix(
            Arc::try_unwrap(result).unwrap_or_else(|a| (*a).clone()),
        ))
    }

    /// The cached steps of `key` still valid for `start..=end`, and the store's mark
    /// of now (to store with the new result).
    fn reusable(
        &self,
        store: &Store,
        key: &Key,
        reach: Reach,
        start: i64,
        end: i64,
        step: i64,
    ) -> (Option<Reuse>, ChangeMark) {
        let cached = {
            let mut st = self.state.lock();
            st.tick += 1;
            let tick = st.tick;
            st.entries.get_mut(key).map(|e| {
                e.used = tick;
                (e.start, e.end, e.mark, e.series.clone())
            })
        };
        let Some((cs, ce, cmark, series)) = cached else {
            return (None, store.change_mark());
        };
        let (changes, now) = store.changes_since(cmark);
        // Same phase (the key), so `start` is on the cached grid.
        if start < cs || start > ce {
            return (None, now);
        }
        let valid = match changes {
            ChangesSince::Nothing => Some(ce),
            ChangesSince::AppendedFrom(ts) => reach.last_unreached(ts, cs, step).map(|t| t.min(ce)),
            ChangesSince::Unknown => None,
        };
        let reuse = valid.filter(|&until| until >= start).map(|until| Reuse {
            series,
            until: until.min(end),
        });
        (reuse, now)
    }

    fn insert(&self, key: Key, start: i64, end: i64, mark: ChangeMark, series: Arc<Vec<Series>>) {
        let points: usize = series.iter().map(|s| s.points.len() + 1).sum();
        let mut st = self.state.lock();
        if let Some(old) = st.entries.remove(&key) {
            st.points -= old.points;
        }
        if points > self.max_points / 4 {
            return;
        }
        while st.points + points > self.max_points || st.entries.len() >= MAX_ENTRIES {
            let Some(oldest) = st.entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone()) else {
                break;
            };
            if let Some(e) = st.entries.remove(&oldest) {
                st.points -= e.points;
            }
        }
        st.tick += 1;
        let used = st.tick;
        st.points += points;
        st.entries.insert(
            key,
            Entry {
                start,
                end,
                mark,
                series,
                points,
                used,
            },
        );
    }
}

/// The cached points at `start..=until` followed by `fresh` (all after `until`), per
/// label set; both inputs and the output are sorted by labels.
fn merge(cached: &[Series], start: i64, until: i64, fresh: Vec<Series>) -> Vec<Series> {
    let mut out = Vec::with_capacity(cached.len().max(fresh.len()));
    let mut fresh = fresh.into_iter().peekable();
    for c in cached {
        while let Some(f) = fresh.next_if(|f| f.labels < c.labels) {
            out.push(f);
        }
        let lo = c.points.partition_point(|p| p.0 < start);
        let hi = c.points.partition_point(|p| p.0 <= until);
        let mut points = c.points[lo..hi].to_vec();
        if let Some(f) = fresh.next_if(|f| f.labels == c.labels) {
            points.extend_from_slice(&f.points);
        }
        if !points.is_empty() {
            out.push(Series {
                labels: c.labels.clone(),
                points,
            });
        }
    }
    out.extend(fresh);
    out
}

#[cfg(test)]
mod tests;
