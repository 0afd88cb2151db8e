//! The bound, typed expression IR and its row-at-a-time (scalar) evaluation.
//!
//! Scalar evaluation is the reference semantics: the vectorised kernels in
//! [`exec`](super::exec) either reproduce it exactly on typed arrays or fall back to it.

use std::sync::Arc;

use super::value::{arith, compare, date_trunc, time_bucket, ArithOp, TruncUnit, Type, Val};
use super::SqlError;

/// A column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Col {
    Ts,
    Metric,
    Tenant,
    /// `samples.value` (DOUBLE; money series rendered as units).
    Value,
    /// `costs.cost` (DECIMAL(38, 9), exact).
    Cost,
    Label(Arc<str>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl CmpOp {
    pub fn test(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Eq => o == Equal,
            CmpOp::NotEq => o != Equal,
            CmpOp::Lt => o == Less,
            CmpOp::LtEq => o != Greater,
            CmpOp::Gt => o == Greater,
            CmpOp::GtEq => o != Less,
        }
    }

    /// The operator with its operands swapped (`a < b` ⇔ `b > a`).
    pub fn flip(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::LtEq => CmpOp::GtEq,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::GtEq => CmpOp::LtEq,
            o => o,
        }
    }
}

/// A compiled LIKE pattern; compared by its text.
#[derive(Debug, Clone)]
pub struct Like {
    pub pattern: String,
    pub case_insensitive: bool,
    pub re: regex::Regex,
}

impl PartialEq for Like {
    fn eq(&self, o: &Like) -> bool {
        self.pattern == o.pattern && self.case_insensitive == o.case_insensitive
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Col(Col),
    Lit(Val),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    IsNull(Box<Expr>, bool),
    /// `expr [NOT] IN (constants)`.
    InList(Box<Expr>, Vec<Val>, bool),
    Like(Box<Expr>, Box<Like>, bool),
    /// Searched CASE (a simple CASE is rewritten to equality tests when bound).
    Case(Vec<(Expr, Expr)>, Option<Box<Expr>>),
    DateTrunc(TruncUnit, Box<Expr>),
    TimeBucket(i64, Box<Expr>),
    /// After aggregation: the value of aggregate slot `i`.
    Agg(usize),
    /// After aggregation: the value of group key `i`.
    Key(usize),
}

impl Expr {
    pub fn bx(self) -> Box<Expr> {
        Box::new(self)
    }

    /// Visits every node (pre-order).
    pub fn walk(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Arith(_, a, b) | Expr::Cmp(_, a, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                a.walk(f);
                b.walk(f);
            }
            Expr::Not(a)
            | Expr::Neg(a)
            | Expr::IsNull(a, _)
            | Expr::InList(a, _, _)
            | Expr::Like(a, _, _)
            | Expr::DateTrunc(_, a)
            | Expr::TimeBucket(_, a) => a.walk(f),
            Expr::Case(whens, e) => {
                for (c, r) in whens {
                    c.walk(f);
                    r.walk(f);
                }
                if let Some(e) = e {
                    e.walk(f);
                }
            }
            Expr::Col(_) | Expr::Lit(_) | Expr::Agg(_) | Expr::Key(_) => {}
        }
    }

    /// Rebuilds the tree bottom-up through `f` (which may replace any node).
    pub fn rewrite(self, f: &mut dyn FnMut(Expr) -> Result<Expr, SqlError>) -> Result<Expr, SqlError> {
        let e = match self {
            Expr::Arith(op, a, b) => Expr::Arith(op, a.rewrite(f)?.bx(), b.rewrite(f)?.bx()),
            Expr::Cmp(op, a, b) => Expr::Cmp(op, a.rewrite(f)?.bx(), b.rewrite(f)?.bx()),
            Expr::And(a, b) => Expr::And(a.rewrite(f)?.bx(), b.rewrite(f)?.bx()),
            Expr::Or(a, b) => Expr::Or(a.rewrite(f)?.bx(), b.rewrite(f)?.bx()),
            Expr::Not(a) => Expr::Not(a.rewrite(f)?.bx()),
            Expr::Neg(a) => Expr::Neg(a.rewrite(f)?.bx()),
            Expr::IsNull(a, n) => Expr::IsNull(a.rewrite(f)?.bx(), n),
            Expr::InList(a, l, n) => Expr::InList(a.rewrite(f)?.bx(), l, n),
            Expr::Like(a, l, n) => Expr::Like(a.rewrite(f)?.bx(), l, n),
            Expr::DateTrunc(u, a) => Expr::DateTrunc(u, a.rewrite(f)?.bx()),
            Expr::TimeBucket(w, a) => Expr::TimeBucket(w, a.rewrite(f)?.bx()),
            Expr::Case(whens, e) => {
                let mut w2 = Vec::with_capacity(whens.len());
                for (c, r) in whens {
                    w2.push((c.rewrite(f)?, r.rewrite(f)?));
                }
                let e2 = match e {
                    Some(e) => Some(e.rewrite(f)?.bx()),
                    None => None,
                };
                Expr::Case(w2, e2)
            }
            leaf => leaf,
        };
        f(e)
    }
}

