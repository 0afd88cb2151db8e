//! Self-scrape: tally's own `/metrics`, written into its store every interval (the idea of
//! VictoriaMetrics' `-selfScrapeInterval`), so the ingest-health dashboard works with tally
//! as Grafana's only data source — no Prometheus needed to watch the pipeline.
//!
//! Each scrape renders the exposition text exactly as `GET /metrics` serves it, parses it
//! back (one parser for anything in Prometheus text format 0.0.4) and appends one gauge
//! sample per line, labelled `job="tally"` and `instance="<listen address>"` like a
//! Prometheus scrape. Counters stay counters in value, so `rate()` works on them.

use std::sync::Arc;
use std::time::Duration;

use super::AppState;
use crate::model::{LabelLimits, LabelsBuilder, Sample, SeriesKind, Value};
use crate::store::WriteBatch;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("exposition line {line}: {reason}")]
pub struct ExpositionError {
    pub line: usize,
    pub reason: String,
}

/// One sample line: label pairs (with `__name__`) and the value.
pub type ExpositionSample = (Vec<(String, String)>, f64);

/// Parses Prometheus text exposition format 0.0.4 (comments and blank lines skipped;
/// a trailing timestamp is accepted and ignored: the scrape time is used).
pub fn parse_exposition(text: &str) -> Result<Vec<ExpositionSample>, ExpositionError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: &str| ExpositionError {
            line: i + 1,
            reason: format!("{reason}: {line:?}"),
        };
        let name_end = line.find(['{', ' ', '\t']).ok_or_else(|| err("no value"))?;
        let mut labels = vec![("__name__".to_string(), line[..name_end].to_string())];
        let mut rest = &line[name_end..];
        if let Some(body) = rest.strip_prefix('{') {
            rest = parse_labels(body, &mut labels).ok_or_else(|| err("malformed labels"))?;
        }
        let value = rest.split_whitespace().next().ok_or_else(|| err("no value"))?;
        let v = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| err("value is not a number"))?,
        };
        out.push((labels, v));
    }
    Ok(out)
}

/// Parses `name="value",...}` into `out`; returns what follows the closing brace.
fn parse_labels<'a>(mut s: &'a str, out: &mut Vec<(String, String)>) -> Option<&'a str> {
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some(rest);
        }
        let eq = s.find('=')?;
        let name = s[..eq].trim().to_string();
        let mut chars = s[eq + 1..].trim_start().strip_prefix('"')?.char_indices();
        let start = s.len() - chars.as_str().len();
        let mut value = String::new();
        let end = loop {
            let (j, c) = chars.next()?;
            match c {
                '"' => break start + j + 1,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        };
        out.push((name, value));
        s = &s[end..];
    }
}

/// The write batch of one scrape at `ts_ns`.
pub fn scrape_batch(text: &str, ts_ns: i64, instance: &str, limits: &LabelLimits) -> Result<WriteBatch, String> {
    let samples = parse_exposition(text).map_err(|e| e.to_string())?;
    let mut wb = WriteBatch::new();
    for (pairs, v) in samples {
        let mut b = LabelsBuilder::new();
        for (k, val) in pairs {
            if k == "__name__" {
                b.metric(val);
            } else {
                b.push(k, val);
            }
        }
        b.push("job", "tally").push("instance", instance);
        let labels = b.build(limits).map_err(|e| e.to_string())?;
        wb.add(
            labels,
            SeriesKind::GAUGE,
            vec![Sample {
                ts: ts_ns,
                value: Value::Float(v),
            }],
        );
    }
    Ok(wb)
}

/// Scrapes every `interval` until the server stops being ready (shutdown has begun).
pub fn spawn(state: Arc<AppState>, interval: Duration, instance: String) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            if !state.ready.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let (st, inst) = (state.clone(), instance.clone());
            let res = tokio::task::spawn_blocking(move || {
                let text = super::metrics::render(&st);
                // Millisecond timestamps, as a Prometheus scrape would store.
                let ts = crate::store::now_ns() / 1_000_000 * 1_000_000;
                let limits = st.store.options().label_limits;
                let wb = scrape_batch(&text, ts, &inst, &limits)?;
                st.store.append(&wb).map(|_| ()).map_err(|e| e.to_string())
            })
            .await;
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "self-scrape failed"),
                Err(e) => tracing::warn!(error = %e, "self-scrape task failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_labels_escapes_and_special_values() {
        let text = "# HELP x help\n# TYPE x counter\nx 3\n\
                    y{a=\"1\",b=\"q\\\"uote\\\\ \\n\"} 2.5 1700000000000\n\
                    z{le=\"+Inf\"} +Inf\nw{} NaN\n\n";
        let got = parse_exposition(text).expect("parse");
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].0, vec![("__name__".to_string(), "x".to_string())]);
        assert_eq!(got[0].1, 3.0);
        assert_eq!(got[1].0[1], ("a".to_string(), "1".to_string()));
        assert_eq!(got[1].0[2], ("b".to_string(), "q\"uote\\ \n".to_string()));
        assert_eq!(got[1].1, 2.5);
        assert_eq!(got[2].1, f64::INFINITY);
        assert!(got[3].1.is_nan());
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        for bad in ["x", "x{a=\"1\" 3", "x{a=1} 3", "x abc", "x{a=\"unterminated} 1"] {
            let e = parse_exposition(&format!("# c\n{bad}\n")).expect_err(bad);
            assert_eq!(e.line, 2, "{bad}: {e}");
        }
    }

    #[test]
    fn scrape_batch_labels_each_series_with_job_and_instance() {
        let wb = scrape_batch(
            "a_total{topic=\"t\"} 7\nb 1\n",
            5_000_000,
            "127.0.0.1:9201",
            &LabelLimits::default(),
        )
        .expect("batch");
        assert_eq!(wb.series.len(), 2);
        let l = &wb.series[0].labels;
        assert_eq!(l.metric_name(), Some("a_total"));
        assert_eq!(l.get("topic"), Some("t"));
        assert_eq!(l.get("job"), Some("tally"));
        assert_eq!(l.get("instance"), Some("127.0.0.1:9201"));
    }

    proptest::proptest! {
        /// Whatever the input, the parser returns (never panics).
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = parse_exposition(&s);
        }

        /// Rendered label values round-trip through the escapes.
        #[test]
        fn label_values_round_trip(v in "\\PC{0,40}", x in -1e12f64..1e12) {
            let esc = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let got = parse_exposition(&format!("m{{k=\"{esc}\"}} {x}\n")).expect("parse");
            proptest::prop_assert_eq!(&got[0].0[1].1, &v);
            proptest::prop_assert_eq!(got[0].1, x);
        }
    }
}
