//! Every Grafana dashboard in `dashboards/` works against tally: valid JSON in the
//! current schema, every target expression evaluates without error and returns data
//! (Grafana's template variables substituted as Grafana would) through the HTTP API,
//! and every variable query (`label_values(...)`) returns values. The cost dashboards run
//! over generated `cost` series with the cost labels (62 days hourly + the last 2 hours per
//! minute); the ingest-health dashboard runs over tally's real self-metrics, written by
//! `--self-scrape-interval` while a real broker feeds it generated events.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Evaluates dashboards through a running tally, collecting every problem.
#[derive(Default)]
struct Checker {
    problems: Vec<String>,
    exprs: usize,
    vars: usize,
    titles: Vec<String>,
    var_names: Vec<String>,
}

impl Checker {
    fn check(&mut self, addr: &str, path: &Path, now: i64) {
        let text = std::fs::read_to_string(path).expect("read dashboard");
        let d: Json = match serde_json::from_str(&text) {
            Ok(d) => d,
            Err(e) => {
                self.problems.push(format!("{}: invalid JSON: {e}", path.display()));
                return;
            }
        };
        self.problems.extend(check_static(path, &d));
        self.titles.push(d["title"].as_str().unwrap_or("").to_string());
        // Variables: label_values(...) queries return values.
        let mut tenant_value = None;
        for v in d["templating"]["list"].as_array().cloned().unwrap_or_default() {
            let name = v["name"].as_str().unwrap_or("").to_string();
            self.var_names.push(name.clone());
            let q = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap_or("");
            let q = substitute(q, ".*", ".*", "1m", 3600);
            let Some(inner) = q.strip_prefix("label_values(").and_then(|s| s.strip_suffix(')')) else {
                self.problems.push(format!(
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
            self.vars += 1;
            match ok(addr, &url) {
                Ok(vals) if vals.as_array().is_some_and(|a| !a.is_empty()) => {
                    if name == "tenant" {
                        tenant_value = vals[0].as_str().map(str::to_string);
                    }
                }
                Ok(vals) => self
                    .problems
                    .push(format!("{}: variable {name} ({q}): no values {vals}", path.display())),
                Err(e) => self
                    .problems
                    .push(format!("{}: variable {name} ({q}): {e}", path.display())),
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
                    self.exprs += 1;
                    // Range queries end on the last step at or before `end`, like Grafana's.
                    let url = if t["instant"] == true {
                        format!("/api/v1/query?query={}&time={end}", urlencode(&e))
                    } else {
                        format!(
                            "/api/v1/query_range?query={}&start={}&end={end}&step={step}",
                            urlencode(&e),
                            end - range_s
                        )
                    };
                    match ok(addr, &url) {
                        Ok(data) if data["result"].as_array().is_some_and(|a| !a.is_empty()) => {}
                        Ok(data) => self.problems.push(format!("{title}: `{e}` returned no data: {data}")),
                        Err(err) => self.problems.push(format!("{title}: `{e}`: {err}")),
                    }
                }
            }
        }
    }

    fn assert_clean(&self) {
        assert!(
            self.problems.is_empty(),
            "{} problems:\n{}",
            self.problems.len(),
            self.problems.join("\n")
        );
    }
}

const INGEST_HEALTH: &str = "tally-ingest-health.json";

#[test]
fn every_cost_dashboard_expression_and_variable_works_against_tally() {
    let files: Vec<PathBuf> = dashboard_files()
        .into_iter()
        .filter(|p| !p.ends_with(INGEST_HEALTH))
        .collect();
    assert!(files.len() >= 3, "expected the 3 cost dashboards, found {files:?}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let now = now_s() / 60 * 60;
    load_store(&dir, &generate(now));
    let srv = TallyServer::start(&dir, &[]);
    let mut c = Checker::default();
    for path in &files {
        c.check(&srv.addr, path, now);
    }
    println!(
        "dashboards: {} files, {} target evaluations, {} variable queries",
        files.len(),
        c.exprs,
        c.vars
    );
    for must in ["tenant", "cost_center"] {
        assert!(
            c.var_names.iter().any(|v| v == must),
            "no `{must}` variable in any dashboard"
        );
    }
    assert!(c.titles.iter().any(|t| t.contains("live")), "{:?}", c.titles);
    let live: Json =
        serde_json::from_str(&std::fs::read_to_string(dashboards_dir().join("tally-live-cost.json")).expect("read"))
            .expect("json");
    let refresh = live["refresh"].as_str().unwrap_or("");
    assert!(["1s", "5s", "10s"].contains(&refresh), "live refresh {refresh}");
    c.assert_clean();
    assert_eq!(srv.terminate(), 0);
}

/// The ingest-health dashboard over tally's own metrics: a real broker, `tally serve`
/// consuming generated events (with malformed ones, so rejections and dead letters
/// exist) and `--self-scrape-interval 1s` storing /metrics into tally itself. Every panel
/// must return data, and every metric the dashboard names must be one tally exposes.
#[test]
fn ingest_health_dashboard_works_over_real_self_metrics() {
    use common::kafka::{wait_stored, KafkaRig, Tally, TallyOpts};
    let topic = "cost.compute";
    let KafkaRig { broker, tmp, prices } = KafkaRig::start(topic, 2);
    let data = tmp.path().join("data");
    let t = Tally::start(
        &data,
        &TallyOpts {
            brokers: Some(&broker.addr),
            topics: &[topic],
            group: "tally",
            price_book: Some(&prices),
            extra: &["--self-scrape-interval", "1s"],
        },
    );
    let report = tally::ingest::generator::run(&tally::ingest::generator::GenConfig {
        brokers: broker.addr.clone(),
        topic: topic.into(),
        rate: 2000,
        count: 6_000,
        tenants: 3,
        malformed_share: 0.03,
        seed: 17,
        ..Default::default()
    })
    .expect("generator");
    assert_eq!(report.delivery_errors, 0);
    wait_stored(&[&t], topic, &report.end_offsets, Duration::from_secs(120));

    let path = dashboards_dir().join(INGEST_HEALTH);
    let text = std::fs::read_to_string(&path).expect("read dashboard");
    let exposed = t.metrics();
    let names: std::collections::BTreeSet<String> = exposed
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
        .collect();
    let d: Json = serde_json::from_str(&text).expect("json");
    for p in d["panels"].as_array().cloned().unwrap_or_default() {
        for tg in p["targets"].as_array().cloned().unwrap_or_default() {
            let e = tg["expr"].as_str().unwrap_or("");
            for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("tally_") {
                    assert!(
                        names.contains(word),
                        "{INGEST_HEALTH}: {word} is not in /metrics:\n{exposed}"
                    );
                }
            }
        }
    }
    // A few more scrapes after the last batch, so rates over the final window see it.
    let scrapes = |t: &Tally| -> usize {
        let q = urlencode("count_over_time(tally_ingest_batches_total{job=\"tally\"}[10m])");
        let (_, body) = t
            .http("GET", &format!("/api/v1/query?query={q}"), b"", &[])
            .unwrap_or_default();
        let j: Json = serde_json::from_str(&body).unwrap_or_default();
        j["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let before = scrapes(&t);
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while scrapes(&t) < before + 3 {
        assert!(std::time::Instant::now() < end, "self-scrape stored no new samples");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut c = Checker::default();
    c.check(&format!("127.0.0.1:{}", t.port), &path, now_s());
    assert!(c.exprs >= 10, "{} expressions", c.exprs);
    c.assert_clean();
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
