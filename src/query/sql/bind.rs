//! From sqlparser's AST to the typed IR: name resolution against the table schema,
//! type checking, constant folding (`now() - INTERVAL '7 days'` becomes a literal), and
//! the GROUP BY rewrite. Everything outside the subset is rejected here, with the
//! construct and its position.

use std::sync::Arc;

use sqlparser::ast::{
    self, BinaryOperator, DuplicateTreatment, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    LimitClause, ObjectNamePart, OrderByKind, OrderBySort, SelectItem, SetExpr, Spanned, TableFactor, UnaryOperator,
    Value,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Span;

use super::agg::{AggFunc, AggSpec};
use super::expr::{eval_scalar, type_of, CmpOp, Col, Expr, Like};
use super::plan::{Schema, TableKind};
use super::value::{
    arith_type, like_regex, parse_interval, parse_number, parse_timestamp, ArithOp, TruncUnit, Type, Val,
};
use super::{QueryOptions, SqlError};

pub enum Statement {
    ShowTables,
    Describe(TableKind),
    Query(Box<ParsedQuery>),
}

pub struct ParsedQuery {
    pub table: TableKind,
    alias: Option<String>,
    query: Box<ast::Query>,
}

/// A bound SELECT, ready to plan.
#[derive(Debug)]
pub struct BoundQuery {
    pub table: TableKind,
    /// Row-level predicate (WHERE).
    pub filter: Option<Expr>,
    pub aggregate: bool,
    /// Group keys, row-level.
    pub keys: Vec<Expr>,
    pub key_types: Vec<Type>,
    pub aggs: Vec<AggSpec>,
    /// Post-aggregation (or row-level when not aggregating) from here on.
    pub having: Option<Expr>,
    pub outputs: Vec<(String, Expr, Type)>,
    /// `(expr, descending, nulls_first)`.
    pub order: Vec<(Expr, bool, bool)>,
    pub limit: Option<u64>,
    pub offset: u64,
}

pub fn pos(span: Span) -> String {
    if span.start.line == 0 {
        String::new()
    } else {
        format!(" at line {}, column {}", span.start.line, span.start.column)
    }
}

fn unsupported<T>(construct: impl Into<String>, span: Span) -> Result<T, SqlError> {
    Err(SqlError::Unsupported {
        construct: construct.into(),
        pos: pos(span),
    })
}

fn bind_err<T>(msg: impl Into<String>, span: Span) -> Result<T, SqlError> {
    Err(SqlError::Bind {
        msg: msg.into(),
        pos: pos(span),
    })
}

fn short(s: impl std::fmt::Display) -> String {
    let s = s.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

fn table_of(name: &ast::ObjectName) -> Result<TableKind, SqlError> {
    let parts: Vec<&str> = name
        .0
        .iter()
        .filter_map(|p| match p {
            ObjectNamePart::Identifier(i) => Some(i.value.as_str()),
            _ => None,
        })
        .collect();
    match parts.as_slice() {
        [t] if t.eq_ignore_ascii_case("samples") => Ok(TableKind::Samples),
        [t] if t.eq_ignore_ascii_case("costs") => Ok(TableKind::Costs),
        _ => bind_err(format!("unknown table `{name}` (tables: samples, costs)"), name.span()),
    }
}

/// Parses exactly one statement of the supported kinds.
pub fn parse(sql: &str) -> Result<Statement, SqlError> {
    let mut stmts = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| SqlError::Parse(e.to_string()))?;
    if stmts.len() != 1 {
        return Err(SqlError::Parse(format!(
            "expected exactly one statement, found {}",
            stmts.len()
        )));
    }
    let stmt = stmts.remove(0);
    match stmt {
        ast::Statement::ShowTables { .. } => Ok(Statement::ShowTables),
        ast::Statement::ExplainTable { table_name, .. } => Ok(Statement::Describe(table_of(&table_name)?)),
        ast::Statement::Query(q) => {
            let select = match q.body.as_ref() {
                SetExpr::Select(s) => s,
                SetExpr::SetOperation { op, .. } => return unsupported(format!("set operation {op}"), q.span()),
                SetExpr::Values(_) => return unsupported("VALUES", q.span()),
                other => return unsupported(format!("query body `{}`", short(other)), q.span()),
            };
            let Some(from) = select.from.first() else {
                return unsupported("SELECT without FROM", select.span());
            };
            if select.from.len() > 1 {
                return unsupported("several tables in FROM (joins)", select.from[1].relation.span());
            }
            if let Some(j) = from.joins.first() {
                return unsupported("JOIN", j.relation.span());
            }
            let (table, alias) = match &from.relation {
                TableFactor::Table { name, alias, args, .. } => {
                    if args.is_some() {
                        return unsupported("table function", name.span());
                    }
                    (table_of(name)?, alias.as_ref().map(|a| a.name.value.clone()))
                }
                TableFactor::Derived { .. } => return unsupported("subquery in FROM", from.relation.span()),
                other => return unsupported(format!("FROM `{}`", short(other)), other.span()),
            };
            Ok(Statement::Query(Box::new(ParsedQuery { table, alias, query: q })))
        }
        other => {
            let text = other.to_string();
            let kw: Vec<&str> = text.split_whitespace().take(2).collect();
            unsupported(
                format!(
                    "statement `{}` (only SELECT, SHOW TABLES and DESCRIBE are supported)",
                    kw.join(" ")
                ),
                other.span(),
            )
        }
    }
}

struct Binder<'a> {
    schema: &'a Schema,
    alias: Option<&'a str>,
    opts: &'a QueryOptions,
    aggs: Vec<AggSpec>,
    /// Inside an aggregate's argument (no nesting), or in WHERE / GROUP BY (no aggregates at all).
    agg_allowed: bool,
    where_clause: &'static str,
}

