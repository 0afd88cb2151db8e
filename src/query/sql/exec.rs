//! Vectorised execution. The unit of work is a *chunk*: the samples of one series in
//! range. Label columns are constants of a chunk ([`Datum::S`]); `ts`, `value` and `cost`
//! are typed arrays ([`Datum::A`]). Label predicates and label-only group keys therefore
//! cost O(1) per series, and aggregates fold whole runs of rows with equal keys at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::agg::Acc;
use super::bind::BoundQuery;
use super::expr::{and3, eval_scalar, or3, CmpOp, Col, Expr};
use super::output::QueryResult;
use super::plan::{Plan, Select, TableKind};
use super::value::{compare, date_trunc, order, time_bucket, ArithOp, Type, Val};
use super::{ExecStats, QueryOptions, SqlError};
use crate::model::{Labels, ValueKind, TENANT};
use crate::store::{SampleValues, SelectRequest, SeriesSource};

/// A typed column of a chunk.
#[derive(Debug, Clone)]
pub enum Arr {
    Bool(Vec<bool>),
    Int(Vec<i64>),
    Float(Vec<f64>),
    /// DECIMAL nano-units.
    Dec(Vec<i128>),
    /// DECIMAL nano-units straight from a money series.
    Money(Vec<i64>),
    Ts(Vec<i64>),
    /// Anything else (may hold NULLs).
    Any(Vec<Val>),
}

impl Arr {
    pub fn at(&self, i: usize) -> Val {
        match self {
            Arr::Bool(v) => Val::Bool(v[i]),
            Arr::Int(v) => Val::Int(v[i]),
            Arr::Float(v) => Val::Float(v[i]),
            Arr::Dec(v) => Val::Dec(v[i]),
            Arr::Money(v) => Val::Dec(v[i] as i128),
            Arr::Ts(v) => Val::Ts(v[i]),
            Arr::Any(v) => v[i].clone(),
        }
    }

    fn eq_rows(&self, i: usize, j: usize) -> bool {
        match self {
            Arr::Bool(v) => v[i] == v[j],
            Arr::Int(v) | Arr::Ts(v) | Arr::Money(v) => v[i] == v[j],
            Arr::Float(v) => v[i].to_bits() == v[j].to_bits(),
            Arr::Dec(v) => v[i] == v[j],
            Arr::Any(v) => v[i] == v[j],
        }
    }
}

#[derive(Debug, Clone)]
pub enum Datum {
    /// The same value on every row of the chunk.
    S(Val),
    A(Arr),
}

impl Datum {
    pub fn at(&self, i: usize) -> Val {
        match self {
            Datum::S(v) => v.clone(),
            Datum::A(a) => a.at(i),
        }
    }

    fn eq_rows(&self, i: usize, j: usize) -> bool {
        match self {
            Datum::S(_) => true,
            Datum::A(a) => a.eq_rows(i, j),
        }
    }
}

enum Vals {
    Float(Vec<f64>),
    Money(Vec<i64>),
}

/// The samples of one series (after filtering).
struct Chunk {
    labels: Labels,
    tenant: Val,
    metric: Val,
    ts: Vec<i64>,
    vals: Vals,
}

impl Chunk {
    fn len(&self) -> usize {
        self.ts.len()
    }

    fn scalar(&self, c: &Col) -> Option<Val> {
        match c {
            Col::Tenant => Some(self.tenant.clone()),
            Col::Metric => Some(self.metric.clone()),
            Col::Label(n) => Some(self.labels.get(n).map_or(Val::Null, Val::str)),
            _ => None,
        }
    }

    fn col(&self, c: &Col) -> Datum {
        if let Some(v) = self.scalar(c) {
            return Datum::S(v);
        }
        Datum::A(match (c, &self.vals) {
            (Col::Ts, _) => Arr::Ts(self.ts.clone()),
            (Col::Value, Vals::Float(v)) => Arr::Float(v.clone()),
            (Col::Value, Vals::Money(v)) => {
                Arr::Float(v.iter().map(|x| super::value::dec_to_f64(*x as i128)).collect())
            }
            (_, Vals::Money(v)) => Arr::Money(v.clone()),
            (_, Vals::Float(v)) => Arr::Any(vec![Val::Null; v.len()]),
        })
    }

    fn leaf_at(&self, e: &Expr, i: usize) -> Val {
        match e {
            Expr::Col(c) => self.scalar(c).unwrap_or_else(|| self.col(c).at(i)),
            _ => Val::Null,
        }
    }

