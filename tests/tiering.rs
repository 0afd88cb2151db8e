//! Object-storage tiering against a real S3-protocol server (s3s-fs): data is tiered and
//! evicted locally with identical PromQL/SQL answers; the server dying mid-upload never
//! corrupts the manifest and uploads resume; `rebuild` restores a lost directory;
//! retention deletes objects; queries of tiered data fail clearly while the store is down.

mod common;

use std::path::Path;
use std::time::Duration;

use common::costgen::{generate, GenSpec};
use common::s3::S3Server;
use tally::query::promql::{range_query, EngineOptions};
use tally::query::sql::{execute, QueryOptions};
use tally::store::{now_ns, SeriesSource, Store, StoreOptions};
use tally::tier::TierOptions;

const DAY: i64 = 86_400_000_000_000;
const HOUR: i64 = 3_600_000_000_000;
const BUCKET: &str = "tally-bucket";

fn day_floor(t: i64) -> i64 {
    t.div_euclid(DAY) * DAY
}

/// Ten days ago, at midnight: three sealed days of history to tier.
fn history_start() -> i64 {
    day_floor(now_ns()) - 10 * DAY
}

/// A SQL timestamp literal for UTC nanoseconds.
fn sql_ts(ns: i64) -> String {
    let t = chrono::DateTime::from_timestamp_nanos(ns);
    format!("TIMESTAMP '{}'", t.format("%Y-%m-%dT%H:%M:%SZ"))
}

fn tier_opts(s3: &S3Server) -> TierOptions {
    let mut t = TierOptions::new(format!("s3://{BUCKET}/node-a"));
    t.config = s3.config();
    t.request_timeout = Duration::from_secs(3);
    // Small pages so queries exercise multi-page reads and the cache.
    t.page_bytes = 64 << 10;
    t
}

fn opts(tier: Option<TierOptions>) -> StoreOptions {
    StoreOptions {
        background: false,
        tier,
        ..StoreOptions::default()
    }
}

/// History (3 days of 5-minute cost + usage samples) plus one recent hour.
fn load(store: &Store) {
    let spec = GenSpec {
        series: 60,
        samples_per_series: 3 * 288,
        start: history_start(),
        step: 300_000_000_000,
        seed: 7,
        tenants: 4,
        usage: true,
    };
    generate(store, &spec, false);
    let recent = GenSpec {
        series: 10,
        samples_per_series: 12,
        start: now_ns() - HOUR,
        seed: 8,
        ..spec
    };
    generate(store, &recent, false);
    store.flush().unwrap();
    store.compact_all().unwrap();
}

const SQL: &[&str] = &[
    "SELECT tenant, sum(cost), count(*) FROM costs GROUP BY tenant ORDER BY tenant",
    "SELECT date_trunc('day', ts) AS d, sku, sum(cost) FROM costs GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT count(*), sum(value) FROM samples WHERE metric = 'cpu_hours'",
];

const PROMQL: &[&str] = &[
    "sum by (tenant) (sum_over_time(cost[1h]))",
    "sum by (sku) (rate(cpu_hours[15m]))",
    "topk(3, sum by (instance) (sum_over_time(cost[6h])))",
];

/// Every answer over the history window, rendered for exact comparison.
fn answers(src: &dyn SeriesSource) -> Vec<String> {
    let mut out = Vec::new();
    let q = QueryOptions {
        now_ns: now_ns(),
        ..QueryOptions::default()
    };
    for sql in SQL {
        let r = execute(src, sql, &q).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert!(!r.rows.is_empty(), "{sql} returned nothing");
        out.push(format!("{sql} => {}", r.to_json()));
    }
    let start_ms = history_start() / 1_000_000;
    let end_ms = start_ms + 3 * DAY / 1_000_000;
    for pq in PROMQL {
        let v = range_query(src, None, pq, start_ms, end_ms, 3_600_000, &EngineOptions::default())
            .unwrap_or_else(|e| panic!("{pq}: {e}"));
        let text = format!("{v:?}");
        assert!(text.len() > 100, "{pq} returned almost nothing: {text}");
        out.push(format!("{pq} => {text}"));
    }
    out
}