pub fn bind_query(pq: &ParsedQuery, schema: &Schema, opts: &QueryOptions) -> Result<BoundQuery, SqlError> {
    let q = &pq.query;
    if let Some(w) = &q.with {
        return unsupported("WITH (common table expressions)", w.span());
    }
    if q.fetch.is_some() {
        return unsupported("FETCH", q.span());
    }
    if !q.locks.is_empty() {
        return unsupported("FOR UPDATE/SHARE", q.span());
    }
    let SetExpr::Select(sel) = q.body.as_ref() else {
        return unsupported("query body", q.span());
    };
    if let Some(d) = &sel.distinct {
        if !matches!(d, ast::Distinct::All) {
            return unsupported("SELECT DISTINCT (use GROUP BY)", sel.span());
        }
    }
    if sel.top.is_some() {
        return unsupported("TOP", sel.span());
    }
    if sel.into.is_some() {
        return unsupported("SELECT INTO", sel.span());
    }
    if sel.prewhere.is_some() || !sel.lateral_views.is_empty() || sel.qualify.is_some() {
        return unsupported("PREWHERE / LATERAL VIEW / QUALIFY", sel.span());
    }
    if !sel.named_window.is_empty() {
        return unsupported("WINDOW", sel.span());
    }
    if !sel.cluster_by.is_empty() || !sel.distribute_by.is_empty() || !sel.sort_by.is_empty() {
        return unsupported("CLUSTER/DISTRIBUTE/SORT BY", sel.span());
    }
    let mut b = Binder {
        schema,
        alias: pq.alias.as_deref(),
        opts,
        aggs: Vec::new(),
        agg_allowed: false,
        where_clause: "WHERE",
    };
    let filter = match &sel.selection {
        Some(w) => {
            let e = b.expr(w)?;
            b.expect_bool(&e, w.span(), "WHERE")?;
            Some(e)
        }
        None => None,
    };

    // Projection (aggregates allowed).
    let mut proj_ast: Vec<(String, Option<&ast::Expr>)> = Vec::new();
    let mut outputs = Vec::new();
    b.agg_allowed = true;
    b.where_clause = "SELECT";
    for item in &sel.projection {
        match item {
            SelectItem::UnnamedExpr(e) => {
                let name = match e {
                    ast::Expr::Identifier(i) => i.value.clone(),
                    ast::Expr::CompoundIdentifier(p) => p.last().map(|i| i.value.clone()).unwrap_or_default(),
                    other => other.to_string(),
                };
                outputs.push((name.clone(), b.expr(e)?));
                proj_ast.push((name, Some(e)));
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                outputs.push((alias.value.clone(), b.expr(expr)?));
                proj_ast.push((alias.value.clone(), Some(expr)));
            }
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                for (name, col, _) in &schema.columns {
                    outputs.push((name.clone(), Expr::Col(col.clone())));
                    proj_ast.push((name.clone(), None));
                }
            }
            other => return unsupported(format!("select item `{}`", short(other)), other.span()),
        }
    }

    // GROUP BY (row-level; ordinals and output aliases refer to the projection).
    b.agg_allowed = false;
    b.where_clause = "GROUP BY";
    let mut keys = Vec::new();
    match &sel.group_by {
        GroupByExpr::All(_) => return unsupported("GROUP BY ALL", sel.span()),
        GroupByExpr::Expressions(list, mods) => {
            if !mods.is_empty() {
                return unsupported("GROUP BY modifiers (ROLLUP/CUBE/TOTALS)", sel.span());
            }
            for g in list {
                let target = resolve_output_ref(g, &proj_ast, schema)?;
                let e = match target {
                    Some(i) => match &proj_ast[i] {
                        (_, Some(ast_e)) => b.expr(ast_e)?,
                        (_, None) => outputs[i].1.clone(),
                    },
                    None => b.expr(g)?,
                };
                keys.push(e);
            }
        }
    }
    let aggregate = !keys.is_empty() || !b.aggs.is_empty() || sel.having.is_some();

    // HAVING and ORDER BY (aggregates allowed).
    b.agg_allowed = true;
    b.where_clause = "HAVING";
    let having = match &sel.having {
        Some(h) => Some((b.expr(h)?, h.span())),
        None => None,
    };
    b.where_clause = "ORDER BY";
    let mut order = Vec::new();
    if let Some(ob) = &q.order_by {
        let exprs = match &ob.kind {
            OrderByKind::Expressions(v) => v,
            OrderByKind::All(_) => return unsupported("ORDER BY ALL", q.span()),
        };
        for o in exprs {
            if o.with_fill.is_some() {
                return unsupported("ORDER BY ... WITH FILL", o.expr.span());
            }
            let desc = match &o.options.sort {
                None | Some(OrderBySort::Asc) => false,
                Some(OrderBySort::Desc) => true,
                Some(OrderBySort::Using(_)) => return unsupported("ORDER BY ... USING", o.expr.span()),
            };
            let nulls_first = o.options.nulls_first.unwrap_or(desc);
            let e = match resolve_output_ref(&o.expr, &proj_ast, schema)? {
                Some(i) => outputs[i].1.clone(),
                None => b.expr(&o.expr)?,
            };
            order.push((e, desc, nulls_first, o.expr.span()));
        }
    }
    let (limit, offset) = limit_offset(q.limit_clause.as_ref())?;

    let aggs = std::mem::take(&mut b.aggs);
    let row_leaf = |e: &Expr| match e {
        Expr::Col(c) => schema.type_of(c),
        _ => Type::Null,
    };
    let key_types: Vec<Type> = keys.iter().map(|k| type_of(k, &row_leaf)).collect();

    let mut bq = BoundQuery {
        table: schema.table,
        filter,
        aggregate,
        keys,
        key_types,
        aggs,
        having: None,
        outputs: Vec::new(),
        order: Vec::new(),
        limit,
        offset,
    };
    let post = |bq: &BoundQuery, e: Expr, what: &str, span: Span| -> Result<Expr, SqlError> {
        if !bq.aggregate {
            return Ok(e);
        }
        let e = e.rewrite(&mut |n| {
            Ok(match bq.keys.iter().position(|k| *k == n) {
                Some(i) => Expr::Key(i),
                None => n,
            })
        })?;
        let mut bad = None;
        e.walk(&mut |n| {
            if let Expr::Col(c) = n {
                bad.get_or_insert_with(|| bq_col_name(bq, c));
            }
        });
        match bad {
            Some(c) => bind_err(
                format!("column `{c}` in {what} must appear in GROUP BY or be used in an aggregate function"),
                span,
            ),
            None => Ok(e),
        }
    };
    for (i, (name, e)) in outputs.into_iter().enumerate() {
        let span = proj_ast[i].1.map(|a| a.span()).unwrap_or(Span::empty());
        let e = post(&bq, e, "SELECT", span)?;
        let ty = type_of(&e, &|n| leaf_type(&bq, schema, n));
        bq.outputs.push((name, e, ty));
    }
    if let Some((h, span)) = having {
        let h = post(&bq, h, "HAVING", span)?;
        bq.having = Some(h);
    }
    for (e, desc, nf, span) in order {
        let e = post(&bq, e, "ORDER BY", span)?;
        bq.order.push((e, desc, nf));
    }
    Ok(bq)
}

