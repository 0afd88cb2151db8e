//! Aggregate functions and their accumulators. DECIMAL sums and averages are exact
//! (`i128` nano-units); a sum of DECIMAL never touches f64.

use std::collections::HashSet;

use super::exec::{Arr, Datum};
use super::expr::Expr;
use super::value::{compare, div_round, Type, Val, SCALE};
use super::SqlError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggFunc {
    Sum,
    Count,
    CountStar,
    CountDistinct,
    Avg,
    Min,
    Max,
}

impl AggFunc {
    pub fn from_name(n: &str) -> Option<AggFunc> {
        Some(match n {
            "sum" => AggFunc::Sum,
            "count" => AggFunc::Count,
            "avg" => AggFunc::Avg,
            "min" => AggFunc::Min,
            "max" => AggFunc::Max,
            _ => return None,
        })
    }

    pub fn result_type(self, arg: Type) -> Option<Type> {
        match self {
            AggFunc::Count | AggFunc::CountStar | AggFunc::CountDistinct => Some(Type::Int),
            AggFunc::Sum => match arg {
                Type::Int | Type::Float | Type::Dec | Type::Interval | Type::Null => Some(arg),
                _ => None,
            },
            AggFunc::Avg => match arg {
                Type::Int | Type::Float | Type::Null => Some(Type::Float),
                Type::Dec => Some(Type::Dec),
                _ => None,
            },
            AggFunc::Min | AggFunc::Max => Some(arg),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AggSpec {
    pub func: AggFunc,
    pub arg: Option<Expr>,
    pub arg_ty: Type,
    pub ty: Type,
}

/// Running state of one aggregate in one group.
#[derive(Debug, Clone)]
pub enum Acc {
    Count(i64),
    SumInt(i128, bool),
    SumFloat(f64, bool),
    SumDec(i128, bool),
    AvgFloat(f64, i64),
    AvgDec(i128, i64),
    Distinct(HashSet<Val>),
    Min(Val),
    Max(Val),
}

impl Acc {
    pub fn new(spec: &AggSpec) -> Acc {
        match spec.func {
            AggFunc::Count | AggFunc::CountStar => Acc::Count(0),
            AggFunc::CountDistinct => Acc::Distinct(HashSet::new()),
            AggFunc::Sum => match spec.arg_ty {
                Type::Float => Acc::SumFloat(0.0, false),
                Type::Dec => Acc::SumDec(0, false),
                _ => Acc::SumInt(0, false),
            },
            AggFunc::Avg => match spec.arg_ty {
                Type::Dec => Acc::AvgDec(0, 0),
                _ => Acc::AvgFloat(0.0, 0),
            },
            AggFunc::Min => Acc::Min(Val::Null),
            AggFunc::Max => Acc::Max(Val::Null),
        }
    }

    /// Bytes of state beyond the enum (for memory limits).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Acc::Distinct(s) => s.len() * 48,
            _ => 0,
        }
    }

    /// Folds rows `[from, to)` of `d` (the aggregate's argument; `None` for count(*)).
    pub fn update(&mut self, d: Option<&Datum>, from: usize, to: usize) -> Result<(), SqlError> {
        let n = (to - from) as i64;
        let Some(d) = d else {
            if let Acc::Count(c) = self {
                *c += n;
            }
            return Ok(());
        };
        match (self, d) {
            (Acc::Count(c), Datum::S(v)) => {
                if !v.is_null() {
                    *c += n
                }
            }
            (Acc::Count(c), Datum::A(Arr::Any(vs))) => {
                *c += vs[from..to].iter().filter(|v| !v.is_null()).count() as i64
            }
            (Acc::Count(c), Datum::A(_)) => *c += n,
            (Acc::SumDec(s, any), Datum::A(Arr::Dec(v))) => {
                let mut t: i128 = 0;
                for x in &v[from..to] {
                    t += *x;
                }
                *s = s
                    .checked_add(t)
                    .ok_or_else(|| SqlError::Exec("sum overflowed DECIMAL(38,9)".into()))?;
                *any |= to > from;
            }
            (Acc::SumDec(s, any), Datum::A(Arr::Money(v))) => {
                let mut t: i128 = 0;
                for x in &v[from..to] {
                    t += *x as i128;
                }
                *s = s
                    .checked_add(t)
                    .ok_or_else(|| SqlError::Exec("sum overflowed DECIMAL(38,9)".into()))?;
                *any |= to > from;
            }
            (Acc::SumFloat(s, any), Datum::A(Arr::Float(v))) => {
                for x in &v[from..to] {
                    *s += *x;
                }
                *any |= to > from;
            }
            (Acc::SumInt(s, any), Datum::A(Arr::Int(v))) => {
                for x in &v[from..to] {
                    *s += *x as i128;
                }
                *any |= to > from;
            }
            (Acc::AvgDec(s, c), Datum::A(Arr::Dec(v))) => {
                for x in &v[from..to] {
                    *s += *x;
                }
                *c += n;
            }
            (Acc::AvgDec(s, c), Datum::A(Arr::Money(v))) => {
                for x in &v[from..to] {
                    *s += *x as i128;
                }
                *c += n;
            }
            (Acc::AvgFloat(s, c), Datum::A(Arr::Float(v))) => {
                for x in &v[from..to] {
                    *s += *x;
                }
                *c += n;
            }
            (acc, d) => {
                for i in from..to {
                    acc.update_one(&d.at(i))?;
                }
            }
        }
        Ok(())
    }

    fn update_one(&mut self, v: &Val) -> Result<(), SqlError> {
        if v.is_null() {
            return Ok(());
        }
        let ov = || SqlError::Exec("sum overflowed".into());
        match (self, v) {
            (Acc::Count(c), _) => *c += 1,
            (Acc::Distinct(s), v) => {
                s.insert(v.clone());
            }
            (Acc::SumInt(s, any), Val::Int(i) | Val::Interval(i)) => {
                *s = s.checked_add(*i as i128).ok_or_else(ov)?;
                *any = true;
            }
            (Acc::SumFloat(s, any), v) => {
                *s += v.as_f64().unwrap_or(f64::NAN);
                *any = true;
            }
            (Acc::SumDec(s, any), Val::Dec(d)) => {
                *s = s.checked_add(*d).ok_or_else(ov)?;
                *any = true;
            }
            (Acc::SumDec(s, any), Val::Int(i)) => {
                *s = s.checked_add(*i as i128 * SCALE).ok_or_else(ov)?;
                *any = true;
            }
            (Acc::AvgDec(s, c), Val::Dec(d)) => {
                *s += *d;
                *c += 1;
            }
            (Acc::AvgFloat(s, c), v) => {
                *s += v.as_f64().unwrap_or(f64::NAN);
                *c += 1;
            }
            (Acc::Min(m), v) => {
                if m.is_null() || compare(v, m) == Some(std::cmp::Ordering::Less) {
                    *m = v.clone();
                }
            }
            (Acc::Max(m), v) => {
                if m.is_null() || compare(v, m) == Some(std::cmp::Ordering::Greater) {
                    *m = v.clone();
                }
            }
            (acc, v) => {
                return Err(SqlError::Exec(format!(
                    "internal: accumulator {acc:?} cannot take {}",
                    v.ty().sql_name()
                )))
            }
        }
        Ok(())
    }

    /// Folds another worker's state for the same group into this one.
    pub fn merge(&mut self, o: Acc) -> Result<(), SqlError> {
        let ov = || SqlError::Exec("sum overflowed".into());
        match (self, o) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::SumInt(a, x), Acc::SumInt(b, y)) | (Acc::SumDec(a, x), Acc::SumDec(b, y)) => {
                *a = a.checked_add(b).ok_or_else(ov)?;
                *x |= y;
            }
            (Acc::SumFloat(a, x), Acc::SumFloat(b, y)) => {
                *a += b;
                *x |= y;
            }
            (Acc::AvgFloat(a, n), Acc::AvgFloat(b, m)) => {
                *a += b;
                *n += m;
            }
            (Acc::AvgDec(a, n), Acc::AvgDec(b, m)) => {
                *a += b;
                *n += m;
            }
            (Acc::Distinct(a), Acc::Distinct(b)) => a.extend(b),
            (Acc::Min(a), Acc::Min(b)) => {
                if !b.is_null() && (a.is_null() || compare(&b, a) == Some(std::cmp::Ordering::Less)) {
                    *a = b;
                }
            }
            (Acc::Max(a), Acc::Max(b)) => {
                if !b.is_null() && (a.is_null() || compare(&b, a) == Some(std::cmp::Ordering::Greater)) {
                    *a = b;
                }
            }
            (a, b) => return Err(SqlError::Exec(format!("internal: cannot merge {a:?} with {b:?}"))),
        }
        Ok(())
    }

    pub fn finish(&self, ty: Type) -> Val {
        match self {
            Acc::Count(c) => Val::Int(*c),
            Acc::Distinct(s) => Val::Int(s.len() as i64),
            Acc::SumInt(_, false) | Acc::SumFloat(_, false) | Acc::SumDec(_, false) => Val::Null,
            Acc::SumInt(s, true) => match ty {
                Type::Interval => i64::try_from(*s).map_or(Val::Null, Val::Interval),
                _ => i64::try_from(*s).map_or(Val::Float(*s as f64), Val::Int),
            },
            Acc::SumFloat(s, true) => Val::Float(*s),
            Acc::SumDec(s, true) => Val::Dec(*s),
            Acc::AvgFloat(_, 0) | Acc::AvgDec(_, 0) => Val::Null,
            Acc::AvgFloat(s, c) => Val::Float(*s / *c as f64),
            Acc::AvgDec(s, c) => Val::Dec(div_round(*s, *c as i128)),
            Acc::Min(v) | Acc::Max(v) => v.clone(),
        }
    }
}
