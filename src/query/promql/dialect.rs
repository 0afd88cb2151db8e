//! The Prometheus **2.42** dialect on top of the `promql-parser` crate, which parses
//! the 3.x language. We add what 2.x has and 3.x renamed (`holt_winters`, registered
//! once as an extra parser function with the 2.x signature — safer than rewriting
//! query text, which could touch string literals), and reject what only 3.x accepts:
//! 3.x-only functions and aggregations, `fill` modifiers, `or` inside selectors,
//! quoted (UTF-8) metric and label names in braces, durations used as numbers or in
//! arithmetic (`time() - 1h`, `x[5m+1m]`), and `@` timestamps 2.x calls out of bounds.
//! All rejections are `bad_data` parse errors, as Prometheus reports them.

use promql_parser::parser::{self, AtModifier, Expr};

use super::PromError;

/// Functions Prometheus 2.42 has. The parser crate knows 3.x's list; anything not
/// here is rejected so that tally speaks the documented 2.x dialect.
const FUNCTIONS_2X: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "days_in_month",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "deg",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_count",
    "histogram_sum",
    "histogram_fraction",
    "histogram_quantile",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_replace",
    "label_join",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
];

fn register_holt_winters() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use promql_parser::parser::value::ValueType;
        // Fails only if the crate gains a built-in of that name, in which case the
        // built-in is used and the 2.x-only check below still applies.
        let _ = parser::register_extra_functions(vec![parser::Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        )]);
    });
}

/// Parses a query in the Prometheus 2.x dialect.
pub(crate) fn parse(query: &str) -> Result<Expr, PromError> {
    register_holt_winters();
    prescan(query)?;
    let expr = parser::parse(query).map_err(|e| PromError::BadData(format!("parse error: {e}")))?;
    check_2x(&expr)?;
    Ok(expr)
}

/// Rejects what the parser crate accepts but Prometheus 2.42 does not.
fn check_2x(e: &Expr) -> Result<(), PromError> {
    use promql_parser::parser::token;
    match e {
        Expr::Aggregate(a) => {
            let id = a.op.id();
            if id == token::T_LIMITK || id == token::T_LIMIT_RATIO {
                return Err(PromError::BadData(format!("parse error: unknown aggregation {}", a.op)));
            }
            check_2x(&a.expr)?;
            if let Some(p) = &a.param {
                check_2x(p)?;
            }
        }
        Expr::Unary(u) => check_2x(&u.expr)?,
        Expr::Binary(b) => {
            if let Some(m) = &b.modifier {
                if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() {
                    return Err(PromError::BadData(
                        "parse error: fill modifiers are not supported".into(),
                    ));
                }
            }
            check_2x(&b.lhs)?;
            check_2x(&b.rhs)?;
        }
        Expr::Paren(p) => check_2x(&p.expr)?,
        Expr::Subquery(s) => {
            check_at(&s.at)?;
            check_2x(&s.expr)?
        }
        Expr::Call(c) => {
            if !FUNCTIONS_2X.contains(&c.func.name) {
                return Err(PromError::BadData(format!(
                    "parse error: unknown function with name {:?}",
                    c.func.name
                )));
            }
            for a in &c.args.args {
                check_2x(a)?;
            }
        }
        Expr::VectorSelector(v) => {
            check_at(&v.at)?;
            if !v.matchers.or_matchers.is_empty() {
                return Err(PromError::BadData(
                    "parse error: `or` in label matchers is not supported".into(),
                ));
            }
        }
        Expr::MatrixSelector(m) => {
            check_at(&m.vs.at)?;
            if !m.vs.matchers.or_matchers.is_empty() {
                return Err(PromError::BadData(
                    "parse error: `or` in label matchers is not supported".into(),
                ));
            }
        }
        Expr::Extension(_) => return Err(PromError::BadData("parse error: unsupported expression".into())),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => {}
    }
    Ok(())
}

/// Largest `@` timestamp (ms) accepted; beyond it Prometheus 2.x's int64 millisecond
/// conversion is meaningless and it reports "timestamp out of bounds".
const MAX_AT_MS: u128 = 9_000_000_000_000_000;

fn check_at(at: &Option<AtModifier>) -> Result<(), PromError> {
    if let Some(AtModifier::At(t)) = at {
        let ms = match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => d.as_millis(),
            Err(e) => e.duration().as_millis(),
        };
        if ms > MAX_AT_MS {
            return Err(PromError::BadData(
                "parse error: timestamp out of bounds for @ modifier".into(),
            ));
        }
    }
    Ok(())
}

/// Deepest bracket nesting accepted. Parsing and evaluation recurse over the AST; a
/// bound keeps hostile queries from overflowing a thread's stack (an abort, not an
/// error). Prometheus has no such limit; real queries stay far below it.
const MAX_NESTING: usize = 64;
/// Most operators (binary, unary, set) accepted in one query, for the same reason:
/// a chain `1+1+…` is as deep as it is long.
const MAX_OPERATORS: usize = 128;

fn bad(msg: &str) -> PromError {
    PromError::BadData(format!("parse error: {msg}"))
}

