//! The calls Grafana's stock Prometheus data source makes, against a real `tally serve`:
//! health check (`1+1`), buildinfo, label browser (labels, label values with match[]),
//! series, query_range with step, POST form variants, Prometheus error shapes and HTTP
//! codes, and tenant isolation through `X-Scope-OrgID` on every endpoint.

mod common;

use common::{form, http_with_headers, json, labels, load_store, urlencode, HttpResponse, TallyServer};
use serde_json::Value as Json;

const TENANTS: [(&str, &[&str]); 2] = [
    ("acme", &["a-sku1", "a-sku2"]),
    ("globex", &["g-sku1", "g-sku2", "g-sku3"]),
];

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Cost series for two tenants (disjoint SKUs; globex also has a label acme lacks),
/// plus `up` without a tenant label (default tenant). Two hours at 60 s, ending now.
fn setup(extra: &[&str]) -> (tempfile::TempDir, TallyServer, i64) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let end = now_s() / 60 * 60;
    let start = end - 2 * 3600;
    let pts = |v: f64| -> Vec<(i64, f64)> { (start..=end).step_by(60).map(|t| (t * 1_000_000_000, v)).collect() };
    let mut series = Vec::new();
    for (tenant, skus) in TENANTS {
        for (i, sku) in skus.iter().enumerate() {
            let mut l = labels(&[
                ("__name__", "cost"),
                ("tenant", tenant),
                ("cost_center", "cc-1"),
                ("sku", sku),
                ("currency", "USD"),
            ]);
            if tenant == "globex" {
                l.push(("globex_only".into(), "yes".into()));
            }
            series.push((l, pts(1.0 + i as f64)));
        }
    }
    series.push((labels(&[("__name__", "up"), ("job", "tally")]), pts(1.0)));
    load_store(&dir, &series);
    let srv = TallyServer::start(&dir, extra);
    (tmp, srv, end)
}

fn get(srv: &TallyServer, path: &str, tenant: Option<&str>) -> HttpResponse {
    let h: Vec<(&str, &str)> = tenant.map(|t| ("X-Scope-OrgID", t)).into_iter().collect();
    http_with_headers("GET", &srv.addr, path, &h, None).expect("GET")
}

fn post(srv: &TallyServer, path: &str, body: &str, tenant: Option<&str>) -> HttpResponse {
    let h: Vec<(&str, &str)> = tenant.map(|t| ("X-Scope-OrgID", t)).into_iter().collect();
    http_with_headers(
        "POST",
        &srv.addr,
        path,
        &h,
        Some(("application/x-www-form-urlencoded", body.as_bytes())),
    )
    .expect("POST")
}

fn ok_data(r: &HttpResponse) -> Json {
    assert_eq!(r.status, 200, "body: {}", r.body);
    let j = json(r);
    assert_eq!(j["status"], "success", "body: {}", r.body);
    j["data"].clone()
}

fn strings(v: &Json) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_string())
        .collect()
}

fn assert_error(r: &HttpResponse, status: u16, error_type: &str) -> String {
    assert_eq!(r.status, status, "body: {}", r.body);
    let j = json(r);
    assert_eq!(j["status"], "error", "body: {}", r.body);
    assert_eq!(j["errorType"], error_type, "body: {}", r.body);
    let msg = j["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error text: {}", r.body));
    assert!(!msg.is_empty());
    msg.to_string()
}

