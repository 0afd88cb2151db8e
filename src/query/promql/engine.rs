//! The evaluator: walks the AST over an evaluation range (one step for instant
//! queries), reads series through the [`SeriesSource`] and applies Prometheus 2.x
//! selector semantics (lookback, staleness, closed range windows, offset and `@`,
//! subqueries). Operators live in `aggregate`, `binary` and `functions`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{AtModifier, Expr, Offset, SubqueryExpr, VectorSelector};

use super::input::SeriesInput;
pub(crate) use super::memo::LabelMemo;
use super::rows::{FnMemo, OutLabels, Row, RowLabels, RowSink, Run, Scratch};
use super::value::{is_stale, Elem, QueryValue, Series, Val, Vector, VectorSample};
use super::{aggregate, binary, functions, EngineOptions, PromError, NANOS_PER_MILLI};
use crate::index::{MatchOp, Matcher};
use crate::model::{Labels, METRIC_NAME};
use crate::store::{SelectRequest, SeriesSource, SeriesView, Visit};

/// Evaluation times: `start, start + step, … ≤ end` (ms). An instant query is a range
/// of one step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Range {
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

impl Range {
    pub fn instant(t: i64) -> Range {
        Range {
            start: t,
            end: t,
            step: 1,
        }
    }

    pub fn len(&self) -> usize {
        if self.end < self.start {
            0
        } else {
            ((i128::from(self.end) - i128::from(self.start)) / i128::from(self.step.max(1)) + 1) as usize
        }
    }

    pub fn t(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }
}

/// Where a range window sits relative to each evaluation step: `[ref - range, ref]`
/// with `ref = (at or t) - offset`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RangeSpec {
    pub range: i64,
    pub offset: i64,
    pub at: Option<i64>,
}

impl RangeSpec {
    /// The reference (right) end of the window evaluated at step time `t`.
    pub fn end_at(&self, t: i64) -> i64 {
        self.at.unwrap_or(t).saturating_sub(self.offset)
    }

    /// The time range (ms) of every point some step of `rng` may use.
    pub fn bounds(&self, rng: &Range) -> (i64, i64) {
        (self.end_at(rng.start).saturating_sub(self.range), self.end_at(rng.end))
    }

    /// The points of `pts` (sorted by time) in the closed window for step time `t`.
    pub fn window<'p>(&self, pts: &'p [(i64, f64)], t: i64) -> &'p [(i64, f64)] {
        let end = self.end_at(t);
        let start = end.saturating_sub(self.range);
        let lo = pts.partition_point(|p| p.0 < start);
        let hi = pts.partition_point(|p| p.0 <= end);
        if lo >= hi {
            &[]
        } else {
            &pts[lo..hi]
        }
    }
}

/// Receives one selected series: labels, timestamps (ms) and values.
type SeriesFn<'f> = dyn FnMut(&Labels, &[i64], &[f64]) -> Result<(), PromError> + 'f;

/// Receives one range-vector series: labels, all its points, and the window geometry.
pub(crate) type RangeSeriesFn<'f> = dyn FnMut(&Labels, &[(i64, f64)], &RangeSpec) -> Result<(), PromError> + 'f;

/// Receives instant-selector samples: (step index, labels, sample time, value).
pub(crate) type InstantFn<'f> = dyn FnMut(usize, &Labels, i64, f64) -> Result<(), PromError> + 'f;

/// Per-query state shared by every node.
pub(crate) struct Ctx<'a> {
    pub src: &'a dyn SeriesSource,
    pub tenant: Option<&'a str>,
    pub opts: &'a EngineOptions,
    /// The outermost query's start and end, for `@ start()` / `@ end()`.
    pub query_start: i64,
    pub query_end: i64,
    deadline: Option<Instant>,
    /// Samples loaded so far; atomic because series may be evaluated on several
    /// threads (see `rows.rs`), which is also why `Ctx` must stay `Sync`.
    samples: AtomicUsize,
}