fn files_with_suffix(dir: &Path, suffix: &str) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn tiered_partitions_answer_identically_and_survive_restart() {
    let s3 = S3Server::start(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let store = Store::open(dir.path(), opts(Some(tier_opts(&s3)))).unwrap();
        load(&store);
        let before = answers(&store.snapshot());
        let local_segments = files_with_suffix(dir.path(), ".seg");
        assert!(local_segments >= 4, "history + recent partitions: {local_segments}");
        let tiered = store.tier().unwrap();
        assert_eq!(
            tiered, 3,
            "the three sealed history days are tiered, the recent one is not"
        );
        // Evicted: only the recent partition keeps a full segment locally.
        assert_eq!(files_with_suffix(dir.path(), ".seg"), local_segments - 3);
        assert_eq!(files_with_suffix(dir.path(), ".stub"), 3);
        let objects = s3.objects(BUCKET);
        assert_eq!(
            objects
                .iter()
                .filter(|o| o.starts_with("node-a/segments/") && o.ends_with(".seg"))
                .count(),
            3,
            "{objects:?}"
        );
        assert!(objects.contains(&"node-a/MANIFEST".to_string()), "{objects:?}");
        let after = answers(&store.snapshot());
        assert_eq!(before, after, "answers changed by tiering");
        let t = store.object_tier().unwrap();
        assert!(t.metrics.bytes_fetched.get() > 0, "queries read tiered bytes");
        assert!(t.metrics.bytes_tiered.get() > 0);
        // A second run of the same queries is served from the page cache.
        let fetched = t.metrics.bytes_fetched.get();
        assert_eq!(answers(&store.snapshot()), before);
        assert_eq!(t.metrics.bytes_fetched.get(), fetched, "warm cache fetched again");
        store.close().unwrap();
        before
    };
    // Reopen with a cold cache: same answers, read from the bucket.
    let store = Store::open(dir.path(), opts(Some(tier_opts(&s3)))).unwrap();
    assert_eq!(answers(&store.snapshot()), before);
    assert_eq!(store.tier().unwrap(), 0, "nothing left to tier");
    store.close().unwrap();
    drop(store);

    // Without --object-store the tiered partitions are reported, not silently empty.
    let store = Store::open(dir.path(), opts(None)).unwrap();
    let err = execute(&store.snapshot(), SQL[0], &QueryOptions::default()).unwrap_err();
    assert!(err.to_string().contains("object store"), "{err}");
}

#[test]
fn outage_keeps_local_data_fails_tiered_queries_clearly_and_uploads_resume() {
    let mut s3 = S3Server::start(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(Some(tier_opts(&s3)))).unwrap();
    load(&store);
    let before = answers(&store.snapshot());
    let segs_before = files_with_suffix(dir.path(), ".seg");

    // The server hangs with the first segment upload in flight, then dies.
    s3.pause();
    std::thread::scope(|sc| {
        let h = sc.spawn(|| store.tier());
        std::thread::sleep(Duration::from_millis(800));
        s3.stop();
        let err = h.join().unwrap().expect_err("upload cannot succeed");
        assert!(err.to_string().contains("object store"), "{err}");
    });
    // No partial upload is referenced: everything is still local and answers are unchanged.
    assert_eq!(files_with_suffix(dir.path(), ".stub"), 0);
    assert_eq!(files_with_suffix(dir.path(), ".seg"), segs_before);
    assert_eq!(
        answers(&store.snapshot()),
        before,
        "nothing lost while the store is down"
    );
    store.close().unwrap();
    drop(store);

    // tally restarts while the object store is still down: the manifest opens fine.
    let store = Store::open(dir.path(), opts(Some(tier_opts(&s3)))).unwrap();
    assert_eq!(answers(&store.snapshot()), before);
    // The object store comes back: the pending uploads resume and complete.
    s3.restart();
    assert_eq!(store.tier().unwrap(), 3, "resumed uploads tier every due partition");
    assert_eq!(files_with_suffix(dir.path(), ".seg"), segs_before - 3);
    assert_eq!(answers(&store.snapshot()), before);
    store.close().unwrap();
    drop(store);

    // Cold cache and the object store hangs: tiered queries fail clearly within the
    // deadline; the local (recent) partition stays queryable.
    let store = Store::open(dir.path(), opts(Some(tier_opts(&s3)))).unwrap();
    s3.pause();
    let err = execute(&store.snapshot(), SQL[0], &QueryOptions::default()).unwrap_err();
    assert!(err.to_string().contains("unavailable"), "{err}");
    let q = QueryOptions {
        now_ns: now_ns(),
        ..QueryOptions::default()
    };
    let recent = execute(
        &store.snapshot(),
        "SELECT count(*) FROM costs WHERE ts >= now() - INTERVAL '2 hours'",
        &q,
    )
    .expect("local partitions stay queryable during the outage");
    assert_eq!(recent.rows.len(), 1);
    assert_eq!(
        format!("{:?}", recent.rows[0][0]),
        format!("{:?}", tally::query::sql::Val::Int(120))
    );
    s3.resume();
    assert_eq!(answers(&store.snapshot()), before, "queries work again once it is back");
    store.close().unwrap();
}

