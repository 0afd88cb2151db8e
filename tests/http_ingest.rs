//! HTTP ingest paths against a real `tally serve`: NDJSON push (validation, pricing,
//! dedup that survives SIGKILL) and Prometheus remote-write.

mod common;

use common::kafka::*;
use common::urlencode;
use tally::ingest::remote_write::{encode_write_request, TimeSeries};
use tally::store::now_ns;

fn event(id: &str, tenant: &str, sku: &str, value: &str, extra: &str) -> String {
    format!(
        "{{\"event_id\":\"{id}\",\"ts\":{},\"tenant\":\"{tenant}\",\"metric\":\"compute_instance_hours\",\"value\":{value},\
\"unit\":\"hour\",\"sku\":\"{sku}\"{extra},\"labels\":{{\"region\":\"eu-west-1\",\"cost_center\":\"cc-1\"}}}}",
        now_ns() - 60_000_000_000
    )
}

/// A server without Kafka: only the HTTP ingest paths.
fn http_only(price_book: Option<&std::path::Path>) -> TallyOpts<'_> {
    TallyOpts {
        brokers: None,
        topics: &[],
        group: "",
        price_book,
        extra: &[],
    }
}

fn post_ndjson(t: &Tally, body: &str) -> serde_json::Value {
    let (status, resp) = t
        .http("POST", "/api/v1/ingest", body.as_bytes(), &[])
        .expect("POST /api/v1/ingest");
    assert_eq!(status, 200, "{resp}");
    serde_json::from_str(&resp).expect("json response")
}

#[test]
fn http_ndjson_push_validates_prices_and_dedups_across_crash() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let prices = write_price_book(tmp.path());
    let data = tmp.path().join("data");
    let opts = http_only(Some(&prices));
    let mut t = Tally::start(&data, &opts);
    let body = [
        event("e1", "acme", "compute.m5.large", "2.5", ""), // 2.5 h × 0.096 = 0.24
        "{\"event_id\":\"bad\"".to_string(),
        event(
            "e2",
            "acme",
            "compute.m5.large",
            "1",
            ",\"cost\":\"1.10\",\"currency\":\"USD\"",
        ),
        event("e3", "globex", "unknown.sku", "3", ""), // unpriced
        event(
            "e4",
            "globex",
            "compute.m5.large",
            "1",
            ",\"cost\":\"1\",\"currency\":\"XYZ\"",
        ),
        String::new(),
        event("e5", "globex", "compute.r6g.xlarge", "0.5", ""), // 0.5 × 0.2016 = 0.1008
    ]
    .join("\n");
    let r = post_ndjson(&t, &body);
    assert_eq!(r["accepted"], 4, "{r}");
    assert_eq!(r["unpriced"], 1, "{r}");
    let rejected = r["rejected"].as_array().expect("rejected list");
    let got: Vec<(u64, &str)> = rejected
        .iter()
        .map(|x| (x["line"].as_u64().unwrap_or(0), x["code"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(got, vec![(2, "invalid_json"), (5, "unknown_currency")]);
    assert!(rejected.iter().all(|x| !x["reason"].as_str().unwrap_or("").is_empty()));

    // A re-sent request is de-duplicated, also after a crash (dedup state is on disk).
    let again = post_ndjson(&t, &body);
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(4)),
        "{again}"
    );
    t.kill9();
    let mut t = Tally::start(&data, &opts);
    let after_crash = post_ndjson(&t, &body);
    assert_eq!(
        (after_crash["accepted"].as_u64(), after_crash["duplicates"].as_u64()),
        (Some(0), Some(4))
    );
    let m = t.metrics();
    assert!(m.contains("tally_ingest_dedup_hits_total 4"), "{m}");
    t.stop();

    let (totals, _) = store_totals(&data);
    let acme = totals["acme"];
    assert_eq!(acme.cost_nanos, 1_340_000_000, "0.24 + 1.10");
    assert_eq!((acme.usage_samples, acme.usage_thousandths), (2, 3_500));
    let globex = totals["globex"];
    assert_eq!(globex.cost_nanos, 100_800_000, "0.5 × 0.2016");
    assert_eq!((globex.usage_samples, globex.cost_samples), (2, 1));
}