    fn filter(&mut self, keep: &[bool]) {
        let mut k = keep.iter();
        self.ts.retain(|_| *k.next().unwrap_or(&false));
        let mut k = keep.iter();
        match &mut self.vals {
            Vals::Float(v) => v.retain(|_| *k.next().unwrap_or(&false)),
            Vals::Money(v) => v.retain(|_| *k.next().unwrap_or(&false)),
        }
    }
}

fn chunk_const(e: &Expr) -> bool {
    let mut c = true;
    e.walk(&mut |n| {
        if matches!(n, Expr::Col(Col::Ts | Col::Value | Col::Cost)) {
            c = false;
        }
    });
    c
}

fn cmp_arr<T: Copy>(v: &[T], s: T, op: CmpOp, f: impl Fn(T, T) -> Option<std::cmp::Ordering>) -> Arr {
    Arr::Bool(v.iter().map(|x| f(*x, s).is_some_and(|o| op.test(o))).collect())
}

/// Evaluates `e` over a chunk, vectorised where a kernel exists, row by row otherwise.
fn eval(e: &Expr, ch: &Chunk) -> Result<Datum, SqlError> {
    if chunk_const(e) {
        return Ok(Datum::S(eval_scalar(e, &|l| ch.leaf_at(l, 0))?));
    }
    let fast = match e {
        Expr::Col(c) => Some(ch.col(c)),
        Expr::Cmp(op, a, b) => {
            let (da, db) = (eval(a, ch)?, eval(b, ch)?);
            let (op, arr, s) = match (&da, &db) {
                (Datum::A(x), Datum::S(s)) => (*op, x, s),
                (Datum::S(s), Datum::A(x)) => (op.flip(), x, s),
                _ => (*op, &Arr::Any(vec![]), &Val::Null),
            };
            match (arr, s) {
                (_, Val::Null) if !matches!(arr, Arr::Any(_)) => Some(Datum::S(Val::Null)),
                (Arr::Ts(v), Val::Ts(t)) => Some(Datum::A(cmp_arr(v, *t, op, |a, b| Some(a.cmp(&b))))),
                (Arr::Float(v), s) if s.as_f64().is_some() => {
                    let t = s.as_f64().unwrap_or(f64::NAN);
                    Some(Datum::A(cmp_arr(v, t, op, |a, b| a.partial_cmp(&b))))
                }
                (Arr::Money(v), Val::Dec(_) | Val::Int(_)) => {
                    let t = match s {
                        Val::Dec(d) => *d,
                        Val::Int(i) => *i as i128 * super::value::SCALE,
                        _ => 0,
                    };
                    Some(Datum::A(Arr::Bool(
                        v.iter().map(|x| op.test((*x as i128).cmp(&t))).collect(),
                    )))
                }
                _ => None,
            }
        }
        Expr::And(a, b) | Expr::Or(a, b) => {
            let is_and = matches!(e, Expr::And(..));
            match (eval(a, ch)?, eval(b, ch)?) {
                (Datum::A(Arr::Bool(x)), Datum::A(Arr::Bool(y))) => Some(Datum::A(Arr::Bool(
                    x.iter()
                        .zip(&y)
                        .map(|(p, q)| if is_and { *p && *q } else { *p || *q })
                        .collect(),
                ))),
                (Datum::A(Arr::Bool(x)), Datum::S(s)) | (Datum::S(s), Datum::A(Arr::Bool(x))) => {
                    let t = s.truth();
                    let f = |p: bool| if is_and { and3(Some(p), t) } else { or3(Some(p), t) };
                    match (f(true), f(false)) {
                        (Some(true), Some(false)) => Some(Datum::A(Arr::Bool(x))),
                        (Some(a1), Some(a2)) if a1 == a2 => Some(Datum::S(Val::Bool(a1))),
                        _ => None,
                    }
                }
                _ => None,
            }
        }
        Expr::Not(a) => match eval(a, ch)? {
            Datum::A(Arr::Bool(x)) => Some(Datum::A(Arr::Bool(x.iter().map(|b| !b).collect()))),
            _ => None,
        },
        Expr::DateTrunc(u, a) => match eval(a, ch)? {
            Datum::A(Arr::Ts(v)) => Some(Datum::A(Arr::Ts(v.iter().map(|t| date_trunc(*u, *t)).collect()))),
            _ => None,
        },
        Expr::TimeBucket(w, a) => match eval(a, ch)? {
            Datum::A(Arr::Ts(v)) => Some(Datum::A(Arr::Ts(v.iter().map(|t| time_bucket(*w, *t)).collect()))),
            _ => None,
        },
        Expr::Arith(op, a, b) => match (eval(a, ch)?, eval(b, ch)?) {
            (Datum::A(Arr::Float(v)), Datum::S(Val::Float(s))) => Some(Datum::A(Arr::Float(match op {
                ArithOp::Add => v.iter().map(|x| x + s).collect(),
                ArithOp::Sub => v.iter().map(|x| x - s).collect(),
                ArithOp::Mul => v.iter().map(|x| x * s).collect(),
                _ => return generic(e, ch),
            }))),
            (Datum::A(Arr::Ts(v)), Datum::S(Val::Interval(s))) if matches!(op, ArithOp::Add | ArithOp::Sub) => {
                let s = if *op == ArithOp::Add { s } else { s.saturating_neg() };
                Some(Datum::A(Arr::Ts(v.iter().map(|x| x.saturating_add(s)).collect())))
            }
            _ => None,
        },
        _ => None,
    };
    match fast {
        Some(d) => Ok(d),
        None => generic(e, ch),
    }
}

