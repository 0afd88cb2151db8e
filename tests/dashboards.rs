//! Every Grafana dashboard in `dashboards/` works against tally: valid JSON in the
//! current schema, every target expression evaluates without error and returns data
//! (Grafana's template variables substituted as Grafana would) through the HTTP API,
//! and every variable query (`label_values(...)`) returns values. The data has `cost`
//! series with the cost labels (62 days hourly + the last 2 hours per minute) and the
//! ingest self-metrics as ordinary series.

mod common;

use std::path::{Path, PathBuf};

use common::{http_get, json, labels, load_store, urlencode, TallyServer};
use serde_json::Value as Json;

const NS: i64 = 1_000_000_000;

fn dashboards_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards"))
}

fn dashboard_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dashboards_dir())
        .expect("dashboards/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    v
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn generate(now: i64) -> Vec<(common::LabelPairs, common::Points)> {
    let mut out = Vec::new();
    let minute_start = (now - 2 * 3600) / 60 * 60;
    let hourly: Vec<i64> = ((now - 62 * 86_400) / 3600..minute_start / 3600)
        .map(|h| h * 3600)
        .collect();
    let minutes: Vec<i64> = (minute_start..=now).step_by(60).collect();
    let mut k = 0.0;
    for tenant in ["acme", "globex", "initech"] {
        for cc in ["cc-eng", "cc-ops"] {
            for (sku, metric) in [
                ("vm.small", "cpu_seconds"),
                ("disk.ssd", "gb_hours"),
                ("egress", "bytes"),
            ] {
                k += 1.0;
                let l = labels(&[
                    ("__name__", "cost"),
                    ("tenant", tenant),
                    ("cost_center", cc),
                    ("sku", sku),
                    ("currency", "USD"),
                    ("source_metric", metric),
                ]);
                let mut pts: Vec<(i64, f64)> = hourly.iter().map(|&t| (t * NS, k * 0.6)).collect();
                pts.extend(minutes.iter().map(|&t| (t * NS, k * 0.01)));
                out.push((l, pts));
            }
        }
    }
    // Ingest self-metrics, every 15 s over the last 2 hours.
    let ticks: Vec<i64> = ((now - 2 * 3600)..=now).step_by(15).collect();
    let counter = |rate: f64| -> Vec<(i64, f64)> {
        ticks
            .iter()
            .enumerate()
            .map(|(i, &t)| (t * NS, rate * 15.0 * i as f64))
            .collect()
    };
    for (result, rate) in [("accepted", 200.0), ("rejected", 3.0)] {
        out.push((
            labels(&[("__name__", "tally_ingest_events_total"), ("result", result)]),
            counter(rate),
        ));
    }
    for (reason, rate) in [("unknown_sku", 2.0), ("invalid_quantity", 1.0)] {
        out.push((
            labels(&[("__name__", "tally_ingest_rejected_total"), ("reason", reason)]),
            counter(rate),
        ));
    }
    out.push((labels(&[("__name__", "tally_dlq_writes_total")]), counter(3.0)));
    for p in ["0", "1", "2"] {
        let pts = ticks.iter().map(|&t| (t * NS, 10.0 + (t % 7) as f64)).collect();
        out.push((
            labels(&[("__name__", "tally_consumer_lag"), ("topic", "usage"), ("partition", p)]),
            pts,
        ));
    }
    for (le, frac) in [("0.1", 0.2), ("0.5", 0.7), ("1", 0.9), ("5", 0.99), ("+Inf", 1.0)] {
        out.push((
            labels(&[("__name__", "tally_ingest_freshness_seconds_bucket"), ("le", le)]),
            counter(200.0 * frac),
        ));
    }
    out
}

/// Dashboard time range in seconds (`now-1h`, `now-24h`, `now/M`, ...).
fn range_secs(from: &str, now: i64) -> i64 {
    match from {
        "now/M" => (now % (30 * 86_400)).max(86_400),
        "now/d" => (now % 86_400).max(3600),
        f => f
            .strip_prefix("now-")
            .and_then(|d| {
                let (n, unit) = d.split_at(d.len() - 1);
                let n: i64 = n.parse().ok()?;
                Some(
                    n * match unit {
                        "m" => 60,
                        "h" => 3600,
                        "d" => 86_400,
                        "w" => 7 * 86_400,
                        _ => return None,
                    },
                )
            })
            .unwrap_or(3600),
    }
}

/// Grafana's variable substitution for one evaluation.
fn substitute(expr: &str, tenant: &str, cc: &str, interval: &str, range_s: i64) -> String {
    expr.replace("${__range_s}", &range_s.to_string())
        .replace("$__range_s", &range_s.to_string())
        .replace("${__range}", &format!("{range_s}s"))
        .replace("$__range", &format!("{range_s}s"))
        .replace("$__rate_interval", "4m")
        .replace("${__interval}", interval)
        .replace("$__interval", interval)
        .replace("${tenant}", tenant)
        .replace("$tenant", tenant)
        .replace("${cost_center}", cc)
        .replace("$cost_center", cc)
}

fn ok(addr: &str, path: &str) -> Result<Json, String> {
    let r = http_get(addr, path).map_err(|e| e.to_string())?;
    let j: Json = serde_json::from_str(&r.body).map_err(|e| format!("{e}: {}", r.body))?;
    if r.status != 200 || j["status"] != "success" {
        return Err(format!("HTTP {}: {}", r.status, r.body));
    }
    Ok(j["data"].clone())
}

fn check_static(path: &Path, d: &Json) -> Vec<String> {
    let mut problems = Vec::new();
    let name = path.display();
    if d["schemaVersion"].as_i64().unwrap_or(0) < 39 {
        problems.push(format!("{name}: schemaVersion < 39"));
    }
    for k in ["uid", "title"] {
        if d[k].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{name}: missing {k}"));
        }
    }
    let panels = d["panels"].as_array().cloned().unwrap_or_default();
    if panels.is_empty() {
        problems.push(format!("{name}: no panels"));
    }
    let mut ids: Vec<i64> = panels.iter().filter_map(|p| p["id"].as_i64()).collect();
    ids.sort();
    ids.dedup();
    if ids.len() != panels.len() {
        problems.push(format!("{name}: panel ids missing or not unique"));
    }
    for p in &panels {
        if p["datasource"]["type"] != "prometheus" || p["gridPos"]["w"].as_i64().is_none() {
            problems.push(format!("{name}: panel {} lacks datasource/gridPos", p["title"]));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{name}: panel {} has no targets", p["title"]));
        }
        for t in targets {
            if t["refId"].as_str().is_none() || t["expr"].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{name}: panel {} target without refId/expr", p["title"]));
            }
        }
    }
    problems
}