#[test]
fn rebuild_restores_a_lost_directory_and_retention_deletes_objects() {
    let s3 = S3Server::start(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(Some(tier_opts(&s3)))).unwrap();
    load(&store);
    assert_eq!(store.tier().unwrap(), 3);
    let history = answers(&store.snapshot());
    store.close().unwrap();
    drop(store);

    // The node is lost; a new one rebuilds from the bucket with the CLI.
    let fresh = tempfile::tempdir().unwrap();
    let target = fresh.path().join("data");
    let rebuild = || {
        std::process::Command::new(common::tally_bin())
            .args(["rebuild", "--from-object-store", &format!("s3://{BUCKET}/node-a")])
            .arg("--data-dir")
            .arg(&target)
            .envs(s3.env())
            .output()
            .unwrap()
    };
    let out = rebuild();
    assert!(
        out.status.success(),
        "rebuild failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["segments"], 3, "{report}");
    // Rebuilding over an existing store is refused.
    let again = rebuild();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds"));

    let rebuilt = Store::open(&target, opts(Some(tier_opts(&s3)))).unwrap();
    // The rebuilt node holds the tiered history only (the recent local hour was not in the
    // bucket), so compare the history-only answers: SQL over the history window and PromQL.
    let restored = answers(&rebuilt.snapshot());
    let promql_of = |a: &[String]| a[SQL.len()..].to_vec();
    assert_eq!(promql_of(&restored), promql_of(&history));
    let q = QueryOptions::default();
    let window = format!(
        "SELECT tenant, sum(cost), count(*) FROM costs WHERE ts < {} GROUP BY tenant ORDER BY tenant",
        sql_ts(history_start() + 3 * DAY)
    );
    let orig = {
        let s = Store::open(dir.path(), opts(Some(tier_opts(&s3)))).unwrap();
        let r = execute(&s.snapshot(), &window, &q).unwrap().to_json();
        s.close().unwrap();
        r
    };
    assert_eq!(execute(&rebuilt.snapshot(), &window, &q).unwrap().to_json(), orig);
    rebuilt.close().unwrap();
    drop(rebuilt);

    // Retention of 8 days drops the two oldest history partitions, in the bucket too.
    let mut o = opts(Some(tier_opts(&s3)));
    o.retention = Some(Duration::from_secs(8 * 86_400));
    let store = Store::open(dir.path(), o).unwrap();
    let dropped = store.apply_retention(now_ns()).unwrap();
    assert_eq!(dropped, 2);
    store.tier().unwrap();
    let segs: Vec<String> = s3
        .objects(BUCKET)
        .into_iter()
        .filter(|o| o.starts_with("node-a/segments/"))
        .collect();
    assert_eq!(segs.len(), 1, "expired partitions deleted from the bucket: {segs:?}");
    assert_eq!(files_with_suffix(dir.path(), ".stub"), 1);
    store.close().unwrap();
}

#[test]
fn tenant_retention_override_removes_only_that_tenant() {
    let s3 = S3Server::start(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(Some(tier_opts(&s3)));
    // t1 keeps 8 days; everyone else keeps everything.
    o.tenant_retention.insert("t1".into(), Duration::from_secs(8 * 86_400));
    let store = Store::open(dir.path(), o).unwrap();
    load(&store);
    store.tier().unwrap();
    let q = QueryOptions::default();
    let per_tenant = |s: &Store| {
        execute(
            &s.snapshot(),
            &format!(
                "SELECT tenant, count(*) FROM costs WHERE ts < {} GROUP BY tenant ORDER BY tenant",
                sql_ts(history_start() + 2 * DAY)
            ),
            &q,
        )
        .unwrap()
        .to_json()
        .to_string()
    };
    let before = per_tenant(&store);
    assert!(before.contains("\"t1\""), "{before}");
    let rewritten = store.apply_retention(now_ns()).unwrap();
    assert_eq!(rewritten, 2, "the two partitions past t1's retention are rewritten");
    let after = per_tenant(&store);
    assert!(!after.contains("\"t1\""), "t1's old data is gone: {after}");
    for t in ["\"t0\"", "\"t2\"", "\"t3\""] {
        assert!(after.contains(t), "{t} kept: {after}");
    }
    // The rewritten partitions are local again until re-tiered; the old objects go.
    store.tier().unwrap();
    let segs = s3
        .objects(BUCKET)
        .into_iter()
        .filter(|o| o.starts_with("node-a/segments/"))
        .count();
    assert_eq!(segs, 3, "one object per history partition, replaced ones deleted");
    assert_eq!(per_tenant(&store), after);
    store.close().unwrap();
}

/// As a user runs it: `tally serve --object-store s3://…` tiers old partitions in the
/// background, reports it on /metrics, and the HTTP APIs answer exactly as before.
#[test]
fn serve_tiers_in_the_background_and_answers_unchanged() {
    let s3 = S3Server::start(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let store = Store::open(&data, opts(None)).unwrap();
        load(&store);
        store.close().unwrap();
    }
    let sql = "SELECT tenant, sum(cost) FROM costs GROUP BY tenant ORDER BY tenant";
    let promql = format!(
        "/api/v1/query_range?query={}&start={}&end={}&step=3600",
        common::urlencode("sum by (tenant) (sum_over_time(cost[1h]))"),
        history_start() / 1_000_000_000,
        history_start() / 1_000_000_000 + 3 * 86_400
    );
    let ask = |srv: &common::TallyServer| {
        let s = common::http("POST", &srv.addr, "/api/v1/sql", Some(("text/plain", sql.as_bytes()))).unwrap();
        assert_eq!(s.status, 200, "{}", s.body);
        let p = common::http_get(&srv.addr, &promql).unwrap();
        assert_eq!(p.status, 200, "{}", p.body);
        (s.body, p.body)
    };
    let local = {
        let srv = common::TallyServer::start(&data, &[]);
        let a = ask(&srv);
        assert_eq!(srv.terminate(), 0);
        a
    };
    let url = format!("s3://{BUCKET}/served");
    let srv = common::TallyServer::start_with_env(
        &data,
        &[
            "--object-store",
            &url,
            "--tier-after",
            "2d",
            "--object-store-timeout",
            "5s",
        ],
        &s3.env(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = common::http_get(&srv.addr, "/metrics").unwrap().body;
        if m.contains("tally_tier_segments_uploaded_total 3") && m.contains("tally_tier_pending_uploads 0") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not tiered in time:\n{m}\n{}",
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(files_with_suffix(&data, ".stub"), 3);
    assert_eq!(ask(&srv), local, "answers over HTTP changed by tiering");
    assert_eq!(srv.terminate(), 0);
}