#[test]
fn grafana_health_check_buildinfo_and_status_endpoints() {
    let (_tmp, srv, _) = setup(&[]);
    // Health check: instant query 1+1, GET and POST.
    for r in [
        get(&srv, "/api/v1/query?query=1%2B1", None),
        post(&srv, "/api/v1/query", &form(&[("query", "1+1")]), None),
    ] {
        let d = ok_data(&r);
        assert_eq!(d["resultType"], "scalar");
        assert_eq!(d["result"][1], "2");
        assert!(d["result"][0].is_number());
    }
    let d = ok_data(&get(&srv, "/api/v1/query?query=1%2B1&time=1700000000.5", None));
    assert_eq!(d["result"][0].as_f64(), Some(1_700_000_000.5));
    let d = ok_data(&get(&srv, "/api/v1/query?query=1%2B1&time=2023-11-14T22:13:20Z", None));
    assert_eq!(d["result"][0].as_f64(), Some(1_700_000_000.0));
    // Special values are strings, as in Prometheus.
    let d = ok_data(&get(
        &srv,
        &format!("/api/v1/query?query={}", urlencode("vector(1)/0")),
        None,
    ));
    assert_eq!(d["result"][0]["value"][1], "+Inf");
    let d = ok_data(&get(&srv, &format!("/api/v1/query?query={}", urlencode("0/0")), None));
    assert_eq!(d["result"][1], "NaN");

    let d = ok_data(&get(&srv, "/api/v1/status/buildinfo", None));
    assert!(d["version"].as_str().is_some_and(|v| v.starts_with("2.42")), "{d}");
    assert!(
        d["features"].is_null(),
        "a features map would make Grafana think this is Mimir"
    );
    let d = ok_data(&get(&srv, "/api/v1/status/flags", None));
    assert_eq!(d["query.lookback-delta"], "300s");
    assert_eq!(
        ok_data(&get(&srv, "/api/v1/rules", None))["groups"],
        serde_json::json!([])
    );
    assert_eq!(
        ok_data(&get(&srv, "/api/v1/alerts", None))["alerts"],
        serde_json::json!([])
    );
    assert_eq!(ok_data(&get(&srv, "/api/v1/metadata", None)), serde_json::json!({}));
    let d = ok_data(&get(&srv, "/api/v1/query_exemplars?query=cost&start=0&end=10", None));
    assert_eq!(d, serde_json::json!([]));
    assert_eq!(srv.terminate(), 0);
}

