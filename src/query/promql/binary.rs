//! Binary operators: scalar/scalar, vector/scalar (arithmetic, filtering comparisons,
//! `bool`), and vector/vector with label matching (`on`/`ignoring`,
//! `group_left`/`group_right`) plus the set operators `and`/`or`/`unless`.
//! Semantics and error texts follow Prometheus 2.42's `VectorBinop`.

use std::collections::{HashMap, HashSet};

use promql_parser::parser::token::{self, TokenId};
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::engine::{check_dups, Ctx, LabelMemo, Range};
use super::value::{Elem, Val, Vector};
use super::PromError;
use crate::model::{Labels, METRIC_NAME};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Card {
    OneToOne,
    ManyToOne,
    OneToMany,
    ManyToMany,
}

struct Matching {
    card: Card,
    on: bool,
    names: Vec<String>,
    include: Vec<String>,
}

impl Matching {
    fn from_expr(b: &BinaryExpr) -> Matching {
        let set_op = is_set_op(b.op.id());
        let mut m = Matching {
            card: if set_op { Card::ManyToMany } else { Card::OneToOne },
            on: false,
            names: Vec::new(),
            include: Vec::new(),
        };
        if let Some(md) = &b.modifier {
            match &md.matching {
                Some(LabelModifier::Include(l)) => {
                    m.on = true;
                    m.names = l.labels.clone();
                }
                Some(LabelModifier::Exclude(l)) => m.names = l.labels.clone(),
                None => {}
            }
            if !set_op {
                match &md.card {
                    VectorMatchCardinality::ManyToOne(l) => {
                        m.card = Card::ManyToOne;
                        m.include = l.labels.clone();
                    }
                    VectorMatchCardinality::OneToMany(l) => {
                        m.card = Card::OneToMany;
                        m.include = l.labels.clone();
                    }
                    _ => {}
                }
            }
        }
        m
    }

    /// The labels two elements must share to match.
    fn signature(&self, l: &Labels) -> Labels {
        let names: Vec<&str> = self.names.iter().map(|s| s.as_str()).collect();
        if self.on {
            l.only(&names)
        } else {
            let mut n = names;
            n.push(METRIC_NAME);
            l.without(&n)
        }
    }
}

fn is_set_op(op: TokenId) -> bool {
    matches!(op, token::T_LAND | token::T_LOR | token::T_LUNLESS)
}

fn is_comparison(op: TokenId) -> bool {
    matches!(
        op,
        token::T_EQLC | token::T_NEQ | token::T_GTR | token::T_LSS | token::T_GTE | token::T_LTE
    )
}

/// Arithmetic drops the metric name (the result is no longer that metric); `atan2`
/// and comparisons keep it, as in Prometheus 2.x.
fn drops_metric_name(op: TokenId) -> bool {
    matches!(
        op,
        token::T_ADD | token::T_SUB | token::T_MUL | token::T_DIV | token::T_POW | token::T_MOD
    )
}

/// `(value, keep)`: comparisons return the left value and whether it passes.
fn elem_op(op: TokenId, l: f64, r: f64) -> Result<(f64, bool), PromError> {
    Ok(match op {
        token::T_ADD => (l + r, true),
        token::T_SUB => (l - r, true),
        token::T_MUL => (l * r, true),
        token::T_DIV => (l / r, true),
        token::T_POW => (l.powf(r), true),
        token::T_MOD => (l % r, true),
        token::T_ATAN2 => (l.atan2(r), true),
        token::T_EQLC => (l, l == r),
        token::T_NEQ => (l, l != r),
        token::T_GTR => (l, l > r),
        token::T_LSS => (l, l < r),
        token::T_GTE => (l, l >= r),
        token::T_LTE => (l, l <= r),
        _ => {
            return Err(PromError::BadData(format!(
                "operator not allowed here: {}",
                token::TokenType::new(op)
            )))
        }
    })
}

pub(crate) fn eval(ctx: &Ctx, b: &BinaryExpr, rng: &Range) -> Result<Val, PromError> {
    let op = b.op.id();
    let return_bool = b.return_bool();
    let lhs = ctx.eval(&b.lhs, rng)?;
    let rhs = ctx.eval(&b.rhs, rng)?;
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => {
            let mut out = Vec::with_capacity(l.len());
            for (a, c) in l.into_iter().zip(r) {
                let (v, keep) = elem_op(op, a, c)?;
                out.push(if is_comparison(op) {
                    f64::from(u8::from(keep))
                } else {
                    v
                });
            }
            Ok(Val::Scalar(out))
        }
        (Val::Vector(l), Val::Scalar(r)) => vector_scalar(op, l, &r, false, return_bool),
        (Val::Scalar(l), Val::Vector(r)) => vector_scalar(op, r, &l, true, return_bool),
        (Val::Vector(l), Val::Vector(r)) => {
            let m = Matching::from_expr(b);
            let mut sig = LabelMemo::new(|l: &Labels| m.signature(l));
            let mut out = Vec::with_capacity(l.len());
            for (lv, rv) in l.into_iter().zip(r) {
                ctx.check_deadline()?;
                let v = match op {
                    token::T_LAND => and_unless(&mut sig, lv, &rv, true),
                    token::T_LUNLESS => and_unless(&mut sig, lv, &rv, false),
                    token::T_LOR => or(&mut sig, lv, rv),
                    _ => vector_vector(op, &m, &mut sig, return_bool, lv, rv)?,
                };
                check_dups(&v)?;
                out.push(v);
            }
            Ok(Val::Vector(out))
        }
        (l, r) => Err(PromError::Execution(format!(
            "binary expression must contain only scalar and instant vector types, got {} and {}",
            l.type_name(),
            r.type_name()
        ))),
    }
}

