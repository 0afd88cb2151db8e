//! Tables, their schemas (discovered from the label index), and predicate pushdown:
//! time predicates become the select range (pruning partitions and blocks), tenant
//! predicates become per-tenant selects (tenant bitmaps), metric and label equality
//! become matchers (postings) — all before any sample column is decoded.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::bind::BoundQuery;
use super::expr::{CmpOp, Col, Expr};
use super::value::{Type, Val};
use super::{QueryOptions, SqlError};
use crate::index::{MatchOp, Matcher};
use crate::model::{METRIC_NAME, TENANT};
use crate::store::SeriesSource;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    Samples,
    Costs,
}

impl TableKind {
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Samples => "samples",
            TableKind::Costs => "costs",
        }
    }
}

/// Label columns every `costs` row has (NULL where a series lacks the label).
pub const COST_LABELS: &[&str] = &["currency", "source_metric", "sku", "cost_center"];

#[derive(Debug, Clone)]
pub struct Schema {
    pub table: TableKind,
    pub columns: Vec<(String, Col, Type)>,
}

impl Schema {
    pub fn find(&self, name: &str) -> Option<Col> {
        if let Some(c) = self.columns.iter().find(|c| c.0 == name) {
            return Some(c.1.clone());
        }
        let mut ci = self.columns.iter().filter(|c| c.0.eq_ignore_ascii_case(name));
        match (ci.next(), ci.next()) {
            (Some(c), None) => Some(c.1.clone()),
            _ => None,
        }
    }

    pub fn type_of(&self, c: &Col) -> Type {
        match c {
            Col::Ts => Type::Ts,
            Col::Value => Type::Float,
            Col::Cost => Type::Dec,
            _ => Type::Str,
        }
    }
}

/// The matchers that define a table's series.
pub fn table_matchers(t: TableKind) -> Vec<Matcher> {
    match t {
        TableKind::Costs => vec![Matcher::equal(METRIC_NAME, "cost")],
        TableKind::Samples => vec![],
    }
}

/// Columns of a table: the fixed ones, then every label name in the (tenant's) index.
pub fn discover_schema(src: &dyn SeriesSource, t: TableKind, opts: &QueryOptions) -> Result<Schema, SqlError> {
    let names = src.label_names(opts.tenant_scope.as_deref(), &table_matchers(t), i64::MIN, i64::MAX)?;
    let mut columns: Vec<(String, Col, Type)> = match t {
        TableKind::Samples => vec![
            ("ts".into(), Col::Ts, Type::Ts),
            ("metric".into(), Col::Metric, Type::Str),
            ("tenant".into(), Col::Tenant, Type::Str),
            ("value".into(), Col::Value, Type::Float),
        ],
        TableKind::Costs => {
            let mut v = vec![
                ("ts".into(), Col::Ts, Type::Ts),
                ("tenant".into(), Col::Tenant, Type::Str),
                ("cost".into(), Col::Cost, Type::Dec),
            ];
            for l in COST_LABELS {
                v.push((l.to_string(), Col::Label(Arc::from(*l)), Type::Str));
            }
            v
        }
    };
    for n in names {
        if n == METRIC_NAME || n == TENANT || columns.iter().any(|c| c.0 == n) {
            continue;
        }
        columns.push((n.clone(), Col::Label(Arc::from(n.as_str())), Type::Str));
    }
    Ok(Schema { table: t, columns })
}

/// One storage read.
#[derive(Debug, Clone)]
pub struct Select {
    pub tenant: Option<String>,
    pub matchers: Vec<Matcher>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub selects: Vec<Select>,
    /// Closed range `[start, end]` in ns.
    pub start: i64,
    pub end: i64,
    /// What of WHERE is left to evaluate per chunk.
    pub residual: Option<Expr>,
}

fn conjuncts(e: &Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::And(a, b) => {
            conjuncts(a, out);
            conjuncts(b, out);
        }
        other => out.push(other.clone()),
    }
}

