//! `label_replace` and `label_join`. Both keep the metric name; a result with two
//! identical label sets is an error (Prometheus: "vector cannot contain metrics with
//! the same labelset").

use promql_parser::parser::Expr;
use regex::Regex;

use super::{arg, string_arg};
use crate::model::Labels;
use crate::query::promql::engine::{check_dups, Ctx, Range};
use crate::query::promql::value::Val;
use crate::query::promql::PromError;
// Prometheus's label-name rule; `__`-prefixed names are allowed here, unlike for ingested series.
use crate::model::is_label_name_syntax as valid_label_name;

pub(super) fn label_replace(ctx: &Ctx, args: &[&Expr], rng: &Range) -> Result<Val, PromError> {
    let dst = string_arg(ctx, args, 1, rng)?;
    let repl = string_arg(ctx, args, 2, rng)?;
    let src = string_arg(ctx, args, 3, rng)?;
    let re_src = string_arg(ctx, args, 4, rng)?;
    let re = Regex::new(&format!("^(?:{re_src})$"))
        .map_err(|e| PromError::Execution(format!("invalid regular expression in label_replace(): {re_src}: {e}")))?;
    if !valid_label_name(&dst) {
        return Err(PromError::Execution(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    let mut steps = ctx.eval_vector(arg(args, 0)?, rng)?;
    // Labels repeat across steps: remember the last rewrite.
    let mut memo: Option<(Labels, Labels)> = None;
    for vec in &mut steps {
        for e in vec.iter_mut() {
            if let Some((from, to)) = &memo {
                if *from == e.labels {
                    e.labels = to.clone();
                    continue;
                }
            }
            let val = e.labels.get(&src).unwrap_or("");
            let new = match re.captures(val) {
                Some(caps) => {
                    let mut out = String::new();
                    caps.expand(&repl, &mut out);
                    e.labels.with(&dst, &out)
                }
                None => e.labels.clone(),
            };
            memo = Some((e.labels.clone(), new.clone()));
            e.labels = new;
        }
        check_dups(vec)?;
    }
    Ok(Val::Vector(steps))
}

pub(super) fn label_join(ctx: &Ctx, args: &[&Expr], rng: &Range) -> Result<Val, PromError> {
    let dst = string_arg(ctx, args, 1, rng)?;
    let sep = string_arg(ctx, args, 2, rng)?;
    let mut srcs = Vec::new();
    for i in 3..args.len() {
        let s = string_arg(ctx, args, i, rng)?;
        if !valid_label_name(&s) {
            return Err(PromError::Execution(format!(
                "invalid source label name in label_join(): {s}"
            )));
        }
        srcs.push(s);
    }
    if !valid_label_name(&dst) {
        return Err(PromError::Execution(format!(
            "invalid destination label name in label_join(): {dst}"
        )));
    }
    let mut steps = ctx.eval_vector(arg(args, 0)?, rng)?;
    for vec in &mut steps {
        for e in vec.iter_mut() {
            let joined = srcs
                .iter()
                .map(|s| e.labels.get(s).unwrap_or(""))
                .collect::<Vec<_>>()
                .join(&sep);
            e.labels = e.labels.with(&dst, &joined);
        }
        check_dups(vec)?;
    }
    Ok(Val::Vector(steps))
}