fn vector_scalar(op: TokenId, steps: Vec<Vector>, s: &[f64], swap: bool, return_bool: bool) -> Result<Val, PromError> {
    let drop_name = drops_metric_name(op) || return_bool;
    let mut names = LabelMemo::new(Labels::without_metric_name);
    let mut out = Vec::with_capacity(steps.len());
    for (i, vec) in steps.into_iter().enumerate() {
        let sv = s.get(i).copied().unwrap_or(f64::NAN);
        let mut o: Vector = Vec::with_capacity(vec.len());
        for mut e in vec {
            let (l, r) = if swap { (sv, e.v) } else { (e.v, sv) };
            let (mut v, mut keep) = elem_op(op, l, r)?;
            // A comparison always yields the vector's value, whichever side it is on.
            if is_comparison(op) && swap {
                v = r;
            }
            if return_bool {
                v = f64::from(u8::from(keep));
                keep = true;
            }
            if keep {
                e.v = v;
                if drop_name {
                    e.labels = names.get(&e.labels);
                }
                o.push(e);
            }
        }
        check_dups(&o)?;
        out.push(o);
    }
    Ok(Val::Vector(out))
}

fn and_unless(
    sig: &mut LabelMemo<Labels, impl FnMut(&Labels) -> Labels>,
    lhs: Vector,
    rhs: &Vector,
    and: bool,
) -> Vector {
    let sigs: HashSet<Labels> = rhs.iter().map(|e| sig.get(&e.labels)).collect();
    lhs.into_iter()
        .filter(|e| sigs.contains(&sig.get(&e.labels)) == and)
        .collect()
}

fn or(sig: &mut LabelMemo<Labels, impl FnMut(&Labels) -> Labels>, mut lhs: Vector, rhs: Vector) -> Vector {
    let sigs: HashSet<Labels> = lhs.iter().map(|e| sig.get(&e.labels)).collect();
    lhs.extend(rhs.into_iter().filter(|e| !sigs.contains(&sig.get(&e.labels))));
    lhs
}

fn vector_vector(
    op: TokenId,
    m: &Matching,
    sigf: &mut LabelMemo<Labels, impl FnMut(&Labels) -> Labels>,
    return_bool: bool,
    lhs: Vector,
    rhs: Vector,
) -> Result<Vector, PromError> {
    if m.card == Card::ManyToMany {
        return Err(PromError::Execution(
            "many-to-many only allowed for set operators".into(),
        ));
    }
    let (lhs, rhs) = if m.card == Card::OneToMany {
        (rhs, lhs)
    } else {
        (lhs, rhs)
    };
    // The right side is the "one" side: its signatures must be unique.
    let mut right: HashMap<Labels, &Elem> = HashMap::with_capacity(rhs.len());
    for e in &rhs {
        let sig = sigf.get(&e.labels);
        if let Some(dup) = right.get(&sig) {
            let side = if m.card == Card::OneToMany { "left" } else { "right" };
            return Err(PromError::Execution(format!(
                "found duplicate series for the match group {sig} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                e.labels, dup.labels
            )));
        }
        right.insert(sig, e);
    }
    let mut matched: HashMap<Labels, HashSet<Labels>> = HashMap::new();
    let mut out = Vec::new();
    for l in &lhs {
        let sig = sigf.get(&l.labels);
        let Some(r) = right.get(&sig) else {
            continue;
        };
        let (vl, vr) = if m.card == Card::OneToMany {
            (r.v, l.v)
        } else {
            (l.v, r.v)
        };
        let (mut v, keep) = elem_op(op, vl, vr)?;
        if return_bool {
            v = f64::from(u8::from(keep));
        } else if !keep {
            continue;
        }
        let mut metric = result_metric(&l.labels, &r.labels, op, m);
        if return_bool {
            metric = metric.without_metric_name();
        }
        match matched.get_mut(&sig) {
            Some(set) => {
                if m.card == Card::OneToOne {
                    return Err(PromError::Execution(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                            .into(),
                    ));
                }
                if !set.insert(metric.clone()) {
                    return Err(PromError::Execution(
                        "multiple matches for labels: grouping labels must ensure unique matches".into(),
                    ));
                }
            }
            None => {
                let mut set = HashSet::new();
                set.insert(metric.clone());
                matched.insert(sig, set);
            }
        }
        out.push(Elem { labels: metric, v });
    }
    Ok(out)
}

fn result_metric(many: &Labels, one: &Labels, op: TokenId, m: &Matching) -> Labels {
    let mut l = if drops_metric_name(op) {
        many.without_metric_name()
    } else {
        many.clone()
    };
    if m.card == Card::OneToOne {
        let names: Vec<&str> = m.names.iter().map(|s| s.as_str()).collect();
        l = if m.on { l.only(&names) } else { l.without(&names) };
    }
    for name in &m.include {
        l = l.with(name, one.get(name).unwrap_or(""));
    }
    l
}
