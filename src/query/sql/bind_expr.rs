//! Binding of expressions and function calls (the part of [`bind`](super::bind) that walks
//! `ast::Expr`): name resolution, type checks, literal coercion and constant folding.

use std::sync::Arc;

use sqlparser::ast::{
    self, BinaryOperator, DuplicateTreatment, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectNamePart, Spanned,
    UnaryOperator, Value,
};
use sqlparser::tokenizer::Span;

use super::agg::{AggFunc, AggSpec};
use super::bind::{bind_err, pos, short, unsupported, Binder};
use super::expr::{eval_scalar, type_of, CmpOp, Expr, Like};
use super::value::{
    arith_type, like_regex, parse_interval, parse_number, parse_timestamp, ArithOp, TruncUnit, Type, Val,
};
use super::SqlError;

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

    pub(super) fn expect_bool(&self, e: &Expr, span: Span, what: &str) -> Result<(), SqlError> {
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

    pub(super) fn expr(&mut self, e: &ast::Expr) -> Result<Expr, SqlError> {
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
