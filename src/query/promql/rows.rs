//! Series-at-a-time evaluation, on several threads.
//!
//! Selectors and range functions under an aggregation turn each selected series into
//! a *row*: the evaluation steps at which it has a value, and those values. Computing
//! a row (reading and decoding the series' samples, applying the function) needs
//! nothing but that series, and it is most of a query's work, so rows are computed on
//! up to [`EngineOptions::threads`](super::EngineOptions::threads) threads. They are
//! handed to the consumer (typically an aggregation) strictly in the source's series
//! order, one whole row at a time, so the consumer sees exactly the sequence a
//! sequential evaluation produces: its floating-point arithmetic, first-appearance
//! order and error (the first failing series in order) do not depend on the number of
//! threads or their timing.
//!
//! Scheme: the listed series are cut into *parts* of consecutive series; threads claim
//! parts in order, compute their rows into a part buffer, and deposit it. Folding into
//! the consumer is *combined*: a depositor that finds the consumer free becomes the
//! folder and folds every deposited part that is next in order; one that finds it busy
//! goes back to computing, and the folder, after letting go of the consumer, looks
//! once more for a part deposited meanwhile. So no thread ever waits for another's
//! fold (the consumer is serial, but it overlaps the other threads' computing). A
//! thread does not start a part more than `2 × threads` parts ahead of the next one to
//! fold, which bounds the rows held in memory; the thread holding the next part to fold
//! never waits, so no deadlock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Condvar, Mutex};
use promql_parser::parser::VectorSelector;

use super::engine::{Ctx, LocalSamples};
use super::functions::{RatePlan, RateSecs, WindowMemo};
use super::input::SeriesInput;
use super::PromError;
use crate::model::Labels;
use crate::store::{ScanBuf, ScanItem, SelectRequest};

/// Receives one series' instant-vector output at once: its labels and its values as
/// runs of steps (in increasing step order, not overlapping).
pub(crate) type RowSink<'s> = dyn FnMut(RowLabels<'_>, &[Run]) -> Result<(), PromError> + Send + 's;

/// Steps `from..to` (`from < to`) all have the value `v`. A window function over data
/// sampled less often than the query steps gives the same value at several steps in
/// a row (at a 15 s step over 60 s samples, 2 runs per 4 steps), and an instant
/// selector repeats its sample until the next one: as a run, that value is computed,
/// stored and handed over once, and consumers such as `sum` add it into consecutive
/// slots in a tight loop. Expanding the runs gives exactly the per-step values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Run {
    pub from: usize,
    pub to: usize,
    pub v: f64,
}

/// The `(step, value)` pairs of `runs`, in order.
pub(crate) fn steps(runs: &[Run]) -> impl Iterator<Item = (usize, f64)> + '_ {
    runs.iter().flat_map(|r| (r.from..r.to).map(move |i| (i, r.v)))
}

/// How many steps `runs` cover.
pub(crate) fn step_count(runs: &[Run]) -> usize {
    runs.iter().map(|r| r.to - r.from).sum()
}

/// The labels of a row: a series' labels, less the metric name when `drop_name`.
/// Functions drop the name, but building the reduced label set costs an allocation per
/// label, and an aggregation grouping `by`/`without` labels other than the name never
/// needs it, so it is built only by consumers that do ([`RowLabels::to_labels`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowLabels<'l> {
    pub labels: &'l Labels,
    pub drop_name: bool,
}

impl RowLabels<'_> {
    /// Labels as they are, the metric name kept.
    pub fn kept(labels: &Labels) -> RowLabels<'_> {
        RowLabels {
            labels,
            drop_name: false,
        }
    }

    /// The row's actual label set.
    pub fn to_labels(self) -> Labels {
        if self.drop_name {
            self.labels.without_metric_name()
        } else {
            self.labels.clone()
        }
    }
}

/// What a per-series function returns for a series with output: the labels its row
/// carries and whether the metric name is to be dropped from them (see [`RowLabels`]).
pub(crate) type OutLabels = Option<(Labels, bool)>;