pub(crate) fn exec_instant(
    src: &dyn SeriesSource,
    tenant: Option<&str>,
    expr: &Expr,
    t: i64,
    opts: &EngineOptions,
) -> Result<QueryValue, PromError> {
    let ctx = Ctx::new(src, tenant, opts, t, t);
    let val = ctx.eval(expr, &Range::instant(t))?;
    Ok(match val {
        Val::Scalar(v) => QueryValue::Scalar {
            t,
            v: v.first().copied().unwrap_or(f64::NAN),
        },
        Val::String(s) => QueryValue::String { t, s },
        Val::Vector(mut steps) => {
            let vec = steps.pop().unwrap_or_default();
            QueryValue::Vector(
                vec.into_iter()
                    .map(|e| VectorSample {
                        labels: e.labels,
                        t,
                        v: e.v,
                    })
                    .collect(),
            )
        }
        Val::Matrix(m) => QueryValue::Matrix(m),
    })
}

pub(crate) fn exec_range(
    src: &dyn SeriesSource,
    tenant: Option<&str>,
    expr: &Expr,
    start: i64,
    end: i64,
    step: i64,
    opts: &EngineOptions,
) -> Result<QueryValue, PromError> {
    match expr.value_type() {
        ValueType::Scalar | ValueType::Vector => {}
        other => {
            return Err(PromError::BadData(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                match other {
                    ValueType::Matrix => "range vector",
                    _ => "string",
                }
            )))
        }
    }
    let ctx = Ctx::new(src, tenant, opts, start, end);
    let rng = Range { start, end, step };
    match ctx.eval(expr, &rng)? {
        Val::Scalar(v) => Ok(QueryValue::Matrix(vec![Series {
            labels: Labels::empty(),
            points: v.into_iter().enumerate().map(|(i, v)| (rng.t(i), v)).collect(),
        }])),
        Val::Vector(steps) => {
            let mut m = steps_to_series(&rng, steps);
            m.sort_by(|a, b| a.labels.cmp(&b.labels));
            Ok(QueryValue::Matrix(m))
        }
        other => Err(PromError::BadData(format!(
            "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
            other.type_name()
        ))),
    }
}

/// Regroups per-step vectors into series (first-appearance order).
///
/// Elements of one series usually share one label allocation at every step (an
/// aggregation hands out its group's labels), so the series is found by the
/// allocation's address first and by hashing every label only for an address not
/// seen yet (hashing the labels of each of ~50k result points cost milliseconds).
/// Each address entry holds a clone of its labels, which keeps the allocation alive
/// and its address from being reused by other labels.
pub(crate) fn steps_to_series(rng: &Range, steps: Vec<Vector>) -> Vec<Series> {
    type Fast = foldhash::fast::RandomState;
    let mut by_addr: HashMap<usize, (Labels, usize), Fast> = HashMap::default();
    let mut index: HashMap<Labels, usize, Fast> = HashMap::default();
    let mut out: Vec<Series> = Vec::new();
    for (i, vec) in steps.into_iter().enumerate() {
        let t = rng.t(i);
        for e in vec {
            let addr = e.labels.as_slice().as_ptr() as usize;
            let k = match by_addr.get(&addr) {
                Some(&(_, k)) => k,
                None => {
                    let n = out.len();
                    let k = *index.entry(e.labels.clone()).or_insert(n);
                    if k == n {
                        out.push(Series {
                            labels: e.labels.clone(),
                            points: Vec::with_capacity(rng.len().min(1024)),
                        });
                    }
                    by_addr.insert(addr, (e.labels, k));
                    k
                }
            };
            out[k].points.push((t, e.v));
        }
    }
    out
}

/// Prometheus rejects a vector in which two elements have the same labels (typically
/// after a function dropped the metric name of `{__name__=~"a|b"}`).
pub(crate) fn check_dups(v: &Vector) -> Result<(), PromError> {
    if v.len() < 2 {
        return Ok(());
    }
    let mut seen = HashSet::with_capacity(v.len());
    for e in v {
        if !seen.insert(&e.labels) {
            return Err(dup_labelset());
        }
    }
    Ok(())
}

pub(crate) fn dup_labelset() -> PromError {
    PromError::Execution("vector cannot contain metrics with the same labelset".into())
}

/// Strips redundant parentheses.
pub(crate) fn unparen(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => dur_ms(&d),
        Err(e) => -dur_ms(&e.duration()),
    }
}