#[test]
fn http_remote_write_stores_gauges_per_tenant() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let opts = http_only(None);
    let mut t = Tally::start(&data, &opts);
    let now_ms = now_ns() / 1_000_000;
    let series = vec![
        TimeSeries {
            labels: vec![
                ("__name__".into(), "node_cpu_seconds".into()),
                ("instance".into(), "a".into()),
            ],
            samples: vec![(now_ms - 30_000, 1.0), (now_ms - 15_000, 2.0), (now_ms, 4.0)],
        },
        TimeSeries {
            labels: vec![("__name__".into(), "up".into()), ("tenant".into(), "ignored".into())],
            samples: vec![(now_ms, 1.0)],
        },
    ];
    let body = snap::raw::Encoder::new()
        .compress_vec(&encode_write_request(&series))
        .expect("snappy");
    let hdrs = [
        ("Content-Encoding", "snappy"),
        ("Content-Type", "application/x-protobuf"),
        ("X-Scope-OrgID", "team-a"),
    ];
    let (status, resp) = t
        .http("POST", "/api/v1/write", &body, &hdrs)
        .expect("POST /api/v1/write");
    assert_eq!(status, 204, "{resp}");
    // A `tenant` label is used when no header is given.
    let s2 = vec![TimeSeries {
        labels: vec![("__name__".into(), "up".into()), ("tenant".into(), "team-b".into())],
        samples: vec![(now_ms, 1.0)],
    }];
    let body2 = snap::raw::Encoder::new()
        .compress_vec(&encode_write_request(&s2))
        .expect("snappy");
    assert_eq!(t.http("POST", "/api/v1/write", &body2, &[]).map(|r| r.0), Some(204));
    // Garbage is a 400, not a crash.
    let (status, _) = t.http("POST", "/api/v1/write", b"not snappy", &[]).expect("POST");
    assert_eq!(status, 400);
    t.stop();
    let (totals, _) = store_totals(&data);
    assert_eq!(totals["team-a"].usage_samples, 4);
    assert_eq!(totals["team-b"].usage_samples, 1);
    assert!(!totals.contains_key("ignored"));
}

/// A refreshing Grafana panel against a live server: the range-query result cache
/// answers repeats from memory, and events pushed afterwards — at the present and
/// late, inside the cached range — show up exactly as a full evaluation shows them.
#[test]
fn range_query_cache_sees_pushed_and_late_events() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let opts = http_only(None);
    let t = Tally::start(&tmp.path().join("data"), &opts);
    let now_s = now_ns() / 1_000_000_000 / 15 * 15;
    let push = |id: &str, ts_s: i64, value: u32| {
        let line = format!(
            "{{\"event_id\":\"{id}\",\"ts\":{},\"tenant\":\"acme\",\"metric\":\"db_vcpu_seconds\",\"value\":{value}}}",
            ts_s * 1_000_000_000
        );
        let r = post_ndjson(&t, &line);
        assert_eq!(r["accepted"], 1, "{r}");
    };
    for m in 0..20 {
        push(&format!("m{m}"), now_s - 1800 + m * 60, 1);
    }
    let query = |nocache: bool| -> serde_json::Value {
        let q = "sum(sum_over_time(db_vcpu_seconds[1m]))";
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={now_s}&step=15{}",
            urlencode(q),
            now_s - 1800,
            if nocache { "&nocache=1" } else { "" }
        );
        let (status, body) = t.http("GET", &path, b"", &[]).expect("query_range");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        v["data"]["result"].clone()
    };
    let metric = |result: &str| -> u64 {
        let (_, body) = t.http("GET", "/metrics", b"", &[]).expect("metrics");
        let key = format!("tally_query_cache_requests_total{{result=\"{result}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /metrics"))
    };
    let first = query(false);
    assert_eq!(first, query(true));
    assert_eq!(query(false), first);
    assert_eq!(metric("hit"), 1, "the repeat is answered from the cache");
    assert_eq!(metric("miss"), 1);

    // New data at the present, and a late event 25 minutes back inside the cached range.
    push("now", now_s - 5, 7);
    push("late", now_s - 1500, 100);
    let after = query(false);
    assert_ne!(after, first, "pushed events must be visible");
    assert_eq!(after, query(true), "cached answer differs from a full evaluation");
    assert_eq!(metric("partial") + metric("miss"), 2);
}