/// Output runs being collected, for one series or (in a part) several.
#[derive(Debug, Default)]
pub(crate) struct Row {
    pub runs: Vec<Run>,
}

impl Row {
    /// Appends value `v` at step `i`, after every step pushed so far for this series.
    #[inline]
    pub fn push(&mut self, i: usize, v: f64) {
        self.push_run(i, i + 1, v);
    }

    /// Appends value `v` at steps `from..to`, after every step pushed so far for this
    /// series; extends the last run when it ends at `from` with the same value (bit
    /// for bit, so that expanding gives back exactly what was pushed).
    #[inline]
    pub fn push_run(&mut self, from: usize, to: usize, v: f64) {
        if let Some(last) = self.runs.last_mut() {
            if last.to == from && last.v.to_bits() == v.to_bits() {
                last.to = to;
                return;
            }
        }
        self.runs.push(Run { from, to, v });
    }

    pub fn clear(&mut self) {
        self.runs.clear();
    }

    /// Runs held (not steps).
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    fn truncate(&mut self, n: usize) {
        self.runs.truncate(n);
    }
}

/// Per-thread scratch space for per-series functions.
#[derive(Default)]
pub(crate) struct Scratch {
    pub pts: Vec<(i64, f64)>,
    /// Times (ms) and values, for functions reading columns ([`SeriesInput::columns`]).
    pub ts: Vec<i64>,
    pub vals: Vec<f64>,
    pub memo: FnMemo,
}

/// What per-series functions remember across the series one thread evaluates: pure
/// functions of their inputs, so sharing them never changes a result.
#[derive(Default)]
pub(crate) struct FnMemo {
    pub rate: RateSecs,
    pub rate_plan: RatePlan,
    pub windows: WindowMemo,
}

/// The read buffers and sample count of one thread.
#[derive(Default)]
struct Loader {
    buf: ScanBuf,
    samples: LocalSamples,
}

/// Most row values (steps × series) one part may hold: bounds the memory of parts in
/// flight (about 16 bytes per value) to a few tens of MiB whatever the query.
const PART_VALUES: usize = 1 << 20;

/// Parts per thread when the budget allows: enough that threads finishing at
/// different times stay busy, few enough that per-part overhead is negligible. With
/// 8, a live panel over 10k series on 2 threads ran 15-18 % slower (p50, A/B/A/B):
/// at the end one thread idled through the other's last part, and the fold of that
/// last part (an aggregation's serial share) ran alone; 64 was no faster than 32.
const PARTS_PER_THREAD: usize = 32;

/// The rows of consecutive series, and the error that stopped the part early.
#[derive(Default)]
struct Part {
    labels: Vec<(Labels, bool)>,
    /// End of each series' row in `row`.
    ends: Vec<usize>,
    row: Row,
    err: Option<PromError>,
}

impl Part {
    fn clear(&mut self) {
        self.labels.clear();
        self.ends.clear();
        self.row.clear();
        self.err = None;
    }