/// `col op lit` normalised with the column on the left.
fn col_cmp(e: &Expr) -> Option<(CmpOp, &Col, &Val)> {
    match e {
        Expr::Cmp(op, a, b) => match (a.as_ref(), b.as_ref()) {
            (Expr::Col(c), Expr::Lit(v)) => Some((*op, c, v)),
            (Expr::Lit(v), Expr::Col(c)) => Some((op.flip(), c, v)),
            _ => None,
        },
        _ => None,
    }
}

fn label_name(c: &Col) -> Option<&str> {
    match c {
        Col::Metric => Some(METRIC_NAME),
        Col::Label(l) => Some(l),
        _ => None,
    }
}

pub fn plan(q: &BoundQuery, opts: &QueryOptions) -> Result<Plan, SqlError> {
    let (mut start, mut end) = (i64::MIN, i64::MAX);
    let mut tenants: Option<BTreeSet<String>> = opts.tenant_scope.as_ref().map(|t| BTreeSet::from([t.clone()]));
    let mut matchers = table_matchers(q.table);
    let mut residual: Vec<Expr> = Vec::new();
    let mut always_false = false;
    let mut parts = Vec::new();
    if let Some(f) = &q.filter {
        conjuncts(f, &mut parts);
    }
    for p in parts {
        if matches!(p, Expr::Lit(Val::Bool(false)) | Expr::Lit(Val::Null)) {
            always_false = true;
            continue;
        }
        if matches!(p, Expr::Lit(Val::Bool(true))) {
            continue;
        }
        if let Some((op, col, v)) = col_cmp(&p) {
            match (col, v) {
                (Col::Ts, Val::Ts(t)) => {
                    let t = *t;
                    match op {
                        CmpOp::Gt => start = start.max(t.saturating_add(1)),
                        CmpOp::GtEq => start = start.max(t),
                        CmpOp::Lt => end = end.min(t.saturating_sub(1)),
                        CmpOp::LtEq => end = end.min(t),
                        CmpOp::Eq => {
                            start = start.max(t);
                            end = end.min(t);
                        }
                        CmpOp::NotEq => residual.push(p.clone()),
                    }
                    continue;
                }
                (Col::Tenant, Val::Str(s)) if op == CmpOp::Eq => {
                    let set = BTreeSet::from([s.to_string()]);
                    tenants = Some(match tenants {
                        Some(t) => t.intersection(&set).cloned().collect(),
                        None => set,
                    });
                    continue;
                }
                (c, Val::Str(s)) if op == CmpOp::Eq && !s.is_empty() => {
                    if let Some(n) = label_name(c) {
                        matchers.push(Matcher::equal(n, s.to_string()));
                    }
                }
                _ => {}
            }
        }
        if let Expr::InList(x, list, false) = &p {
            let strs: Option<Vec<&str>> = list
                .iter()
                .map(|v| match v {
                    Val::Str(s) if !s.is_empty() => Some(&**s),
                    _ => None,
                })
                .collect();
            if let (Expr::Col(c), Some(strs)) = (x.as_ref(), strs) {
                if *c == Col::Tenant {
                    let set: BTreeSet<String> = strs.iter().map(|s| s.to_string()).collect();
                    tenants = Some(match tenants {
                        Some(t) => t.intersection(&set).cloned().collect(),
                        None => set,
                    });
                    continue;
                }
                if let Some(n) = label_name(c) {
                    let re = strs.iter().map(|s| regex::escape(s)).collect::<Vec<_>>().join("|");
                    if let Ok(m) = Matcher::new(MatchOp::Regex, n, re) {
                        matchers.push(m);
                    }
                }
            }
        }
        residual.push(p);
    }
    let selects = if always_false || start > end {
        vec![]
    } else {
        match tenants {
            None => vec![Select { tenant: None, matchers }],
            Some(ts) => ts
                .into_iter()
                .map(|t| Select {
                    tenant: Some(t),
                    matchers: matchers.clone(),
                })
                .collect(),
        }
    };
    let residual = residual.into_iter().reduce(|a, b| Expr::And(a.bx(), b.bx()));
    Ok(Plan {
        selects,
        start,
        end,
        residual,
    })
}
