//! Side by side with a real Prometheus 2.42: identical generated data goes into both
//! (Prometheus via `promtool tsdb create-blocks-from openmetrics`, tally via the store
//! library + `tally serve`), then the differential corpus
//! (`src/query/promql/difftest/queries.txt`: every function family, aggregations,
//! binary matching, offsets, `@`, subqueries) runs through BOTH HTTP APIs as range
//! queries (3 windows/steps) and instant queries (6 times). Answers must agree: same
//! success/failure and errorType, same label sets and timestamps, values within 1e-6
//! relative.
//!
//! Needs `prometheus` and `promtool` (Debian's 2.42): `scripts/test.sh` installs them.
//! Without them this test FAILS (it never passes silently).

mod common;

use std::collections::HashMap;

use common::prometheus::{prometheus_tools, promtool_create_blocks, write_openmetrics, Prometheus};
use common::{http_get, json, load_store, urlencode, TallyServer};
use rand::{Rng, SeedableRng};
use serde_json::Value as Json;

const QUERIES: &str = include_str!("../src/query/promql/difftest/queries.txt");

use common::prometheus::Data;

fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    common::labels(pairs)
}

/// The differential data set (a Rust port of `difftest/gen.py`): counters with a gap
/// and a reset, gauges (one jittered, one ending early), classic histograms, info
/// series and a label value containing a newline. Timestamps in seconds.
fn generate(t0: i64) -> Data {
    const STEP: i64 = 15;
    let n = 4 * 3600 / STEP;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(42);
    let mut out: Data = Vec::new();
    for job in ["api", "web"] {
        for inst in ["0", "1", "2"] {
            let mut v = 0.0;
            let mut pts = Vec::new();
            for i in 0..n {
                if job == "api" && inst == "1" && (300..340).contains(&i) {
                    continue;
                }
                if job == "web" && inst == "2" && i == 500 {
                    v = 0.0;
                }
                v += f64::from(rng.gen_range(0..=20));
                pts.push((t0 + i * STEP, v));
            }
            out.push((l(&[("__name__", "req_total"), ("job", job), ("inst", inst)]), pts));
        }
    }
    for room in ["a", "b", "c"] {
        let end = if room == "c" { n - 240 } else { n };
        let mut pts = Vec::new();
        for i in 0..end {
            let jitter = if room == "b" {
                [0, 0, 0, 1, 2, 3][rng.gen_range(0..6)]
            } else {
                0
            };
            let v: f64 = rng.gen_range(-10.0..30.0);
            pts.push((t0 + i * STEP + jitter, (v * 1000.0).round() / 1000.0));
        }
        out.push((l(&[("__name__", "temp"), ("room", room)]), pts));
    }
    let les = ["0.1", "0.5", "1", "+Inf"];
    for svc in ["x", "y"] {
        let mut counts = [0.0f64; 4];
        let mut series: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 4];
        let lambda = if svc == "x" { 2.0 } else { 0.7 };
        for i in 0..n {
            for _ in 0..rng.gen_range(0..=10) {
                let u: f64 = rng.gen_range(f64::EPSILON..1.0);
                let obs = -u.ln() / lambda;
                for (k, le) in les.iter().enumerate() {
                    if *le == "+Inf" || obs <= le.parse::<f64>().unwrap_or(f64::INFINITY) {
                        counts[k] += 1.0;
                    }
                }
            }
            for k in 0..4 {
                series[k].push((t0 + i * STEP, counts[k]));
            }
        }
        for (k, pts) in series.into_iter().enumerate() {
            out.push((l(&[("__name__", "lat_bucket"), ("svc", svc), ("le", les[k])]), pts));
        }
    }
    for (job, team) in [("api", "core"), ("web", "front")] {
        let pts = (0..n).map(|i| (t0 + i * STEP, 1.0)).collect();
        out.push((l(&[("__name__", "info"), ("job", job), ("team", team)]), pts));
    }
    for (v, val) in [("a\nb", 1.0), ("a-b", 2.0)] {
        let pts = (0..n).map(|i| (t0 + i * STEP, val)).collect();
        out.push((l(&[("__name__", "nl"), ("v", v)]), pts));
    }
    out
}