fn bq_col_name(bq: &BoundQuery, c: &Col) -> String {
    let _ = bq;
    match c {
        Col::Ts => "ts".into(),
        Col::Metric => "metric".into(),
        Col::Tenant => "tenant".into(),
        Col::Value => "value".into(),
        Col::Cost => "cost".into(),
        Col::Label(l) => l.to_string(),
    }
}

fn leaf_type(bq: &BoundQuery, schema: &Schema, e: &Expr) -> Type {
    match e {
        Expr::Col(c) => schema.type_of(c),
        Expr::Key(i) => bq.key_types.get(*i).copied().unwrap_or(Type::Null),
        Expr::Agg(i) => bq.aggs.get(*i).map_or(Type::Null, |a| a.ty),
        _ => Type::Null,
    }
}

/// `GROUP BY 2` / `ORDER BY total` → index of the projection item they name.
fn resolve_output_ref(
    e: &ast::Expr,
    proj: &[(String, Option<&ast::Expr>)],
    schema: &Schema,
) -> Result<Option<usize>, SqlError> {
    match e {
        ast::Expr::Value(v) => match &v.value {
            Value::Number(n, _) => match n.parse::<usize>() {
                Ok(k) if k >= 1 && k <= proj.len() => Ok(Some(k - 1)),
                _ => bind_err(
                    format!("position {n} is not in the select list (1..={})", proj.len()),
                    e.span(),
                ),
            },
            _ => Ok(None),
        },
        ast::Expr::Identifier(i) if schema.find(&i.value).is_none() => Ok(proj.iter().position(|(n, _)| n == &i.value)),
        _ => Ok(None),
    }
}

