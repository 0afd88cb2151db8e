//! From sqlparser's AST to the typed IR: name resolution against the table schema,
//! type checking, constant folding (`now() - INTERVAL '7 days'` becomes a literal), and
//! the GROUP BY rewrite. Everything outside the subset is rejected here, with the
//! construct and its position.

use sqlparser::ast::{
    self, GroupByExpr, LimitClause, ObjectNamePart, OrderByKind, OrderBySort, SelectItem, SetExpr, Spanned,
    TableFactor, Value,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Span, Token, Tokenizer};

use super::agg::AggSpec;
use super::expr::{type_of, Col, Expr};
use super::plan::{Schema, TableKind};
use super::value::Type;
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

pub(super) fn unsupported<T>(construct: impl Into<String>, span: Span) -> Result<T, SqlError> {
    Err(SqlError::Unsupported {
        construct: construct.into(),
        pos: pos(span),
    })
}

pub(super) fn bind_err<T>(msg: impl Into<String>, span: Span) -> Result<T, SqlError> {
    Err(SqlError::Bind {
        msg: msg.into(),
        pos: pos(span),
    })
}

pub(super) fn short(s: impl std::fmt::Display) -> String {
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

/// The span of the first token of `sql` that is not whitespace or a comment (empty if none).
fn first_token(sql: &str) -> Span {
    Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .ok()
        .and_then(|toks| {
            toks.into_iter()
                .find(|t| !matches!(t.token, Token::Whitespace(_)))
                .map(|t| t.span)
        })
        .unwrap_or_else(Span::empty)
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
            // sqlparser leaves some statements (e.g. `END`) without a span; the one
            // statement of the input then starts at its first token.
            let span = match other.span() {
                s if s.start.line == 0 => first_token(sql),
                s => s,
            };
            unsupported(
                format!(
                    "statement `{}` (only SELECT, SHOW TABLES and DESCRIBE are supported)",
                    kw.join(" ")
                ),
                span,
            )
        }
    }
}

pub(super) struct Binder<'a> {
    pub(super) schema: &'a Schema,
    pub(super) alias: Option<&'a str>,
    pub(super) opts: &'a QueryOptions,
    pub(super) aggs: Vec<AggSpec>,
    /// Inside an aggregate's argument (no nesting), or in WHERE / GROUP BY (no aggregates at all).
    pub(super) agg_allowed: bool,
    pub(super) where_clause: &'static str,
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