#[test]
fn grafana_label_browser_series_and_range_queries() {
    let (_tmp, srv, end) = setup(&[]);
    let (start, end_s) = ((end - 3600).to_string(), end.to_string());
    // Labels, GET and POST with a time range.
    for r in [
        get(&srv, &format!("/api/v1/labels?start={start}&end={end_s}"), None),
        post(
            &srv,
            "/api/v1/labels",
            &form(&[("start", &start), ("end", &end_s)]),
            None,
        ),
    ] {
        let names = strings(&ok_data(&r));
        for want in ["__name__", "cost_center", "job", "sku", "tenant"] {
            assert!(names.contains(&want.to_string()), "{names:?}");
        }
    }
    let names = strings(&ok_data(&get(
        &srv,
        &format!("/api/v1/labels?match[]={}", urlencode("up")),
        None,
    )));
    assert_eq!(names, ["__name__", "job"]);
    // Label values: metric names, then values restricted by match[] and time range.
    let v = strings(&ok_data(&get(&srv, "/api/v1/label/__name__/values", None)));
    assert_eq!(v, ["cost", "up"]);
    let v = strings(&ok_data(&get(
        &srv,
        &format!(
            "/api/v1/label/sku/values?match[]={}&start={start}&end={end_s}",
            urlencode(r#"cost{tenant="acme"}"#)
        ),
        None,
    )));
    assert_eq!(v, ["a-sku1", "a-sku2"]);
    let v = strings(&ok_data(&get(&srv, "/api/v1/label/sku/values?limit=2", None)));
    assert_eq!(v.len(), 2);
    // Data is in the past two hours: a window in 2001 has no values.
    let v = strings(&ok_data(&get(
        &srv,
        "/api/v1/label/sku/values?start=1000000000&end=1000003600",
        None,
    )));
    assert!(v.is_empty());
    // Series, GET with two match[] and POST.
    let q = format!(
        "/api/v1/series?match[]={}&match[]={}&start={start}&end={end_s}",
        urlencode(r#"cost{sku="g-sku1"}"#),
        urlencode("up")
    );
    let s = ok_data(&get(&srv, &q, None));
    let s = s.as_array().cloned().unwrap_or_default();
    assert_eq!(s.len(), 2, "{s:?}");
    assert!(s.iter().any(|m| m["__name__"] == "up" && m["job"] == "tally"));
    let s = ok_data(&post(
        &srv,
        "/api/v1/series",
        &form(&[("match[]", "cost"), ("start", &start), ("end", &end_s)]),
        None,
    ));
    assert_eq!(s.as_array().map(Vec::len), Some(5));
    // query_range: step as float seconds and as a duration, GET and POST.
    let rq = form(&[
        ("query", "sum by (tenant) (cost)"),
        ("start", &start),
        ("end", &end_s),
        ("step", "60"),
    ]);
    for r in [
        get(&srv, &format!("/api/v1/query_range?{rq}"), None),
        get(
            &srv,
            &format!("/api/v1/query_range?{}", rq.replace("step=60", "step=1m")),
            None,
        ),
        post(&srv, "/api/v1/query_range", &rq, None),
    ] {
        let d = ok_data(&r);
        assert_eq!(d["resultType"], "matrix");
        let res = d["result"].as_array().cloned().unwrap_or_default();
        assert_eq!(res.len(), 2);
        assert_eq!(res[0]["metric"], serde_json::json!({"tenant": "acme"}));
        let vals = res[0]["values"].as_array().cloned().unwrap_or_default();
        assert_eq!(vals.len(), 61);
        assert_eq!(vals[0][1], "3");
        assert_eq!(res[1]["values"][0][1], "6");
    }
    assert_eq!(srv.terminate(), 0);
}

#[test]
fn prometheus_error_shapes_and_query_limits() {
    let (_tmp, srv, end) = setup(&["--query-max-samples", "50"]);
    let msg = assert_error(&get(&srv, "/api/v1/query?query=sum(", None), 400, "bad_data");
    assert!(msg.starts_with("invalid parameter \"query\""), "{msg}");
    assert_error(&post(&srv, "/api/v1/query", "query=rate(cost)", None), 400, "bad_data");
    let msg = assert_error(
        &get(&srv, "/api/v1/query?query=1&time=yesterday", None),
        400,
        "bad_data",
    );
    assert!(msg.contains("invalid parameter \"time\""), "{msg}");
    let msg = assert_error(
        &get(&srv, "/api/v1/query_range?query=1&start=10&end=5&step=1", None),
        400,
        "bad_data",
    );
    assert_eq!(msg, "end timestamp must not be before start time");
    assert_error(
        &get(&srv, "/api/v1/query_range?query=1&start=0&end=5&step=0", None),
        400,
        "bad_data",
    );
    assert_error(
        &get(&srv, "/api/v1/query_range?query=1&start=0&end=5", None),
        400,
        "bad_data",
    );
    assert_error(
        &get(&srv, "/api/v1/query_range?query=1&start=0&end=100000&step=1", None),
        400,
        "bad_data",
    );
    let msg = assert_error(&get(&srv, "/api/v1/series", None), 400, "bad_data");
    assert_eq!(msg, "no match[] parameter provided");
    assert_error(&get(&srv, "/api/v1/series?match[]=sum(cost)", None), 400, "bad_data");
    assert_error(&get(&srv, "/api/v1/label/a-b/values", None), 400, "bad_data");
    assert_error(&get(&srv, "/api/v1/labels?limit=-1", None), 400, "bad_data");
    // Execution errors: 422.
    let msg = assert_error(
        &get(
            &srv,
            &format!("/api/v1/query?query={}", urlencode("cost * on() cost")),
            None,
        ),
        422,
        "execution",
    );
    assert!(!msg.is_empty());
    // Max samples (50) from the serve flag: 5 series x 61 points is too many.
    let msg = assert_error(
        &get(
            &srv,
            &format!("/api/v1/query_range?query=cost&start={}&end={end}&step=60", end - 3600),
            None,
        ),
        422,
        "execution",
    );
    assert!(msg.contains("too many samples"), "{msg}");
    // Timeout: 503.
    assert_error(
        &get(&srv, "/api/v1/query?query=cost&timeout=0.0000001", None),
        503,
        "timeout",
    );
    // Empty tenant header.
    assert_error(&get(&srv, "/api/v1/query?query=cost", Some(" ")), 400, "bad_data");
    assert_eq!(srv.terminate(), 0);
}

#[test]
fn tenant_header_isolates_every_endpoint() {
    let (_tmp, srv, end) = setup(&[]);
    let range = format!("start={}&end={end}", end - 3600);
    for (tenant, skus) in TENANTS {
        let t = Some(tenant);
        let check_metric = |m: &Json| {
            assert_eq!(m["tenant"], tenant, "{tenant} saw {m}");
        };
        // Instant query, GET and POST.
        let everything = urlencode(r#"{__name__=~".+"}"#);
        for r in [
            get(&srv, &format!("/api/v1/query?query={everything}"), t),
            post(&srv, "/api/v1/query", &form(&[("query", r#"{__name__=~".+"}"#)]), t),
        ] {
            let d = ok_data(&r);
            let res = d["result"].as_array().cloned().unwrap_or_default();
            assert_eq!(res.len(), skus.len());
            res.iter().for_each(|s| check_metric(&s["metric"]));
        }
        let d = ok_data(&get(
            &srv,
            &format!("/api/v1/query?query={}", urlencode("count(cost)")),
            t,
        ));
        assert_eq!(d["result"][0]["value"][1], skus.len().to_string());
        // Range query.
        let d = ok_data(&get(
            &srv,
            &format!(
                "/api/v1/query_range?query={}&{range}&step=300",
                urlencode("sum by (tenant, sku) (cost)")
            ),
            t,
        ));
        let res = d["result"].as_array().cloned().unwrap_or_default();
        assert_eq!(res.len(), skus.len());
        res.iter().for_each(|s| check_metric(&s["metric"]));
        // Series.
        let d = ok_data(&get(&srv, &format!("/api/v1/series?match[]={everything}&{range}"), t));
        let res = d.as_array().cloned().unwrap_or_default();
        assert_eq!(res.len(), skus.len());
        res.iter().for_each(check_metric);
        let d = ok_data(&post(&srv, "/api/v1/series", &form(&[("match[]", "up")]), t));
        assert_eq!(d, serde_json::json!([]), "{tenant} saw the default tenant's series");
        // Labels.
        let names = strings(&ok_data(&get(&srv, "/api/v1/labels", t)));
        assert_eq!(
            names.contains(&"globex_only".to_string()),
            tenant == "globex",
            "{names:?}"
        );
        assert!(!names.contains(&"job".to_string()), "{names:?}");
        let names = strings(&ok_data(&post(&srv, "/api/v1/labels", "", t)));
        assert!(!names.contains(&"job".to_string()), "{names:?}");
        // Label values, with and without match[].
        let v = strings(&ok_data(&get(&srv, "/api/v1/label/tenant/values", t)));
        assert_eq!(v, [tenant]);
        let v = strings(&ok_data(&get(&srv, "/api/v1/label/sku/values", t)));
        assert_eq!(v, skus);
        let v = strings(&ok_data(&get(
            &srv,
            &format!("/api/v1/label/sku/values?match[]={}", urlencode("cost")),
            t,
        )));
        assert_eq!(v, skus);
        let v = strings(&ok_data(&get(&srv, "/api/v1/label/__name__/values", t)));
        assert_eq!(v, ["cost"]);
    }
    // An unknown tenant sees nothing; no header sees everything.
    let d = ok_data(&get(&srv, "/api/v1/query?query=cost", Some("nobody")));
    assert_eq!(d["result"], serde_json::json!([]));
    assert_eq!(
        strings(&ok_data(&get(&srv, "/api/v1/label/sku/values", Some("nobody")))).len(),
        0
    );
    let v = strings(&ok_data(&get(&srv, "/api/v1/label/tenant/values", None)));
    assert_eq!(v, ["acme", "globex"]);
    assert_eq!(srv.terminate(), 0);
}