fn limit_offset(lc: Option<&LimitClause>) -> Result<(Option<u64>, u64), SqlError> {
    let num = |e: &ast::Expr, what: &str| -> Result<u64, SqlError> {
        match e {
            ast::Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n
                    .parse::<u64>()
                    .or_else(|_| bind_err(format!("{what} must be a non-negative integer"), e.span())),
                _ => bind_err(format!("{what} must be a non-negative integer"), e.span()),
            },
            _ => unsupported(format!("non-literal {what}"), e.span()),
        }
    };
    match lc {
        None => Ok((None, 0)),
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => {
            if let Some(e) = limit_by.first() {
                return unsupported("LIMIT BY", e.span());
            }
            let l = match limit {
                Some(e) => Some(num(e, "LIMIT")?),
                None => None,
            };
            let o = match offset {
                Some(o) => num(&o.value, "OFFSET")?,
                None => 0,
            };
            Ok((l, o))
        }
        Some(LimitClause::OffsetCommaLimit { offset, limit }) => {
            Ok((Some(num(limit, "LIMIT")?), num(offset, "OFFSET")?))
        }
    }
}

fn is_const(e: &Expr) -> bool {
    let mut c = true;
    e.walk(&mut |n| {
        if matches!(n, Expr::Col(_) | Expr::Agg(_) | Expr::Key(_)) {
            c = false;
        }
    });
    c
}

/// Folds constant sub-expressions into literals.
fn fold(e: Expr) -> Result<Expr, SqlError> {
    if !matches!(e, Expr::Lit(_)) && is_const(&e) {
        return Ok(Expr::Lit(eval_scalar(&e, &|_| Val::Null)?));
    }
    Ok(e)
}