#[test]
fn every_dashboard_expression_and_variable_works_against_tally() {
    let files = dashboard_files();
    assert!(files.len() >= 4, "expected the 4 dashboards, found {files:?}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let now = now_s() / 60 * 60;
    load_store(&dir, &generate(now));
    let srv = TallyServer::start(&dir, &[]);
    let mut problems: Vec<String> = Vec::new();
    let (mut exprs, mut vars) = (0, 0);
    let mut titles = Vec::new();
    let mut var_names = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read dashboard");
        let d: Json = match serde_json::from_str(&text) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("{}: invalid JSON: {e}", path.display()));
                continue;
            }
        };
        problems.extend(check_static(path, &d));
        titles.push(d["title"].as_str().unwrap_or("").to_string());
        // Variables: label_values(...) queries return values.
        let mut tenant_value = None;
        for v in d["templating"]["list"].as_array().cloned().unwrap_or_default() {
            let name = v["name"].as_str().unwrap_or("").to_string();
            var_names.push(name.clone());
            let q = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap_or("");
            let q = substitute(q, ".*", ".*", "1m", 3600);
            let Some(inner) = q.strip_prefix("label_values(").and_then(|s| s.strip_suffix(')')) else {
                problems.push(format!(
                    "{}: variable {name}: not a label_values() query: {q}",
                    path.display()
                ));
                continue;
            };
            let (sel, label) = match inner.rsplit_once(',') {
                Some((s, l)) => (Some(s.trim()), l.trim()),
                None => (None, inner.trim()),
            };
            let mut url = format!("/api/v1/label/{label}/values?start={}&end={now}", now - 3600);
            if let Some(s) = sel {
                url.push_str(&format!("&match[]={}", urlencode(s)));
            }
            vars += 1;
            match ok(&srv.addr, &url) {
                Ok(vals) if vals.as_array().is_some_and(|a| !a.is_empty()) => {
                    if name == "tenant" {
                        tenant_value = vals[0].as_str().map(str::to_string);
                    }
                }
                Ok(vals) => problems.push(format!("{}: variable {name} ({q}): no values {vals}", path.display())),
                Err(e) => problems.push(format!("{}: variable {name} ({q}): {e}", path.display())),
            }
        }
        let from = d["time"]["from"].as_str().unwrap_or("now-1h");
        for p in d["panels"].as_array().cloned().unwrap_or_default() {
            let title = p["title"].as_str().unwrap_or("").to_string();
            let (mut end, mut range_s) = (now, range_secs(from, now));
            if p["timeShift"].as_str().is_some() {
                // 1M/M: the previous entire month.
                end = now - range_s - 86_400;
                range_s = 30 * 86_400;
            }
            let interval = p["interval"].as_str().unwrap_or("1m");
            let step = (range_s / 250).max(60);
            for t in p["targets"].as_array().cloned().unwrap_or_default() {
                let raw = t["expr"].as_str().unwrap_or("");
                let tenants: Vec<String> = std::iter::once(".*".to_string()).chain(tenant_value.clone()).collect();
                for tenant in tenants {
                    let e = substitute(raw, &tenant, ".*", interval, range_s);
                    assert!(!e.contains('$'), "unsubstituted variable in {e}");
                    exprs += 1;
                    let url = if t["instant"] == true {
                        format!("/api/v1/query?query={}&time={end}", urlencode(&e))
                    } else {
                        format!(
                            "/api/v1/query_range?query={}&start={}&end={end}&step={step}",
                            urlencode(&e),
                            end - range_s
                        )
                    };
                    match ok(&srv.addr, &url) {
                        Ok(data) if data["result"].as_array().is_some_and(|a| !a.is_empty()) => {}
                        Ok(data) => problems.push(format!("{title}: `{e}` returned no data: {data}")),
                        Err(err) => problems.push(format!("{title}: `{e}`: {err}")),
                    }
                }
            }
        }
    }
    println!(
        "dashboards: {} files, {exprs} target evaluations, {vars} variable queries",
        files.len()
    );
    for must in ["tenant", "cost_center"] {
        assert!(
            var_names.iter().any(|v| v == must),
            "no `{must}` variable in any dashboard"
        );
    }
    assert!(titles.iter().any(|t| t.contains("live")), "{titles:?}");
    let live: Json =
        serde_json::from_str(&std::fs::read_to_string(dashboards_dir().join("tally-live-cost.json")).expect("read"))
            .expect("json");
    let refresh = live["refresh"].as_str().unwrap_or("");
    assert!(["1s", "5s", "10s"].contains(&refresh), "live refresh {refresh}");
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(srv.terminate(), 0);
}

#[test]
fn provisioning_points_a_prometheus_data_source_at_tally() {
    let ds =
        std::fs::read_to_string(dashboards_dir().join("provisioning/datasources/tally.yaml")).expect("datasource yaml");
    assert!(ds.contains("type: prometheus"));
    assert!(ds.contains("url: http://127.0.0.1:9201"));
    assert!(ds.contains("uid: tally"));
    assert!(ds.contains("# httpHeaderName1: X-Scope-OrgID"));
    let dash =
        std::fs::read_to_string(dashboards_dir().join("provisioning/dashboards/tally.yaml")).expect("dashboards yaml");
    assert!(dash.contains("type: file"));
    // Every panel uses the provisioned uid.
    for f in dashboard_files() {
        let d: Json = json(&common::HttpResponse {
            status: 200,
            body: std::fs::read_to_string(&f).expect("read"),
        });
        for p in d["panels"].as_array().cloned().unwrap_or_default() {
            assert_eq!(p["datasource"]["uid"], "tally", "{}: {}", f.display(), p["title"]);
        }
    }
}
