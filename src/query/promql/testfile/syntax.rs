//! The test-file syntax pieces: durations, numbers, series descriptions with the
//! expanding value notation.

use crate::model::{Label, Labels, METRIC_NAME};
use crate::query::promql::value::stale_nan;

/// Prometheus durations: `1h30m`, `5m`, `10s`, `100ms`, `2d`, `1w`, `1y`; a bare
/// number is not accepted. Returns milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let b = s.as_bytes();
    let mut i = 0;
    let mut total: i64 = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!("invalid duration {s:?}"));
        }
        let n: i64 = s[start..i].parse().map_err(|_| format!("invalid duration {s:?}"))?;
        let ustart = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = match &s[ustart..i] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            u => return Err(format!("invalid duration unit {u:?} in {s:?}")),
        };
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(|| format!("duration {s:?} out of range"))?;
    }
    Ok(total)
}

/// Go's `ParseFloat` plus integers in other bases (as `strconv.ParseInt(s, 0, 64)`).
pub(super) fn parse_number(s: &str) -> Option<f64> {
    let lower = s.to_ascii_lowercase();
    let (neg, body) = match lower.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, lower.strip_prefix('+').unwrap_or(&lower)),
    };
    let v = match body {
        "inf" | "infinity" => f64::INFINITY,
        "nan" => f64::NAN,
        _ if body.starts_with("0x") => i64::from_str_radix(&body[2..], 16).ok()? as f64,
        _ => {
            if !body.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
                return None;
            }
            body.parse::<f64>().ok()?
        }
    };
    Some(if neg { -v } else { v })
}

/// Parses `metric{a="b"} v1 v2 …` into labels and values (`None` = omitted).
pub fn parse_series(line: &str) -> Result<(Labels, Vec<Option<f64>>), String> {
    let mut labels: Vec<Label> = Vec::new();
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
        i += 1;
    }
    if i > 0 {
        labels.push(Label {
            name: METRIC_NAME.into(),
            value: line[..i].into(),
        });
    }
    let rest = line[i..].trim_start();
    let rest = if let Some(body) = rest.strip_prefix('{') {
        let (ls, after) = parse_label_body(body)?;
        for (n, v) in ls {
            labels.retain(|l| l.name != n);
            labels.push(Label {
                name: n.into(),
                value: v.into(),
            });
        }
        after
    } else {
        rest
    };
    if labels.is_empty() && i == 0 && !line.starts_with('{') {
        return Err("missing metric name or labels".into());
    }
    let mut vals = Vec::new();
    for tok in rest.split_whitespace() {
        expand_value(tok, &mut vals)?;
    }
    Ok((Labels::from_sorted_unchecked(labels), vals))
}

type LabelPairs = Vec<(String, String)>;

/// Parses `a="b", c='d'}` returning the pairs and the text after `}`.
fn parse_label_body(s: &str) -> Result<(LabelPairs, &str), String> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((out, r));
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("unterminated label set")?;
        let name = rest[..end].to_string();
        if name.is_empty() {
            return Err(format!("expected label name at {rest:?}"));
        }
        rest = rest[end..].trim_start();
        rest = rest.strip_prefix('=').ok_or("expected '='")?.trim_start();
        let (value, r) = parse_quoted(rest)?;
        out.push((name, value));
        rest = r.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        }
    }
}

/// A Go-style quoted string ("…", '…' with escapes, or `…` raw).
fn parse_quoted(s: &str) -> Result<(String, &str), String> {
    let mut chars = s.char_indices();
    let q = match chars.next() {
        Some((_, c)) if c == '"' || c == '\'' || c == '`' => c,
        _ => return Err(format!("expected quoted string at {s:?}")),
    };
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        if c == q {
            return Ok((out, &s[i + c.len_utf8()..]));
        }
        if c == '\\' && q != '`' {
            let (_, e) = chars.next().ok_or("unterminated escape")?;
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                '\'' => out.push('\''),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        } else {
            out.push(c);
        }
    }
    Err("unterminated string".into())
}

/// Expands one value token: `_`, `_xN`, `stale`, `v`, `vxN`, `v+dxN`, `v-dxN`.
fn expand_value(tok: &str, out: &mut Vec<Option<f64>>) -> Result<(), String> {
    if tok == "_" {
        out.push(None);
        return Ok(());
    }
    if tok == "stale" {
        out.push(Some(stale_nan()));
        return Ok(());
    }
    if let Some(n) = tok.strip_prefix("_x") {
        let n: usize = n.parse().map_err(|_| format!("bad repeat in {tok:?}"))?;
        out.extend(std::iter::repeat_n(None, n));
        return Ok(());
    }
    let (head, times) = match tok.rfind('x') {
        Some(p) if tok[p + 1..].bytes().all(|c| c.is_ascii_digit()) && p + 1 < tok.len() => {
            let n: u64 = tok[p + 1..].parse().map_err(|_| format!("bad repeat in {tok:?}"))?;
            (&tok[..p], Some(n))
        }
        _ => (tok, None),
    };
    let Some(times) = times else {
        let v = parse_number(head).ok_or_else(|| format!("bad value {tok:?}"))?;
        out.push(Some(v));
        return Ok(());
    };
    // Split `start±delta`: the sign must not be the leading one or an exponent's.
    let hb = head.as_bytes();
    let mut split = None;
    for k in 1..hb.len() {
        if (hb[k] == b'+' || hb[k] == b'-') && !matches!(hb[k - 1], b'e' | b'E') {
            split = Some(k);
            break;
        }
    }
    let (start, delta) = match split {
        Some(k) => (
            parse_number(&head[..k]).ok_or_else(|| format!("bad value {tok:?}"))?,
            parse_number(&head[k..]).ok_or_else(|| format!("bad value {tok:?}"))?,
        ),
        None => (parse_number(head).ok_or_else(|| format!("bad value {tok:?}"))?, 0.0),
    };
    if times > 1_000_000 {
        return Err(format!("repeat too large in {tok:?}"));
    }
    let mut v = start;
    for _ in 0..=times {
        out.push(Some(v));
        v += delta;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_values() {
        let (l, v) = parse_series(r#"m{a="b", c='d'} 0+10x2 1-1x1 _ _x2 stale 5x1"#).unwrap();
        assert_eq!(l.to_string(), r#"m{a="b", c="d"}"#);
        assert_eq!(v.len(), 3 + 2 + 1 + 2 + 1 + 2);
        assert_eq!(v[..5], [Some(0.0), Some(10.0), Some(20.0), Some(1.0), Some(0.0)]);
        assert!(v[5].is_none() && v[6].is_none() && v[7].is_none());
        assert!(crate::query::promql::value::is_stale(v[8].unwrap()));
        assert_eq!(v[9..], [Some(5.0), Some(5.0)]);
        let (l, v) = parse_series("{} 3").unwrap();
        assert!(l.is_empty());
        assert_eq!(v, [Some(3.0)]);
        assert_eq!(parse_duration("1h30m").unwrap(), 5_400_000);
        assert!(parse_number("+Inf").unwrap().is_infinite());
        assert!(parse_number("foo").is_none());
    }
}