fn almost_equal(a: f64, b: f64) -> bool {
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || diff < f64::MIN_POSITIVE {
        return diff < 1e-6 * f64::MIN_POSITIVE;
    }
    diff / (a.abs() + b.abs()) < 1e-6
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

type Norm = HashMap<String, Vec<(i64, f64)>>;

fn point(p: &Json) -> Option<(i64, f64)> {
    let t = p.get(0)?.as_f64()?;
    let v = parse_value(p.get(1)?.as_str()?)?;
    Some(((t * 1000.0).round() as i64, v))
}

fn metric_key(m: &Json) -> String {
    let mut v: Vec<(String, String)> = m
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    format!("{v:?}")
}

/// labels → points for any result type (a string result keys its text).
fn normalize(data: &Json) -> Norm {
    let mut m = Norm::new();
    let result = &data["result"];
    match data["resultType"].as_str() {
        Some("matrix") => {
            for s in result.as_array().into_iter().flatten() {
                let pts = s["values"].as_array().into_iter().flatten().filter_map(point).collect();
                m.insert(metric_key(&s["metric"]), pts);
            }
        }
        Some("vector") => {
            for s in result.as_array().into_iter().flatten() {
                m.insert(metric_key(&s["metric"]), point(&s["value"]).into_iter().collect());
            }
        }
        Some("scalar") => {
            m.insert(String::new(), point(result).into_iter().collect());
        }
        Some("string") => {
            m.insert(format!("string {}", result[1]), Vec::new());
        }
        _ => {}
    }
    m
}

fn diff(ours: &Norm, theirs: &Norm) -> Option<String> {
    for (k, tp) in theirs {
        let Some(op) = ours.get(k) else {
            return Some(format!("missing series {k}"));
        };
        if op.len() != tp.len() {
            return Some(format!(
                "{k}: {} points, want {}: ours {:?}.. theirs {:?}..",
                op.len(),
                tp.len(),
                &op[..op.len().min(3)],
                &tp[..tp.len().min(3)]
            ));
        }
        for (a, b) in op.iter().zip(tp) {
            if a.0 != b.0 || !almost_equal(a.1, b.1) {
                return Some(format!("{k}: point {a:?}, want {b:?}"));
            }
        }
    }
    ours.keys()
        .find(|k| !theirs.contains_key(*k))
        .map(|k| format!("extra series {k}"))
}

/// Compares one API call's answers; `None` when they agree.
fn compare(ours: &common::HttpResponse, theirs: &common::HttpResponse) -> Option<String> {
    let (Ok(o), Ok(t)) = (
        serde_json::from_str::<Json>(&ours.body),
        serde_json::from_str::<Json>(&theirs.body),
    ) else {
        return Some(format!(
            "unparsable answer: ours {:?} theirs {:?}",
            ours.body, theirs.body
        ));
    };
    if ours.status != theirs.status {
        return Some(format!(
            "HTTP {} vs Prometheus {}: ours {} theirs {}",
            ours.status, theirs.status, ours.body, theirs.body
        ));
    }
    match (o["status"].as_str(), t["status"].as_str()) {
        (Some("success"), Some("success")) => {
            if o["data"]["resultType"] != t["data"]["resultType"] {
                return Some(format!(
                    "resultType {} vs {}",
                    o["data"]["resultType"], t["data"]["resultType"]
                ));
            }
            diff(&normalize(&o["data"]), &normalize(&t["data"]))
        }
        (Some("error"), Some("error")) => (o["errorType"] != t["errorType"]).then(|| {
            format!(
                "errorType {} ({}) vs {} ({})",
                o["errorType"], o["error"], t["errorType"], t["error"]
            )
        }),
        _ => Some(format!("ours {} vs theirs {}", ours.body, theirs.body)),
    }
}

#[test]
fn promql_answers_match_prometheus_2_42_over_http() {
    let (prometheus, promtool) = prometheus_tools();
    let tmp = tempfile::tempdir().expect("tempdir");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let t0 = (now / 3600 - 5) * 3600;
    let end = t0 + 4 * 3600;
    let data = generate(t0);

    let om = tmp.path().join("data.om");
    write_openmetrics(&om, &data);
    let tsdb = tmp.path().join("prom-data");
    promtool_create_blocks(&promtool, &om, &tsdb, &[]);
    let prom = Prometheus::start(&prometheus, tmp.path(), &tsdb);

    let ns: Data = data
        .iter()
        .map(|(l, pts)| (l.clone(), pts.iter().map(|&(t, v)| (t * 1_000_000_000, v)).collect()))
        .collect();
    let tally_dir = tmp.path().join("tally-data");
    load_store(&tally_dir, &ns);
    let tally = TallyServer::start(&tally_dir, &[]);

    let queries: Vec<&str> = QUERIES.lines().map(str::trim).filter(|q| !q.is_empty()).collect();
    assert!(queries.len() >= 100, "corpus too small: {}", queries.len());
    let ranges = [
        (t0 + 1800, t0 + 3 * 3600 + 1234, 60),
        (t0 + 7000, end + 900, 47),
        (t0 - 1800, t0 + 4000, 600),
    ];
    let instants = [
        format!("{}", t0 + 3600),
        format!("{}", end - 5),
        format!("{}", end + 200),
        format!("{}.5", t0 + 7317),
        format!("{}", t0 - 10),
        format!("{t0}"),
    ];
    let (mut agree, mut differ, mut queries_ok) = (0usize, Vec::new(), 0usize);
    let (mut range_evals, mut instant_evals) = (0, 0);
    for q in &queries {
        let mut all_ok = true;
        let mut paths: Vec<String> = ranges
            .iter()
            .map(|(s, e, st)| format!("/api/v1/query_range?query={}&start={s}&end={e}&step={st}", urlencode(q)))
            .collect();
        paths.extend(
            instants
                .iter()
                .map(|t| format!("/api/v1/query?query={}&time={t}", urlencode(q))),
        );
        for (i, path) in paths.iter().enumerate() {
            let ours = http_get(&tally.addr, path).expect("query tally");
            let theirs = http_get(&prom.addr, path).expect("query prometheus");
            if i < ranges.len() {
                range_evals += 1;
            } else {
                instant_evals += 1;
            }
            match compare(&ours, &theirs) {
                None => agree += 1,
                Some(d) => {
                    all_ok = false;
                    differ.push(format!("{path}: {d}"));
                }
            }
        }
        queries_ok += usize::from(all_ok);
    }
    // Metadata endpoints Grafana's label browser uses: same answers as Prometheus.
    let meta = [
        format!("/api/v1/labels?start={t0}&end={end}"),
        format!("/api/v1/labels?match[]={}&start={t0}&end={end}", urlencode("temp")),
        format!("/api/v1/label/__name__/values?start={t0}&end={end}"),
        format!("/api/v1/label/job/values?start={t0}&end={end}"),
        format!(
            "/api/v1/label/le/values?match[]={}",
            urlencode(r#"lat_bucket{svc="x"}"#)
        ),
        "/api/v1/label/v/values?match[]=nl".to_string(),
        format!("/api/v1/series?match[]={}&start={t0}&end={end}", urlencode("temp")),
        format!(
            "/api/v1/series?match[]={}&match[]={}",
            urlencode(r#"req_total{job="api"}"#),
            urlencode(r#"{__name__=~"info|nl"}"#)
        ),
        "/api/v1/series?match[]=nonexistent".to_string(),
        "/api/v1/series".to_string(),
        "/api/v1/label/job/values?start=10&end=5".to_string(),
        "/api/v1/status/buildinfo".to_string(),
    ];
    let mut meta_ok = 0;
    for path in &meta {
        let ours = http_get(&tally.addr, path).expect("tally");
        let theirs = http_get(&prom.addr, path).expect("prometheus");
        let (o, t) = (json(&ours), json(&theirs));
        assert_eq!(
            ours.status, theirs.status,
            "{path}: ours {} theirs {}",
            ours.body, theirs.body
        );
        assert_eq!(o["status"], t["status"], "{path}");
        assert_eq!(
            o["errorType"], t["errorType"],
            "{path}: ours {} theirs {}",
            ours.body, theirs.body
        );
        if path.contains("buildinfo") {
            let v = |j: &Json| {
                j["data"]["version"]
                    .as_str()
                    .unwrap_or("")
                    .split('+')
                    .next()
                    .unwrap_or("")
                    .to_string()
            };
            assert_eq!(v(&o), v(&t), "buildinfo version");
        } else if o["status"] == "success" {
            let sorted = |j: &Json| {
                let mut v: Vec<String> = j["data"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| x.to_string())
                    .collect();
                v.sort();
                v
            };
            assert_eq!(sorted(&o), sorted(&t), "{path}");
        }
        meta_ok += 1;
    }
    println!("metadata endpoints: {meta_ok}/{} agree with Prometheus", meta.len());
    // Sanity: the comparison is not vacuous (Prometheus really has the data).
    let r = json(
        &http_get(
            &prom.addr,
            &format!("/api/v1/query?query=count(req_total)&time={}", t0 + 3600),
        )
        .expect("q"),
    );
    assert_eq!(
        r["data"]["result"][0]["value"][1], "6",
        "Prometheus did not load the data: {r}"
    );
    for d in differ.iter().take(40) {
        println!("DIFF {d}");
    }
    println!(
        "side-by-side vs Prometheus 2.42: {queries_ok}/{} queries agree on every evaluation; \
         {agree} of {} evaluations agree ({range_evals} range, {instant_evals} instant), {} differ",
        queries.len(),
        agree + differ.len(),
        differ.len()
    );
    assert!(differ.is_empty(), "{} evaluations differ from Prometheus", differ.len());
    assert_eq!(tally.terminate(), 0);
}