/// A duration in ms, clamped so that time arithmetic on it cannot overflow.
pub(crate) fn dur_ms(d: &std::time::Duration) -> i64 {
    d.as_millis().min((i64::MAX / 4) as u128) as i64
}

pub(crate) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => dur_ms(d),
        Some(Offset::Neg(d)) => -dur_ms(d),
    }
}

/// Series between deadline checks of a thread reading many ([`Ctx::add_samples_local`]):
/// a clock read per series was measurable at 10k series, and 64 series take well
/// under a millisecond.
const DEADLINE_EVERY: usize = 64;

/// Samples one thread has loaded and not yet added to the query's shared count, and
/// the series it has read. Adding to the shared counter for every series made the
/// threads of a query bounce its cache line between cores; a thread adds its pending
/// samples once per part ([`Ctx::flush_samples`]) and checks the budget against the
/// shared count plus its own. Alone, a thread counts exactly; together, the budget
/// can be passed by at most the other threads' unflushed parts before it fails.
#[derive(Debug, Default)]
pub(crate) struct LocalSamples {
    pending: usize,
    series: usize,
}

fn too_many_samples() -> PromError {
    PromError::Execution("query processing would load too many samples into memory in query execution".into())
}

fn ms_to_ns(ms: i64) -> i64 {
    ms.saturating_mul(NANOS_PER_MILLI)
}