/// Three-valued AND / OR / NOT.
pub fn and3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

pub fn or3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

pub fn bool_val(b: Option<bool>) -> Val {
    b.map_or(Val::Null, Val::Bool)
}

pub fn cmp_vals(op: CmpOp, a: &Val, b: &Val) -> Val {
    bool_val(compare(a, b).map(|o| op.test(o)))
}

pub fn in_list(v: &Val, list: &[Val], negated: bool) -> Val {
    if v.is_null() {
        return Val::Null;
    }
    let mut saw_null = false;
    for x in list {
        if x.is_null() {
            saw_null = true;
        } else if compare(v, x) == Some(std::cmp::Ordering::Equal) {
            return Val::Bool(!negated);
        }
    }
    if saw_null {
        Val::Null
    } else {
        Val::Bool(negated)
    }
}

pub fn like(v: &Val, l: &Like, negated: bool) -> Val {
    match v {
        Val::Str(s) => Val::Bool(l.re.is_match(s) != negated),
        _ => Val::Null,
    }
}

pub fn neg(v: &Val) -> Result<Val, SqlError> {
    arith(ArithOp::Sub, &zero_of(v), v)
}

fn zero_of(v: &Val) -> Val {
    match v {
        Val::Float(_) => Val::Float(0.0),
        Val::Dec(_) => Val::Dec(0),
        Val::Interval(_) => Val::Interval(0),
        _ => Val::Int(0),
    }
}

pub fn trunc_val(u: TruncUnit, v: &Val) -> Val {
    match v {
        Val::Ts(t) => Val::Ts(date_trunc(u, *t)),
        _ => Val::Null,
    }
}

pub fn bucket_val(w: i64, v: &Val) -> Val {
    match v {
        Val::Ts(t) => Val::Ts(time_bucket(w, *t)),
        _ => Val::Null,
    }
}

/// Evaluates `e` for one row; `leaf` resolves columns, keys and aggregate slots.
pub fn eval_scalar(e: &Expr, leaf: &dyn Fn(&Expr) -> Val) -> Result<Val, SqlError> {
    Ok(match e {
        Expr::Col(_) | Expr::Agg(_) | Expr::Key(_) => leaf(e),
        Expr::Lit(v) => v.clone(),
        Expr::Arith(op, a, b) => arith(*op, &eval_scalar(a, leaf)?, &eval_scalar(b, leaf)?)?,
        Expr::Cmp(op, a, b) => cmp_vals(*op, &eval_scalar(a, leaf)?, &eval_scalar(b, leaf)?),
        Expr::And(a, b) => bool_val(and3(eval_scalar(a, leaf)?.truth(), eval_scalar(b, leaf)?.truth())),
        Expr::Or(a, b) => bool_val(or3(eval_scalar(a, leaf)?.truth(), eval_scalar(b, leaf)?.truth())),
        Expr::Not(a) => bool_val(eval_scalar(a, leaf)?.truth().map(|b| !b)),
        Expr::Neg(a) => neg(&eval_scalar(a, leaf)?)?,
        Expr::IsNull(a, negated) => Val::Bool(eval_scalar(a, leaf)?.is_null() != *negated),
        Expr::InList(a, list, negated) => in_list(&eval_scalar(a, leaf)?, list, *negated),
        Expr::Like(a, l, negated) => like(&eval_scalar(a, leaf)?, l, *negated),
        Expr::Case(whens, els) => {
            for (c, r) in whens {
                if eval_scalar(c, leaf)?.truth() == Some(true) {
                    return eval_scalar(r, leaf);
                }
            }
            match els {
                Some(e) => eval_scalar(e, leaf)?,
                None => Val::Null,
            }
        }
        Expr::DateTrunc(u, a) => trunc_val(*u, &eval_scalar(a, leaf)?),
        Expr::TimeBucket(w, a) => bucket_val(*w, &eval_scalar(a, leaf)?),
    })
}

/// Static type of an expression given the types of columns, keys and aggregates.
pub fn type_of(e: &Expr, leaf: &dyn Fn(&Expr) -> Type) -> Type {
    use super::value::arith_type;
    match e {
        Expr::Col(_) | Expr::Agg(_) | Expr::Key(_) => leaf(e),
        Expr::Lit(v) => v.ty(),
        Expr::Arith(op, a, b) => arith_type(*op, type_of(a, leaf), type_of(b, leaf)).unwrap_or(Type::Null),
        Expr::Cmp(..)
        | Expr::And(..)
        | Expr::Or(..)
        | Expr::Not(_)
        | Expr::IsNull(..)
        | Expr::InList(..)
        | Expr::Like(..) => Type::Bool,
        Expr::Neg(a) => type_of(a, leaf),
        Expr::Case(whens, els) => {
            let mut t = Type::Null;
            for (_, r) in whens {
                t = Type::unify(t, type_of(r, leaf)).unwrap_or(t);
            }
            if let Some(e) = els {
                t = Type::unify(t, type_of(e, leaf)).unwrap_or(t);
            }
            t
        }
        Expr::DateTrunc(..) | Expr::TimeBucket(..) => Type::Ts,
    }
}