    /// Hands the rows to `sink` in order, then the part's error, if any.
    fn emit(&self, sink: &mut RowSink) -> Result<(), PromError> {
        let mut from = 0;
        for ((labels, drop_name), &to) in self.labels.iter().zip(&self.ends) {
            let l = RowLabels {
                labels,
                drop_name: *drop_name,
            };
            sink(l, &self.row.runs[from..to])?;
            from = to;
        }
        match &self.err {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

/// Deposited parts and fold progress, behind a lock held only briefly.
#[derive(Default)]
struct Pending {
    /// Parts `0..consumed` have been folded into the consumer.
    consumed: usize,
    parts: BTreeMap<usize, Part>,
    /// Folded parts, reused for their buffers.
    free: Vec<Part>,
    failed: Option<PromError>,
}

/// The shared state of a parallel row evaluation: the pending parts, and the consumer
/// behind a lock of its own, held by whichever thread is folding.
struct Fold<'k, 's> {
    pending: Mutex<Pending>,
    consumer: Mutex<&'k mut RowSink<'s>>,
    progress: Condvar,
}

impl Fold<'_, '_> {
    /// Deposits computed part `j`, then folds every part next in order unless another
    /// thread is folding (see the module doc: that thread will see part `j`).
    fn deposit(&self, j: usize, part: Part) {
        self.pending.lock().parts.insert(j, part);
        // A failed `try_lock` means the holder is folding; it looks for deposited parts
        // again after unlocking, and part `j` went in before this attempt failed.
        while let Some(mut sink) = self.consumer.try_lock() {
            loop {
                let next = {
                    let mut p = self.pending.lock();
                    if p.failed.is_some() {
                        None
                    } else {
                        let c = p.consumed;
                        p.parts.remove(&c)
                    }
                };
                let Some(part) = next else { break };
                let r = part.emit(&mut **sink);
                let mut p = self.pending.lock();
                p.consumed += 1;
                p.free.push(part);
                if let Err(e) = r {
                    p.failed = Some(e);
                }
                self.progress.notify_all();
            }
            drop(sink);
            let p = self.pending.lock();
            if p.failed.is_some() || !p.parts.contains_key(&p.consumed) {
                return;
            }
        }
    }
}

fn storage(e: crate::store::ReadError) -> PromError {
    PromError::Storage(e.to_string())
}

impl Ctx<'_> {
    /// Threads worth using for `series` selected series (at least 1).
    pub fn threads_for(&self, series: usize) -> usize {
        let max = match self.opts.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            t => t,
        };
        max.min(series / self.opts.min_series_per_thread.max(1)).max(1)
    }

    /// Evaluates `per(labels, samples, scratch, row)` on every series matching
    /// `vs` with samples in `[min_ms, max_ms]` (staleness markers included) and hands
    /// each row to `sink` in series order. `per` appends the series' row to `row` and
    /// returns the row's labels (see [`OutLabels`]), or `None` when the series has no output. `steps`, the
    /// most entries a row can have, bounds the size of parts.
    pub fn select_rows<F>(
        &self,
        vs: &VectorSelector,
        min_ms: i64,
        max_ms: i64,
        steps: usize,
        per: &F,
        sink: &mut RowSink,
    ) -> Result<(), PromError>
    where
        F: Fn(&Labels, SeriesInput<'_>, &mut Scratch, &mut Row) -> Result<OutLabels, PromError> + Sync,
    {
        let matchers = Ctx::matchers(vs)?;
        let req = self.select_request(&matchers, min_ms, max_ms);
        let mut scratch = Scratch::default();
        let mut row = Row::default();
        let Some(items) = self.src.scan_list(&req).map_err(storage)? else {
            // A sequential-only source.
            return self.scan_request(&req, &mut |labels, ts, vals| {
                row.clear();
                match per(labels, SeriesInput::Columns(ts, vals), &mut scratch, &mut row)? {
                    Some((l, drop_name)) => sink(RowLabels { labels: &l, drop_name }, &row.runs),
                    None => Ok(()),
                }
            });
        };
        let threads = self.threads_for(items.len());
        if threads <= 1 {
            let mut ld = Loader::default();
            for item in &items {
                row.clear();
                if let Some((l, drop_name)) = self.eval_item(&req, item, &mut ld, &mut scratch, per, &mut row)? {
                    sink(RowLabels { labels: &l, drop_name }, &row.runs)?;
                }
            }
            return self.flush_samples(&mut ld.samples);
        }
        self.rows_parallel(&req, &items, threads, steps, per, sink)
    }

    /// Reads one listed series and computes its row (appended to `row`).
    fn eval_item<F>(
        &self,
        req: &SelectRequest<'_>,
        item: &ScanItem,
        ld: &mut Loader,
        scratch: &mut Scratch,
        per: &F,
        row: &mut Row,
    ) -> Result<OutLabels, PromError>
    where
        F: Fn(&Labels, SeriesInput<'_>, &mut Scratch, &mut Row) -> Result<OutLabels, PromError> + Sync,
    {
        let Some(view) = self.src.read_item(req, item, &mut ld.buf).map_err(storage)? else {
            return Ok(None);
        };
        self.add_samples_local(view.ts.len(), &mut ld.samples)?;
        per(&item.labels, SeriesInput::View(&view), scratch, row)
    }

    fn rows_parallel<F>(
        &self,
        req: &SelectRequest<'_>,
        items: &[ScanItem],
        threads: usize,
        steps: usize,
        per: &F,
        sink: &mut RowSink,
    ) -> Result<(), PromError>
    where
        F: Fn(&Labels, SeriesInput<'_>, &mut Scratch, &mut Row) -> Result<OutLabels, PromError> + Sync,
    {
        let n = items.len();
        let budget = (PART_VALUES / steps.max(1)).max(1);
        let part_len = n.div_ceil(threads * PARTS_PER_THREAD).clamp(1, budget);
        let parts = n.div_ceil(part_len);
        let ahead = 2 * threads;
        let claim = AtomicUsize::new(0);
        let fold = Fold {
            pending: Mutex::new(Pending::default()),
            consumer: Mutex::new(sink),
            progress: Condvar::new(),
        };
        let work = || {
            let mut ld = Loader::default();
            let mut scratch = Scratch::default();
            loop {
                let j = claim.fetch_add(1, Ordering::Relaxed);
                if j >= parts {
                    return;
                }
                let mut part = {
                    let mut p = fold.pending.lock();
                    // The thread holding part `p.consumed` never waits here (j ==
                    // consumed < consumed + ahead), so folding always progresses.
                    while p.failed.is_none() && j >= p.consumed + ahead {
                        fold.progress.wait(&mut p);
                    }
                    if p.failed.is_some() {
                        return;
                    }
                    p.free.pop().unwrap_or_default()
                };
                part.clear();
                let lo = j * part_len;
                let hi = (lo + part_len).min(n);
                for item in &items[lo..hi] {
                    let from = part.row.len();
                    match self.eval_item(req, item, &mut ld, &mut scratch, per, &mut part.row) {
                        Ok(Some(out)) => {
                            part.labels.push(out);
                            part.ends.push(part.row.len());
                        }
                        Ok(None) => part.row.truncate(from),
                        Err(e) => {
                            part.row.truncate(from);
                            part.err = Some(e);
                            break;
                        }
                    }
                }
                if let Err(e) = self.flush_samples(&mut ld.samples) {
                    part.err.get_or_insert(e);
                }
                fold.deposit(j, part);
                if fold.pending.lock().failed.is_some() {
                    return;
                }
            }
        };
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(work);
            }
            work();
        });
        let p = fold.pending.into_inner();
        if let Some(e) = p.failed {
            return Err(e);
        }
        if p.consumed != parts {
            // Unreachable: every part is claimed, computed and deposited unless a part
            // failed, and deposited parts are folded in order (see `Fold::deposit`).
            return Err(PromError::Execution(format!(
                "internal error: {} of {parts} series parts evaluated",
                p.consumed
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LabelLimits;
    use crate::query::promql::memsource::MemSource;
    use crate::query::promql::{range_query, EngineOptions, QueryValue};
    use proptest::prelude::*;

    fn source(series: usize, seed: u64) -> MemSource {
        let limits = LabelLimits::default();
        let data = (0..series)
            .map(|i| {
                let labels = Labels::from_pairs(
                    [
                        ("__name__", if i % 5 == 0 { "b" } else { "a" }.to_string()),
                        ("g", format!("g{}", (i as u64 * 7 + seed) % 4)),
                        ("i", format!("{i:03}")),
                    ],
                    &limits,
                )
                .expect("valid labels");
                // Irregular spacing, gaps, counter resets, a NaN and a stale marker now and then.
                let pts = (0..60u64)
                    .filter(|k| (k * 13 + i as u64 + seed) % 7 != 0)
                    .map(|k| {
                        let t = (k * 15_000 + (k * i as u64 + seed) % 9_000) as i64;
                        let x = (k * 31 + i as u64 * 17 + seed) % 101;
                        let v = match x {
                            0 => f64::NAN,
                            1 => f64::from_bits(crate::query::promql::value::STALE_NAN_BITS),
                            _ if x < 10 => x as f64 * 1e-3,
                            _ => (k as f64) * (x as f64) / 3.0 + seed as f64,
                        };
                        (t, v)
                    })
                    .collect();
                (labels, pts)
            })
            .collect();
        MemSource::from_ms(data)
    }

    fn run(src: &MemSource, q: &str, threads: usize, min_series: usize) -> Result<QueryValue, PromError> {
        let opts = EngineOptions {
            threads,
            min_series_per_thread: min_series,
            ..EngineOptions::default()
        };
        range_query(src, None, q, 0, 900_000, 10_000, &opts)
    }

    /// Bit-level equality (NaN == NaN), so that "same result" means the same floats.
    fn same(a: &Result<QueryValue, PromError>, b: &Result<QueryValue, PromError>) -> bool {
        match (a, b) {
            (Ok(QueryValue::Matrix(x)), Ok(QueryValue::Matrix(y))) => {
                x.len() == y.len()
                    && x.iter().zip(y).all(|(s, t)| {
                        s.labels == t.labels
                            && s.points.len() == t.points.len()
                            && s.points
                                .iter()
                                .zip(&t.points)
                                .all(|(p, q)| p.0 == q.0 && p.1.to_bits() == q.1.to_bits())
                    })
            }
            (Err(x), Err(y)) => x == y,
            _ => false,
        }
    }

    const QUERIES: &[&str] = &[
        "sum by (g) (rate(a[1m]))",
        "sum(sum_over_time(a[2m]))",
        "avg by (g) (avg_over_time(a[45s]))",
        "topk(3, sum_over_time(a[1m]))",
        "bottomk(2, max_over_time(a[1m]))",
        "count without (i) (a)",
        "stddev by (g) (a)",
        "quantile(0.3, rate(a[1m]))",
        "count_values(\"v\", count_over_time(a[1m]))",
        "min by (g) (deriv(a[2m]))",
        "sum by (g) (rate({__name__=~\"a|b\"}[1m]))",
        "sum by (g) (irate(a[1m]))",
        "max by (g) (increase(a[1m]))",
        "group by (g) (last_over_time(a[30s]))",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Any thread count and part size gives bit-identical results (and the same
        /// errors) as the sequential evaluation.
        #[test]
        fn parallel_equals_sequential(series in 1usize..70, seed in 0u64..1000, threads in 2usize..5) {
            let src = source(series, seed);
            for q in QUERIES {
                let seq = run(&src, q, 1, 64);
                // Series 0 is the only `b` series; from two series on, `a` has data.
                if series >= 2 {
                    prop_assert!(matches!(&seq, Ok(QueryValue::Matrix(m)) if !m.is_empty()), "{q}: {seq:?}");
                }
                let par = run(&src, q, threads, 1);
                prop_assert!(same(&seq, &par), "{q}: {seq:?} vs {par:?}");
            }
        }
    }

    /// An error in one series stops the query with the same error as sequentially.
    #[test]
    fn parallel_reports_the_sequential_error() {
        let src = source(40, 3);
        // Dropping the metric name of a|b series makes no duplicate (distinct `i`), but
        // `without (i)` grouping inside a function argument does; use holt_winters'
        // parameter check instead, which fails on the first series with two points.
        let q = "sum(holt_winters(a[1m], 2, 0.5))";
        let seq = run(&src, q, 1, 64);
        let par = run(&src, q, 3, 1);
        assert!(seq.is_err());
        assert!(same(&seq, &par), "{seq:?} vs {par:?}");
    }
}