/// Row-by-row fallback through the reference scalar semantics.
fn generic(e: &Expr, ch: &Chunk) -> Result<Datum, SqlError> {
    let mut out = Vec::with_capacity(ch.len());
    for i in 0..ch.len() {
        out.push(eval_scalar(e, &|l| ch.leaf_at(l, i))?);
    }
    Ok(Datum::A(Arr::Any(out)))
}

struct Guard<'a> {
    opts: &'a QueryOptions,
    started: Instant,
    stats: ExecStats,
    /// Rows scanned by every worker of the query.
    total_scanned: &'a AtomicU64,
}

impl Guard<'_> {
    fn scanned(&mut self, n: usize) -> Result<(), SqlError> {
        self.stats.rows_scanned += n as u64;
        self.stats.series += 1;
        let l = &self.opts.limits;
        let total = self.total_scanned.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if total > l.max_rows_scanned {
            return Err(SqlError::Limit(format!(
                "the query scanned more than {} rows (limit: max rows scanned, `tally serve --sql-max-rows-scanned`); \
                 narrow the time range or tenant",
                l.max_rows_scanned
            )));
        }
        if self.started.elapsed() > l.timeout {
            return Err(SqlError::Limit(format!(
                "the query ran longer than {:?} (limit: timeout, `tally serve --sql-timeout`)",
                l.timeout
            )));
        }
        Ok(())
    }

    fn memory(&self, bytes: usize) -> Result<(), SqlError> {
        if bytes > self.opts.limits.max_memory_bytes {
            return Err(SqlError::Limit(format!(
                "the query needs more than {} bytes of memory for results or groups (limit: max memory, \
                 `tally serve --sql-max-memory`); add filters or fewer GROUP BY keys",
                self.opts.limits.max_memory_bytes
            )));
        }
        Ok(())
    }
}

fn val_bytes(v: &Val) -> usize {
    48 + match v {
        Val::Str(s) => s.len(),
        _ => 0,
    }
}

/// What one worker produced.
struct Partial {
    groups: HashMap<Vec<Val>, usize>,
    states: Vec<(Vec<Val>, Vec<Acc>)>,
    rows: Vec<(Vec<Val>, Vec<Val>)>,
    stats: ExecStats,
}