impl Binder<'_> {
    fn ty(&self, e: &Expr) -> Type {
        let aggs = &self.aggs;
        type_of(e, &|n| match n {
            Expr::Col(c) => self.schema.type_of(c),
            Expr::Agg(i) => aggs.get(*i).map_or(Type::Null, |a| a.ty),
            _ => Type::Null,
        })
    }

    fn expect_bool(&self, e: &Expr, span: Span, what: &str) -> Result<(), SqlError> {
        match self.ty(e) {
            Type::Bool | Type::Null => Ok(()),
            t => bind_err(
                format!("{what} needs a boolean expression, found {}", t.sql_name()),
                span,
            ),
        }
    }

    fn column(&self, ident: &ast::Ident) -> Result<Expr, SqlError> {
        match self.schema.find(&ident.value) {
            Some(c) => Ok(Expr::Col(c)),
            None => bind_err(
                format!(
                    "unknown column `{}` in table {} (columns: {})",
                    ident.value,
                    self.schema.table.name(),
                    self.schema
                        .columns
                        .iter()
                        .map(|c| c.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                ident.span,
            ),
        }
    }

    /// A string literal compared with a timestamp becomes a timestamp literal.
    fn coerce_pair(&self, a: Expr, b: Expr, span: Span) -> Result<(Expr, Expr), SqlError> {
        let (ta, tb) = (self.ty(&a), self.ty(&b));
        let to_ts = |e: Expr| -> Result<Expr, SqlError> {
            match &e {
                Expr::Lit(Val::Str(s)) => match parse_timestamp(s) {
                    Some(t) => Ok(Expr::Lit(Val::Ts(t))),
                    None => bind_err(format!("cannot read {s:?} as a timestamp"), span),
                },
                _ => Ok(e),
            }
        };
        match (ta, tb) {
            (Type::Ts, Type::Str) => Ok((a, to_ts(b)?)),
            (Type::Str, Type::Ts) => Ok((to_ts(a)?, b)),
            _ => Ok((a, b)),
        }
    }

    fn check_comparable(&self, a: &Expr, b: &Expr, span: Span) -> Result<(), SqlError> {
        let (ta, tb) = (self.ty(a), self.ty(b));
        if Type::unify(ta, tb).is_none() {
            return bind_err(format!("cannot compare {} with {}", ta.sql_name(), tb.sql_name()), span);
        }
        Ok(())
    }

    fn cmp(&self, op: CmpOp, a: Expr, b: Expr, span: Span) -> Result<Expr, SqlError> {
        let (a, b) = self.coerce_pair(a, b, span)?;
        self.check_comparable(&a, &b, span)?;
        fold(Expr::Cmp(op, a.bx(), b.bx()))
    }

    fn expr(&mut self, e: &ast::Expr) -> Result<Expr, SqlError> {
        let span = e.span();
        let out = match e {
            ast::Expr::Identifier(i) => self.column(i)?,
            ast::Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [t, c]
                    if t.value.eq_ignore_ascii_case(self.schema.table.name())
                        || self.alias.is_some_and(|a| a == t.value) =>
                {
                    self.column(c)?
                }
                _ => return bind_err(format!("unknown column `{}`", short(e)), span),
            },
            ast::Expr::Value(v) => Expr::Lit(literal(&v.value, span)?),
            ast::Expr::TypedString(ts) => {
                let s = match &ts.value.value {
                    Value::SingleQuotedString(s) => s.clone(),
                    other => return unsupported(format!("typed literal `{other}`"), span),
                };
                match &ts.data_type {
                    ast::DataType::Timestamp(..) | ast::DataType::Date | ast::DataType::Datetime(_) => {
                        match parse_timestamp(&s) {
                            Some(t) => Expr::Lit(Val::Ts(t)),
                            None => return bind_err(format!("cannot read {s:?} as a timestamp"), span),
                        }
                    }
                    ast::DataType::Interval { .. } => {
                        Expr::Lit(Val::Interval(parse_interval(&s, None).or_else(|m| bind_err(m, span))?))
                    }
                    other => return unsupported(format!("typed literal {other} '…'"), span),
                }
            }
            ast::Expr::Interval(iv) => {
                let s = match iv.value.as_ref() {
                    ast::Expr::Value(v) => match &v.value {
                        Value::SingleQuotedString(s) => s.clone(),
                        Value::Number(n, _) => n.clone(),
                        other => return unsupported(format!("INTERVAL {other}"), span),
                    },
                    other => return unsupported(format!("INTERVAL {}", short(other)), span),
                };
                if iv.last_field.is_some() {
                    return unsupported("INTERVAL ... TO ...", span);
                }
                let unit = iv.leading_field.as_ref().map(|f| f.to_string());
                Expr::Lit(Val::Interval(
                    parse_interval(&s, unit.as_deref()).or_else(|m| bind_err(m, span))?,
                ))
            }
            ast::Expr::Nested(inner) => self.expr(inner)?,
            ast::Expr::UnaryOp { op, expr } => {
                let x = self.expr(expr)?;
                match op {
                    UnaryOperator::Not => {
                        self.expect_bool(&x, span, "NOT")?;
                        fold(Expr::Not(x.bx()))?
                    }
                    UnaryOperator::Minus => {
                        let t = self.ty(&x);
                        if !(t.is_numeric() || t == Type::Interval) {
                            return bind_err(format!("cannot negate {}", t.sql_name()), span);
                        }
                        fold(Expr::Neg(x.bx()))?
                    }
                    UnaryOperator::Plus => x,
                    other => return unsupported(format!("unary operator {other}"), span),
                }
            }
            ast::Expr::BinaryOp { left, op, right } => {
                let (a, b) = (self.expr(left)?, self.expr(right)?);
                let arith = |op: ArithOp| -> Result<Expr, SqlError> {
                    let (ta, tb) = (self.ty(&a), self.ty(&b));
                    if arith_type(op, ta, tb).is_none() {
                        return bind_err(
                            format!(
                                "operator `{}` is not defined for {} and {}",
                                op.symbol(),
                                ta.sql_name(),
                                tb.sql_name()
                            ),
                            span,
                        );
                    }
                    fold(Expr::Arith(op, a.clone().bx(), b.clone().bx()))
                };
                match op {
                    BinaryOperator::Plus => arith(ArithOp::Add)?,
                    BinaryOperator::Minus => arith(ArithOp::Sub)?,
                    BinaryOperator::Multiply => arith(ArithOp::Mul)?,
                    BinaryOperator::Divide => arith(ArithOp::Div)?,
                    BinaryOperator::Modulo => arith(ArithOp::Mod)?,
                    BinaryOperator::Eq => self.cmp(CmpOp::Eq, a, b, span)?,
                    BinaryOperator::NotEq => self.cmp(CmpOp::NotEq, a, b, span)?,
                    BinaryOperator::Lt => self.cmp(CmpOp::Lt, a, b, span)?,
                    BinaryOperator::LtEq => self.cmp(CmpOp::LtEq, a, b, span)?,
                    BinaryOperator::Gt => self.cmp(CmpOp::Gt, a, b, span)?,
                    BinaryOperator::GtEq => self.cmp(CmpOp::GtEq, a, b, span)?,
                    BinaryOperator::And | BinaryOperator::Or => {
                        self.expect_bool(&a, left.span(), &op.to_string())?;
                        self.expect_bool(&b, right.span(), &op.to_string())?;
                        if matches!(op, BinaryOperator::And) {
                            fold(Expr::And(a.bx(), b.bx()))?
                        } else {
                            fold(Expr::Or(a.bx(), b.bx()))?
                        }
                    }
                    other => return unsupported(format!("operator {other}"), span),
                }
            }
            ast::Expr::IsNull(x) => fold(Expr::IsNull(self.expr(x)?.bx(), false))?,
            ast::Expr::IsNotNull(x) => fold(Expr::IsNull(self.expr(x)?.bx(), true))?,
            ast::Expr::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let x = self.expr(expr)?;
                let lo = self.expr(low)?;
                let hi = self.expr(high)?;
                let a = self.cmp(CmpOp::GtEq, x.clone(), lo, span)?;
                let b = self.cmp(CmpOp::LtEq, x, hi, span)?;
                let both = Expr::And(a.bx(), b.bx());
                fold(if *negated { Expr::Not(both.bx()) } else { both })?
            }
            ast::Expr::InList { expr, list, negated } => {
                let x = self.expr(expr)?;
                let mut vals = Vec::with_capacity(list.len());
                for item in list {
                    let it = self.expr(item)?;
                    let (_, it) = self.coerce_pair(x.clone(), it, item.span())?;
                    self.check_comparable(&x, &it, item.span())?;
                    match it {
                        Expr::Lit(v) => vals.push(v),
                        _ => return unsupported("IN list item that is not a constant", item.span()),
                    }
                }
                fold(Expr::InList(x.bx(), vals, *negated))?
            }
            ast::Expr::Like {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            }
            | ast::Expr::ILike {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            } => {
                if *any || escape_char.is_some() {
                    return unsupported("LIKE ANY / ESCAPE", span);
                }
                let ci = matches!(e, ast::Expr::ILike { .. });
                let x = self.expr(expr)?;
                if !matches!(self.ty(&x), Type::Str | Type::Null) {
                    return bind_err("LIKE needs a text operand", span);
                }
                let p = match self.expr(pattern)? {
                    Expr::Lit(Val::Str(s)) => s.to_string(),
                    _ => return unsupported("LIKE with a non-literal pattern", pattern.span()),
                };
                let re = like_regex(&p, ci)?;
                fold(Expr::Like(
                    x.bx(),
                    Box::new(Like {
                        pattern: p,
                        case_insensitive: ci,
                        re,
                    }),
                    *negated,
                ))?
            }
            ast::Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                let op = match operand {
                    Some(o) => Some(self.expr(o)?),
                    None => None,
                };
                let mut whens = Vec::new();
                let mut ty = Type::Null;
                for cw in conditions {
                    let c = self.expr(&cw.condition)?;
                    let c = match &op {
                        Some(o) => self.cmp(CmpOp::Eq, o.clone(), c, cw.condition.span())?,
                        None => {
                            self.expect_bool(&c, cw.condition.span(), "WHEN")?;
                            c
                        }
                    };
                    let r = self.expr(&cw.result)?;
                    ty = self.unify_branch(ty, &r, cw.result.span())?;
                    whens.push((c, r));
                }
                let els = match else_result {
                    Some(x) => {
                        let r = self.expr(x)?;
                        self.unify_branch(ty, &r, x.span())?;
                        Some(r.bx())
                    }
                    None => None,
                };
                fold(Expr::Case(whens, els))?
            }
            ast::Expr::Function(f) => self.function(f, span)?,
            ast::Expr::Subquery(_) => return unsupported("subquery", span),
            ast::Expr::Exists { .. } => return unsupported("EXISTS (subquery)", span),
            ast::Expr::InSubquery { .. } => return unsupported("IN (subquery)", span),
            ast::Expr::Cast { .. } => return unsupported("CAST", span),
            ast::Expr::Extract { .. } => return unsupported("EXTRACT", span),
            other => return unsupported(format!("expression `{}`", short(other)), span),
        };
        Ok(out)
    }

    fn unify_branch(&self, ty: Type, r: &Expr, span: Span) -> Result<Type, SqlError> {
        let rt = self.ty(r);
        Type::unify(ty, rt).map_or_else(
            || {
                bind_err(
                    format!(
                        "CASE branches have incompatible types {} and {}",
                        ty.sql_name(),
                        rt.sql_name()
                    ),
                    span,
                )
            },
            Ok,
        )
    }

    fn function(&mut self, f: &ast::Function, span: Span) -> Result<Expr, SqlError> {
        let name = match f.name.0.as_slice() {
            [ObjectNamePart::Identifier(i)] => i.value.to_ascii_lowercase(),
            _ => return unsupported(format!("function `{}`", f.name), span),
        };
        if f.over.is_some() {
            return unsupported(format!("window function {name}(...) OVER"), span);
        }
        if f.filter.is_some() || !f.within_group.is_empty() || f.null_treatment.is_some() {
            return unsupported(format!("{name}(...) FILTER/WITHIN GROUP/IGNORE NULLS"), span);
        }
        if !matches!(f.parameters, FunctionArguments::None) {
            return unsupported(format!("parametric function {name}(...)(...)"), span);
        }
        let (distinct, args): (bool, Vec<&FunctionArgExpr>) = match &f.args {
            FunctionArguments::None => (false, vec![]),
            FunctionArguments::Subquery(_) => return unsupported(format!("{name}(subquery)"), span),
            FunctionArguments::List(l) => {
                if !l.clauses.is_empty() {
                    return unsupported(format!("{name}(... clauses)"), span);
                }
                let mut v = Vec::new();
                for a in &l.args {
                    match a {
                        FunctionArg::Unnamed(x) => v.push(x),
                        _ => return unsupported(format!("named argument in {name}(...)"), span),
                    }
                }
                (matches!(l.duplicate_treatment, Some(DuplicateTreatment::Distinct)), v)
            }
        };
        let arg_expr = |i: usize| -> Result<&ast::Expr, SqlError> {
            match args.get(i) {
                Some(FunctionArgExpr::Expr(e)) => Ok(e),
                Some(_) => unsupported(format!("wildcard argument to {name}"), span),
                None => bind_err(format!("{name} needs at least {} argument(s)", i + 1), span),
            }
        };
        if let Some(func) = AggFunc::from_name(&name) {
            if !self.agg_allowed {
                return bind_err(
                    format!("aggregate function {name} is not allowed in {}", self.where_clause),
                    span,
                );
            }
            if distinct && func != AggFunc::Count {
                return unsupported(format!("{name}(DISTINCT ...)"), span);
            }
            if args.len() != 1 {
                return bind_err(format!("{name} takes exactly one argument"), span);
            }
            let (func, arg) = match args[0] {
                FunctionArgExpr::Wildcard if func == AggFunc::Count && !distinct => (AggFunc::CountStar, None),
                FunctionArgExpr::Expr(x) => {
                    self.agg_allowed = false;
                    let saved = self.where_clause;
                    self.where_clause = "an aggregate's argument";
                    let r = self.expr(x);
                    self.agg_allowed = true;
                    self.where_clause = saved;
                    let a = r?;
                    (if distinct { AggFunc::CountDistinct } else { func }, Some(a))
                }
                _ => return unsupported(format!("{name}(wildcard)"), span),
            };
            let arg_ty = arg.as_ref().map_or(Type::Null, |a| self.ty(a));
            let ty = func.result_type(arg_ty).ok_or_else(|| SqlError::Bind {
                msg: format!("{name} is not defined for {}", arg_ty.sql_name()),
                pos: pos(span),
            })?;
            let spec = AggSpec { func, arg, arg_ty, ty };
            let i = match self.aggs.iter().position(|a| *a == spec) {
                Some(i) => i,
                None => {
                    self.aggs.push(spec);
                    self.aggs.len() - 1
                }
            };
            return Ok(Expr::Agg(i));
        }
        match name.as_str() {
            "now" | "current_timestamp" => {
                if !args.is_empty() {
                    return bind_err("now() takes no arguments", span);
                }
                Ok(Expr::Lit(Val::Ts(self.opts.now_ns)))
            }
            "date_trunc" => {
                if args.len() != 2 {
                    return bind_err("date_trunc takes (unit, timestamp)", span);
                }
                let unit = match self.expr(arg_expr(0)?)? {
                    Expr::Lit(Val::Str(s)) => TruncUnit::parse(&s).ok_or_else(|| SqlError::Bind {
                        msg: format!("date_trunc unit {s:?}: expected 'minute', 'hour', 'day', 'week' or 'month'"),
                        pos: pos(span),
                    })?,
                    _ => return unsupported("date_trunc with a non-literal unit", span),
                };
                let x = self.expr(arg_expr(1)?)?;
                self.expect_ts(&x, span, "date_trunc")?;
                fold(Expr::DateTrunc(unit, x.bx()))
            }
            "time_bucket" => {
                if args.len() != 2 {
                    return bind_err("time_bucket takes (INTERVAL, timestamp)", span);
                }
                let w = match self.expr(arg_expr(0)?)? {
                    Expr::Lit(Val::Interval(w)) if w > 0 => w,
                    Expr::Lit(Val::Str(s)) => parse_interval(&s, None).or_else(|m| bind_err(m, span))?,
                    _ => return bind_err("time_bucket needs a positive constant INTERVAL width", span),
                };
                if w <= 0 {
                    return bind_err("time_bucket needs a positive width", span);
                }
                let x = self.expr(arg_expr(1)?)?;
                self.expect_ts(&x, span, "time_bucket")?;
                fold(Expr::TimeBucket(w, x.bx()))
            }
            "coalesce" => {
                if args.is_empty() {
                    return bind_err("coalesce needs arguments", span);
                }
                let mut xs = Vec::new();
                let mut ty = Type::Null;
                for i in 0..args.len() {
                    let x = self.expr(arg_expr(i)?)?;
                    ty = self.unify_branch(ty, &x, span)?;
                    xs.push(x);
                }
                let last = xs.pop().map(Box::new);
                let whens = xs
                    .into_iter()
                    .map(|x| (Expr::IsNull(x.clone().bx(), true), x))
                    .collect();
                fold(Expr::Case(whens, last))
            }
            _ => unsupported(format!("function {name}()"), span),
        }
    }

    fn expect_ts(&self, x: &Expr, span: Span, f: &str) -> Result<(), SqlError> {
        match self.ty(x) {
            Type::Ts | Type::Null => Ok(()),
            t => bind_err(format!("{f} needs a TIMESTAMP, found {}", t.sql_name()), span),
        }
    }
}

fn literal(v: &Value, span: Span) -> Result<Val, SqlError> {
    Ok(match v {
        Value::Number(n, _) => match parse_number(n) {
            Some(v) => v,
            None => return bind_err(format!("bad number {n}"), span),
        },
        Value::SingleQuotedString(s) => Val::Str(Arc::from(s.as_str())),
        Value::Boolean(b) => Val::Bool(*b),
        Value::Null => Val::Null,
        other => return unsupported(format!("literal {other}"), span),
    })
}