/// A lexical pass for the 3.x-only syntax that leaves no trace in the AST: where a
/// duration appears (2.x: only inside `[…]` and after `offset`) and whether a label
/// name inside `{…}` is quoted. Strings and comments are skipped; anything this pass
/// does not understand is left to the parser.
fn prescan(q: &str) -> Result<(), PromError> {
    let c: Vec<char> = q.chars().collect();
    let mut i = 0;
    let mut in_braces = false;
    let mut in_brackets = false;
    // The previous significant token, coarsely: identifier text or punctuation.
    let mut prev = String::new();
    let mut prev2 = String::new();
    let (mut depth, mut ops) = (0usize, 0usize);
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
            continue;
        }
        if ch == '#' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
            continue;
        }
        let tok: String;
        if ch == '"' || ch == '\'' || ch == '`' {
            if in_braces && (prev == "{" || prev == ",") {
                return Err(bad("unexpected string in label matching, expected identifier or \"}\""));
            }
            i += 1;
            while i < c.len() && c[i] != ch {
                if c[i] == '\\' && ch != '`' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            tok = "\"".into();
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' && !in_brackets {
            let s = i;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == ':') {
                i += 1;
            }
            tok = c[s..i].iter().collect();
            if !in_braces
                && ["and", "or", "unless", "atan2"]
                    .iter()
                    .any(|k| tok.eq_ignore_ascii_case(k))
            {
                ops += 1;
            }
        } else if ch.is_ascii_digit() || (ch == '.' && c.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let s = i;
            if ch == '0' && matches!(c.get(i + 1), Some('x') | Some('X')) {
                i += 2;
                while i < c.len() && c[i].is_ascii_hexdigit() {
                    i += 1;
                }
            } else {
                while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.') {
                    i += 1;
                }
                if matches!(c.get(i), Some('e') | Some('E'))
                    && c.get(i + 1)
                        .is_some_and(|d| d.is_ascii_digit() || *d == '+' || *d == '-')
                {
                    i += 2;
                    while i < c.len() && c[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let is_duration = i < c.len() && matches!(c[i], 's' | 'm' | 'h' | 'd' | 'w' | 'y');
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '.') {
                i += 1;
            }
            let _ = s;
            if is_duration {
                let after_offset =
                    prev.eq_ignore_ascii_case("offset") || (prev == "-" && prev2.eq_ignore_ascii_case("offset"));
                let in_range = in_brackets && (prev == "[" || prev == ":");
                if !after_offset && !in_range {
                    return Err(bad("unexpected duration"));
                }
                tok = "duration".into();
            } else {
                if in_brackets {
                    return Err(bad("unexpected number inside brackets, expected duration"));
                }
                tok = "number".into();
            }
        } else {
            match ch {
                '{' => in_braces = true,
                '}' => in_braces = false,
                '[' => in_brackets = true,
                ']' => in_brackets = false,
                _ => {}
            }
            match ch {
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                // Two-character operators (`==`, `!=`, `<=`, `>=`) count once.
                '+' | '-' | '*' | '/' | '%' | '^' | '<' | '>' if !in_braces => ops += 1,
                '=' | '!' if !in_braces && !matches!(prev.as_str(), "=" | "!" | "<" | ">") => ops += 1,
                _ => {}
            }
            if depth > MAX_NESTING {
                return Err(bad(&format!("query nesting deeper than {MAX_NESTING}")));
            }
            if ops > MAX_OPERATORS {
                return Err(bad(&format!("query has more than {MAX_OPERATORS} operators")));
            }
            if in_brackets && !matches!(ch, '[' | ':') {
                return Err(bad(&format!("unexpected character inside brackets: {ch:?}")));
            }
            i += 1;
            tok = ch.to_string();
        }
        prev2 = std::mem::replace(&mut prev, tok);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialect_2x() {
        for ok in [
            "rate(x[5m])",
            "x offset 5m",
            "x OFFSET 5m",
            "x offset -1h30m",
            "max_over_time(x[1h:5m] offset 10m)",
            "x[1h:]",
            "x @ 100 offset 5m",
            "x{a=\"1h\", b=~'5m'} + 1e3 - 0x1f * .5",
            "holt_winters(x[5m], 0.5, 0.5) # a comment 5m",
            "sum by (a) (x) / on(b) group_left(c) y",
            "x[5m] @ end()",
        ] {
            assert!(parse(ok).is_ok(), "{ok}: {:?}", parse(ok).err());
        }
        for bad in [
            "time() - 1h",
            "x[5m+1m]",
            "x[300]",
            "{\"x\"}",
            "x{\"a\"=\"b\"}",
            "x @ 1e20",
            "double_exponential_smoothing(x[5m], 0.5, 0.5)",
            "sort_by_label(x, \"a\")",
            "limitk(1, x)",
            "x{a=\"b\" or a=\"c\"}",
        ] {
            let e = parse(bad).err();
            assert!(matches!(e, Some(PromError::BadData(_))), "{bad}: {e:?}");
        }
    }
}