/// Scans `selects` (one worker's share of the plan).
fn scan(
    src: &dyn SeriesSource,
    q: &BoundQuery,
    plan: &Plan,
    selects: &[Select],
    opts: &QueryOptions,
    started: Instant,
    total_scanned: &AtomicU64,
) -> Result<Partial, SqlError> {
    let mut g = Guard {
        opts,
        started,
        stats: ExecStats::default(),
        total_scanned,
    };
    let mut groups: HashMap<Vec<Val>, usize> = HashMap::new();
    let mut states: Vec<(Vec<Val>, Vec<Acc>)> = Vec::new();
    let mut group_bytes = 0usize;
    let mut rows: Vec<(Vec<Val>, Vec<Val>)> = Vec::new();
    let mut row_bytes = 0usize;
    let early_stop = (!q.aggregate && q.order.is_empty())
        .then(|| q.limit.map(|l| l.saturating_add(q.offset) as usize))
        .flatten();

    'scan: for sel in selects {
        g.stats.selects += 1;
        let req = SelectRequest {
            tenant: sel.tenant.as_deref(),
            matchers: &sel.matchers,
            start: plan.start,
            end: plan.end,
        };
        for s in src.select(&req)? {
            let s = s?;
            if q.table == TableKind::Costs && s.kind.value != ValueKind::Money {
                continue;
            }
            g.scanned(s.ts.len())?;
            let tenant = Val::str(s.labels.tenant().unwrap_or(&opts.default_tenant));
            let metric = s.labels.metric_name().map_or(Val::Null, Val::str);
            let vals = match s.values {
                SampleValues::Float(v) => Vals::Float(v),
                SampleValues::Money(v) => Vals::Money(v),
            };
            let mut ch = Chunk {
                labels: s.labels,
                tenant,
                metric,
                ts: s.ts,
                vals,
            };
            if let Some(f) = &plan.residual {
                match eval(f, &ch)? {
                    Datum::S(v) => {
                        if v.truth() != Some(true) {
                            continue;
                        }
                    }
                    Datum::A(Arr::Bool(mask)) => ch.filter(&mask),
                    Datum::A(a) => {
                        let mask: Vec<bool> = (0..ch.len()).map(|i| a.at(i).truth() == Some(true)).collect();
                        ch.filter(&mask);
                    }
                }
            }
            let n = ch.len();
            if n == 0 {
                continue;
            }
            if q.aggregate {
                let keys: Vec<Datum> = q.keys.iter().map(|k| eval(k, &ch)).collect::<Result<_, _>>()?;
                let args: Vec<Option<Datum>> = q
                    .aggs
                    .iter()
                    .map(|a| a.arg.as_ref().map(|x| eval(x, &ch)).transpose())
                    .collect::<Result<_, _>>()?;
                let all_const = keys.iter().all(|k| matches!(k, Datum::S(_)));
                let mut i = 0;
                while i < n {
                    let mut j = i + 1;
                    if all_const {
                        j = n;
                    } else {
                        while j < n && keys.iter().all(|k| k.eq_rows(i, j)) {
                            j += 1;
                        }
                    }
                    let key: Vec<Val> = keys.iter().map(|k| k.at(i)).collect();
                    let gi = match groups.get(&key) {
                        Some(gi) => *gi,
                        None => {
                            group_bytes += key.iter().map(val_bytes).sum::<usize>() + 64 * (1 + q.aggs.len());
                            g.memory(group_bytes)?;
                            states.push((key.clone(), q.aggs.iter().map(Acc::new).collect()));
                            groups.insert(key, states.len() - 1);
                            states.len() - 1
                        }
                    };
                    for (acc, d) in states[gi].1.iter_mut().zip(&args) {
                        let before = acc.heap_bytes();
                        acc.update(d.as_ref(), i, j)?;
                        group_bytes += acc.heap_bytes() - before;
                    }
                    i = j;
                }
                g.memory(group_bytes)?;
            } else {
                let outs: Vec<Datum> = q.outputs.iter().map(|o| eval(&o.1, &ch)).collect::<Result<_, _>>()?;
                let ords: Vec<Datum> = q.order.iter().map(|o| eval(&o.0, &ch)).collect::<Result<_, _>>()?;
                for i in 0..n {
                    let r: Vec<Val> = outs.iter().map(|d| d.at(i)).collect();
                    let o: Vec<Val> = ords.iter().map(|d| d.at(i)).collect();
                    row_bytes += r.iter().chain(&o).map(val_bytes).sum::<usize>() + 48;
                    rows.push((r, o));
                    if early_stop.is_some_and(|l| rows.len() >= l) {
                        break 'scan;
                    }
                }
                g.memory(row_bytes)?;
            }
        }
    }

    Ok(Partial {
        groups,
        states,
        rows,
        stats: g.stats,
    })
}