impl<'a> Ctx<'a> {
    fn new(
        src: &'a dyn SeriesSource,
        tenant: Option<&'a str>,
        opts: &'a EngineOptions,
        query_start: i64,
        query_end: i64,
    ) -> Ctx<'a> {
        Ctx {
            src,
            tenant,
            opts,
            query_start,
            query_end,
            deadline: opts.timeout.map(|d| Instant::now() + d),
            samples: AtomicUsize::new(0),
        }
    }

    /// Fails with [`PromError::Timeout`] once the deadline has passed.
    pub fn check_deadline(&self) -> Result<(), PromError> {
        match self.deadline {
            Some(d) if Instant::now() >= d => Err(PromError::Timeout),
            _ => Ok(()),
        }
    }

    /// Accounts `n` more samples held by the query; fails past `max_samples`.
    pub fn add_samples(&self, n: usize) -> Result<(), PromError> {
        // `fetch_add` cannot saturate; `n` per call is bounded by one series' samples,
        // so the counter stays far from overflow before `max_samples` stops the query.
        let total = self.samples.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if total > self.opts.max_samples {
            return Err(too_many_samples());
        }
        Ok(())
    }

    /// Accounts one series of `n` samples read by a thread evaluating many (see
    /// [`LocalSamples`]): the deadline every [`DEADLINE_EVERY`] series, the budget
    /// against the query's count plus the thread's own pending samples.
    pub fn add_samples_local(&self, n: usize, local: &mut LocalSamples) -> Result<(), PromError> {
        if local.series % DEADLINE_EVERY == 0 {
            self.check_deadline()?;
        }
        local.series += 1;
        local.pending = local.pending.saturating_add(n);
        if self.samples.load(Ordering::Relaxed).saturating_add(local.pending) > self.opts.max_samples {
            return Err(too_many_samples());
        }
        Ok(())
    }

    /// Adds a thread's pending samples to the query's count.
    pub fn flush_samples(&self, local: &mut LocalSamples) -> Result<(), PromError> {
        self.add_samples(std::mem::take(&mut local.pending))
    }

    pub fn at_ms(&self, at: &Option<AtModifier>) -> Option<i64> {
        match at {
            None => None,
            Some(AtModifier::Start) => Some(self.query_start),
            Some(AtModifier::End) => Some(self.query_end),
            Some(AtModifier::At(t)) => Some(system_time_ms(t)),
        }
    }

    pub fn eval(&self, e: &Expr, rng: &Range) -> Result<Val, PromError> {
        self.check_deadline()?;
        match e {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(vec![n.val; rng.len()])),
            Expr::StringLiteral(s) => Ok(Val::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, rng),
            Expr::Unary(u) => match self.eval(&u.expr, rng)? {
                Val::Scalar(v) => Ok(Val::Scalar(v.into_iter().map(|x| -x).collect())),
                Val::Vector(mut steps) => {
                    let mut names = LabelMemo::new(Labels::without_metric_name);
                    for vec in &mut steps {
                        for el in vec.iter_mut() {
                            el.v = -el.v;
                            el.labels = names.get(&el.labels);
                        }
                        check_dups(vec)?;
                    }
                    Ok(Val::Vector(steps))
                }
                other => Err(PromError::Execution(format!(
                    "unary expression only allowed on expressions of type scalar or instant vector, got {}",
                    other.type_name()
                ))),
            },
            Expr::VectorSelector(vs) => Ok(Val::Vector(self.eval_vector_selector(vs, rng)?)),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                if rng.len() != 1 {
                    return Err(PromError::Execution(
                        "range vectors are only allowed as function arguments in range queries".into(),
                    ));
                }
                let t = rng.start;
                let mut out = Vec::new();
                self.for_each_range_series(e, rng, &mut |labels, pts, spec| {
                    let w = spec.window(pts, t);
                    if !w.is_empty() {
                        out.push(Series {
                            labels: labels.clone(),
                            points: w.to_vec(),
                        });
                    }
                    Ok(())
                })?;
                Ok(Val::Matrix(out))
            }
            Expr::Aggregate(a) => aggregate::eval(self, a, rng),
            Expr::Binary(b) => binary::eval(self, b, rng),
            Expr::Call(c) => functions::eval_call(self, c, rng),
            Expr::Extension(_) => Err(PromError::BadData("unsupported expression".into())),
        }
    }

    /// Evaluates `e` and requires an instant vector.
    pub fn eval_vector(&self, e: &Expr, rng: &Range) -> Result<Vec<Vector>, PromError> {
        match self.eval(e, rng)? {
            Val::Vector(v) => Ok(v),
            other => Err(PromError::Execution(format!(
                "expected instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    /// Evaluates `e` and requires a scalar (one value per step).
    pub fn eval_scalar(&self, e: &Expr, rng: &Range) -> Result<Vec<f64>, PromError> {
        match self.eval(e, rng)? {
            Val::Scalar(v) => Ok(v),
            other => Err(PromError::Execution(format!(
                "expected scalar, got {}",
                other.type_name()
            ))),
        }
    }

    /// Converts a selector's matchers (plus its metric name) to the store's matchers.
    pub fn matchers(vs: &VectorSelector) -> Result<Vec<Matcher>, PromError> {
        let mut out = Vec::with_capacity(vs.matchers.matchers.len() + 1);
        if let Some(name) = &vs.name {
            if !vs.matchers.matchers.iter().any(|m| m.name == METRIC_NAME) {
                out.push(Matcher::equal(METRIC_NAME, name.clone()));
            }
        }
        for m in &vs.matchers.matchers {
            let op = match m.op {
                PMatchOp::Equal => MatchOp::Equal,
                PMatchOp::NotEqual => MatchOp::NotEqual,
                PMatchOp::Re(_) => MatchOp::Regex,
                PMatchOp::NotRe(_) => MatchOp::NotRegex,
            };
            // Prometheus 2.x compiles `^(?:re)$`, where `.` does not match a newline; the
            // store's matcher uses 3.x's dot-all. Only `.` depends on the flag, so only
            // patterns containing one are wrapped (others stay optimizable as-is).
            let value = if matches!(op, MatchOp::Regex | MatchOp::NotRegex) && m.value.contains('.') {
                format!("(?-s:{})", m.value)
            } else {
                m.value.clone()
            };
            out.push(Matcher::new(op, m.name.clone(), value).map_err(|e| PromError::BadData(e.to_string()))?);
        }
        Ok(out)
    }

    /// Whether every series `vs` selects has the same metric name (an equality
    /// matcher on it), so that dropping the name keeps their label sets distinct.
    pub fn selects_one_name(vs: &VectorSelector) -> bool {
        let mut on_name = vs.matchers.matchers.iter().filter(|m| m.name == METRIC_NAME).peekable();
        match on_name.peek() {
            None => vs.name.is_some(),
            Some(_) => on_name.any(|m| matches!(m.op, PMatchOp::Equal)),
        }
    }

    /// Streams the series matching `vs` with samples in `[min_ms, max_ms]` to `f` as
    /// labels and (ms, value) points, one series at a time.
    fn select(&self, vs: &VectorSelector, min_ms: i64, max_ms: i64, f: &mut SeriesFn) -> Result<(), PromError> {
        let matchers = Self::matchers(vs)?;
        self.scan_request(&self.select_request(&matchers, min_ms, max_ms), f)
    }

    /// The store request for series matching `matchers` with samples in `[min_ms, max_ms]`.
    pub fn select_request<'m>(&self, matchers: &'m [Matcher], min_ms: i64, max_ms: i64) -> SelectRequest<'m>
    where
        'a: 'm,
    {
        SelectRequest {
            tenant: self.tenant,
            matchers,
            start: ms_to_ns(min_ms),
            end: ms_to_ns(max_ms),
        }
    }

    /// Streams the series of `req` to `f` as labels, times (ms) and values.
    pub fn scan_request(&self, req: &SelectRequest<'_>, f: &mut SeriesFn) -> Result<(), PromError> {
        // Buffers reused for every series; the source lends its own likewise.
        let (mut ts_ms, mut vals) = (Vec::new(), Vec::new());
        let mut failed: Option<PromError> = None;
        let mut visit = |s: SeriesView<'_>| -> Visit {
            let r = self
                .load_view(&s, &mut ts_ms, &mut vals)
                .and_then(|()| f(s.labels, &ts_ms, &vals));
            match r {
                Ok(()) => Visit::Continue(()),
                Err(e) => {
                    failed = Some(e);
                    Visit::Break(())
                }
            }
        };
        self.src
            .scan(req, &mut visit)
            .map_err(|e| PromError::Storage(e.to_string()))?;
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Accounts for one series read from the source (deadline, sample budget) and
    /// converts its samples to times in ms and f64 values in `ts_ms` / `vals`.
    pub fn load_view(&self, s: &SeriesView<'_>, ts_ms: &mut Vec<i64>, vals: &mut Vec<f64>) -> Result<(), PromError> {
        self.check_deadline()?;
        self.add_samples(s.ts.len())?;
        super::input::convert_view(s, ts_ms, vals)
    }

    /// Instant-selector semantics: at each step, the latest sample at or before
    /// `(at or t) - offset`, if not older than the lookback and not a staleness
    /// marker. Calls `f(step, labels, sample_time, value)`.
    pub fn select_instant(&self, vs: &VectorSelector, rng: &Range, f: &mut InstantFn) -> Result<(), PromError> {
        let n = rng.len();
        if n == 0 {
            return Ok(());
        }
        let look = InstantLookup::new(self, vs);
        let (from, to) = look.bounds(rng);
        self.select(vs, from, to, &mut |labels, ts, vals| {
            let mut produced = 0;
            for i in 0..n {
                if let Some(j) = look.sample_at(ts, vals, rng, i) {
                    produced += 1;
                    f(i, labels, ts[j], vals[j])?;
                }
            }
            self.add_samples(produced)
        })
    }

    fn eval_vector_selector(&self, vs: &VectorSelector, rng: &Range) -> Result<Vec<Vector>, PromError> {
        let mut steps: Vec<Vector> = vec![Vec::new(); rng.len()];
        self.select_instant(vs, rng, &mut |i, labels, _, v| {
            steps[i].push(Elem {
                labels: labels.clone(),
                v,
            });
            Ok(())
        })?;
        Ok(steps)
    }

    /// Evaluates an instant-vector expression, handing its output to `sink` series by
    /// series (see `rows.rs`). Selectors and range functions stream series by series
    /// without materializing their result, on several threads for many series; other
    /// expressions are evaluated and then replayed one sample per row, in the per-step
    /// order [`Ctx::eval_vector`] produces.
    pub fn stream_rows(&self, e: &Expr, rng: &Range, sink: &mut RowSink) -> Result<(), PromError> {
        match unparen(e) {
            Expr::VectorSelector(vs) => self.instant_rows(vs, rng, sink),
            Expr::Call(c) => match functions::stream_range(self, c, rng, sink) {
                Some(r) => r,
                None => self.replay(e, rng, sink),
            },
            _ => self.replay(e, rng, sink),
        }
    }

    fn replay(&self, e: &Expr, rng: &Range, sink: &mut RowSink) -> Result<(), PromError> {
        for (i, vec) in self.eval_vector(e, rng)?.iter().enumerate() {
            for el in vec {
                let run = Run {
                    from: i,
                    to: i + 1,
                    v: el.v,
                };
                sink(RowLabels::kept(&el.labels), &[run])?;
            }
        }
        Ok(())
    }

    /// [`Ctx::select_instant`] as rows: one row per series.
    fn instant_rows(&self, vs: &VectorSelector, rng: &Range, sink: &mut RowSink) -> Result<(), PromError> {
        let n = rng.len();
        if n == 0 {
            return Ok(());
        }
        let look = InstantLookup::new(self, vs);
        let (from, to) = look.bounds(rng);
        let per = |labels: &Labels, input: SeriesInput<'_>, sc: &mut Scratch, row: &mut Row| {
            let (ts, vals) = input.columns(&mut sc.ts, &mut sc.vals)?;
            let mut produced = 0;
            for i in 0..n {
                if let Some(j) = look.sample_at(ts, vals, rng, i) {
                    row.push(i, vals[j]);
                    produced += 1;
                }
            }
            self.add_samples(produced)?;
            Ok((produced > 0).then(|| (labels.clone(), false)))
        };
        self.select_rows(vs, from, to, n, &per, sink)
    }

    /// Like [`Ctx::for_each_range_series`], but `per(labels, points, spec, memo, row)`
    /// computes each series' output row (appending to `row`, returning its labels, see
    /// [`OutLabels`], or `None` without output), and the rows go to `sink` in series order. Matrix
    /// selectors evaluate series on several threads (see `rows.rs`).
    pub fn range_rows<G>(&self, arg: &Expr, rng: &Range, per: &G, sink: &mut RowSink) -> Result<(), PromError>
    where
        G: Fn(&Labels, &[(i64, f64)], &RangeSpec, &mut FnMemo, &mut Row) -> Result<OutLabels, PromError> + Sync,
    {
        match unparen(arg) {
            Expr::MatrixSelector(ms) => {
                let spec = self.matrix_spec(ms);
                let (first, last) = spec.bounds(rng);
                let per_series = |labels: &Labels, input: SeriesInput<'_>, sc: &mut Scratch, row: &mut Row| {
                    input.points(&mut sc.pts)?;
                    per(labels, &sc.pts, &spec, &mut sc.memo, row)
                };
                self.select_rows(&ms.vs, first, last, rng.len(), &per_series, sink)
            }
            Expr::Subquery(sq) => {
                let (series, spec) = self.eval_subquery(sq, rng)?;
                let mut row = Row::default();
                let mut memo = FnMemo::default();
                for s in &series {
                    self.check_deadline()?;
                    row.clear();
                    if let Some((l, drop_name)) = per(&s.labels, &s.points, &spec, &mut memo, &mut row)? {
                        sink(RowLabels { labels: &l, drop_name }, &row.runs)?;
                    }
                }
                Ok(())
            }
            other => Err(PromError::Execution(format!(
                "expected range vector, got {}",
                other.value_type()
            ))),
        }
    }

    /// The window of a matrix selector: its range, offset and `@`.
    pub(crate) fn matrix_spec(&self, ms: &promql_parser::parser::MatrixSelector) -> RangeSpec {
        RangeSpec {
            range: dur_ms(&ms.range),
            offset: offset_ms(&ms.vs.offset),
            at: self.at_ms(&ms.vs.at),
        }
    }

    /// Drives a range-vector argument (a matrix selector or a subquery, possibly in
    /// parentheses): calls `f(labels, points, spec)` once per series with all its
    /// points (stale markers removed) needed by any step; `spec.window` cuts the
    /// window of a step. Matrix selectors stream from storage one series at a time.
    pub fn for_each_range_series(&self, arg: &Expr, rng: &Range, f: &mut RangeSeriesFn) -> Result<(), PromError> {
        match unparen(arg) {
            Expr::MatrixSelector(ms) => {
                let spec = self.matrix_spec(ms);
                let (first, last) = spec.bounds(rng);
                let mut pts = Vec::new();
                self.select(&ms.vs, first, last, &mut |labels, ts, vals| {
                    pts.clear();
                    pts.extend(
                        ts.iter()
                            .zip(vals)
                            .filter(|(_, v)| !is_stale(**v))
                            .map(|(t, v)| (*t, *v)),
                    );
                    f(labels, &pts, &spec)
                })
            }
            Expr::Subquery(sq) => {
                let (series, spec) = self.eval_subquery(sq, rng)?;
                for s in &series {
                    self.check_deadline()?;
                    f(&s.labels, &s.points, &spec)?;
                }
                Ok(())
            }
            other => Err(PromError::Execution(format!(
                "expected range vector, got {}",
                other.value_type()
            ))),
        }
    }

    /// Evaluates a subquery's inner expression at its own aligned steps covering every
    /// window the outer range needs (as Prometheus 2.x does: inner steps are multiples
    /// of the subquery step, the first one at or after `start - offset - range`).
    fn eval_subquery(&self, sq: &SubqueryExpr, rng: &Range) -> Result<(Vec<Series>, RangeSpec), PromError> {
        let spec = RangeSpec {
            range: dur_ms(&sq.range),
            offset: offset_ms(&sq.offset),
            at: self.at_ms(&sq.at),
        };
        let step = match sq.step {
            Some(s) => dur_ms(&s),
            None => self.opts.default_subquery_step_ms,
        };
        if step <= 0 {
            return Err(PromError::BadData("subquery step must be positive".into()));
        }
        let lo = spec.end_at(rng.start).saturating_sub(spec.range);
        let mut start = step * lo.div_euclid(step);
        if start < lo {
            start += step;
        }
        let inner = Range {
            start,
            end: spec.end_at(rng.end),
            step,
        };
        // Every inner step holds at least a (possibly empty) vector: account the steps
        // like samples so that a tiny step over a huge range fails before allocating.
        self.add_samples(inner.len())?;
        let series = match self.eval(&sq.expr, &inner)? {
            Val::Vector(steps) => steps_to_series(&inner, steps),
            Val::Scalar(v) => vec![Series {
                labels: Labels::empty(),
                points: v.into_iter().enumerate().map(|(i, v)| (inner.t(i), v)).collect(),
            }],
            other => {
                return Err(PromError::Execution(format!(
                    "subquery is only allowed on instant vector, got {}",
                    other.type_name()
                )))
            }
        };
        let mut series = series;
        for s in &mut series {
            s.points.retain(|p| !is_stale(p.1));
        }
        Ok((series, spec))
    }
}

/// Where an instant selector looks at each step: the latest sample at or before
/// `(at or t) - offset`, if not older than the lookback and not a staleness marker.
/// One place for the rule, shared by the per-step and the per-series read paths.
struct InstantLookup {
    off: i64,
    at: Option<i64>,
    lookback: i64,
}

impl InstantLookup {
    fn new(ctx: &Ctx, vs: &VectorSelector) -> InstantLookup {
        InstantLookup {
            off: offset_ms(&vs.offset),
            at: ctx.at_ms(&vs.at),
            lookback: ctx.opts.lookback_ms,
        }
    }

    /// The time range (ms) of every sample some step of `rng` may use.
    fn bounds(&self, rng: &Range) -> (i64, i64) {
        let first = self.at.unwrap_or(rng.start).saturating_sub(self.off);
        let last = self.at.unwrap_or(rng.end).saturating_sub(self.off);
        (first.saturating_sub(self.lookback), last)
    }

    /// The index into `ts`/`vals` of the sample step `i` sees, if any.
    #[inline]
    fn sample_at(&self, ts: &[i64], vals: &[f64], rng: &Range, i: usize) -> Option<usize> {
        let r = self.at.unwrap_or(rng.t(i)).saturating_sub(self.off);
        let j = ts.partition_point(|&t| t <= r).checked_sub(1)?;
        (ts[j] >= r.saturating_sub(self.lookback) && !is_stale(vals[j])).then_some(j)
    }
}