/// Runs a planned query. Aggregations over several tenants are split across worker
/// threads by tenant (each with its own group table, merged at the end).
pub fn run(
    src: &dyn SeriesSource,
    q: &BoundQuery,
    plan: &Plan,
    opts: &QueryOptions,
) -> Result<(QueryResult, ExecStats), SqlError> {
    let started = Instant::now();
    let total_scanned = AtomicU64::new(0);
    let mut selects = plan.selects.clone();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if q.aggregate && workers > 1 && selects.len() == 1 && selects[0].tenant.is_none() {
        let m = &selects[0].matchers;
        let mut tenants: BTreeSet<String> = src
            .label_values(None, TENANT, m, plan.start, plan.end)?
            .into_iter()
            .collect();
        tenants.insert(opts.default_tenant.clone());
        selects = tenants
            .into_iter()
            .map(|t| Select {
                tenant: Some(t),
                matchers: m.clone(),
            })
            .collect();
    }
    let parts: Vec<Partial> = if q.aggregate && workers > 1 && selects.len() > 1 {
        let shares: Vec<Vec<Select>> = (0..workers)
            .map(|w| selects.iter().skip(w).step_by(workers).cloned().collect())
            .collect();
        std::thread::scope(|sc| {
            let handles: Vec<_> = shares
                .iter()
                .map(|share| sc.spawn(|| scan(src, q, plan, share, opts, started, &total_scanned)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(SqlError::Exec("query worker panicked".into())))
                })
                .collect::<Result<Vec<_>, _>>()
        })?
    } else {
        vec![scan(src, q, plan, &selects, opts, started, &total_scanned)?]
    };
    let mut stats = ExecStats::default();
    let mut groups: HashMap<Vec<Val>, usize> = HashMap::new();
    let mut states: Vec<(Vec<Val>, Vec<Acc>)> = Vec::new();
    let mut rows: Vec<(Vec<Val>, Vec<Val>)> = Vec::new();
    for p in parts {
        stats.selects += p.stats.selects;
        stats.series += p.stats.series;
        stats.rows_scanned += p.stats.rows_scanned;
        rows.extend(p.rows);
        if states.is_empty() {
            groups = p.groups;
            states = p.states;
            continue;
        }
        for (key, accs) in p.states {
            match groups.get(&key) {
                Some(&gi) => {
                    for (a, b) in states[gi].1.iter_mut().zip(accs) {
                        a.merge(b)?;
                    }
                }
                None => {
                    groups.insert(key.clone(), states.len());
                    states.push((key, accs));
                }
            }
        }
    }

    if q.aggregate {
        if states.is_empty() && q.keys.is_empty() {
            states.push((vec![], q.aggs.iter().map(Acc::new).collect()));
        }
        for (key, accs) in &states {
            let vals: Vec<Val> = accs.iter().zip(&q.aggs).map(|(a, s)| a.finish(s.ty)).collect();
            let leaf = |e: &Expr| match e {
                Expr::Key(i) => key.get(*i).cloned().unwrap_or(Val::Null),
                Expr::Agg(i) => vals.get(*i).cloned().unwrap_or(Val::Null),
                _ => Val::Null,
            };
            if let Some(h) = &q.having {
                if eval_scalar(h, &leaf)?.truth() != Some(true) {
                    continue;
                }
            }
            let r: Vec<Val> = q
                .outputs
                .iter()
                .map(|o| eval_scalar(&o.1, &leaf))
                .collect::<Result<_, _>>()?;
            let o: Vec<Val> = q
                .order
                .iter()
                .map(|o| eval_scalar(&o.0, &leaf))
                .collect::<Result<_, _>>()?;
            rows.push((r, o));
        }
    }
    if !q.order.is_empty() {
        rows.sort_by(|a, b| {
            for (k, (_, desc, nulls_first)) in q.order.iter().enumerate() {
                let (x, y) = (&a.1[k], &b.1[k]);
                let c = match (x.is_null(), y.is_null()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => {
                        if *nulls_first {
                            std::cmp::Ordering::Less
                        } else {
                            std::cmp::Ordering::Greater
                        }
                    }
                    (false, true) => {
                        if *nulls_first {
                            std::cmp::Ordering::Greater
                        } else {
                            std::cmp::Ordering::Less
                        }
                    }
                    _ => {
                        let c = compare(x, y).unwrap_or_else(|| order(x, y));
                        if *desc {
                            c.reverse()
                        } else {
                            c
                        }
                    }
                };
                if c != std::cmp::Ordering::Equal {
                    return c;
                }
            }
            std::cmp::Ordering::Equal
        });
    }
    let types: Vec<Type> = q
        .outputs
        .iter()
        .map(|o| if o.2 == Type::Null { Type::Str } else { o.2 })
        .collect();
    let out_rows: Vec<Vec<Val>> = rows
        .into_iter()
        .skip(q.offset as usize)
        .take(q.limit.map_or(usize::MAX, |l| l as usize))
        .map(|(r, _)| r.into_iter().zip(&types).map(|(v, t)| v.cast_to(*t)).collect())
        .collect();
    let columns = q.outputs.iter().zip(&types).map(|(o, t)| (o.0.clone(), *t)).collect();
    Ok((
        QueryResult {
            columns,
            rows: out_rows,
        },
        stats,
    ))
}
