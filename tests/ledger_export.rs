//! The monthly ledger end to end: `tally export ledger` (data directory and server),
//! `tally sql`, `POST /api/v1/sql` and `GET /api/v1/export/ledger`, with DuckDB and
//! pyarrow (from the test venv) reading the Parquet and Arrow files and checking schemas,
//! row counts and per-tenant Decimal sums against tally's own SQL results exactly.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::costgen::{generate, GenSpec};
use common::{http_raw, tally_bin, venv_python, TallyServer};
use tally::query::sql::value::parse_timestamp;
use tally::store::{Store, StoreOptions};
use tally::wal::FsyncPolicy;

const HOUR: i64 = 3_600_000_000_000;
const MONTH_WHERE: &str = "ts >= '2026-10-01' AND ts < '2026-11-01'";

fn make_data(dir: &Path) {
    let store = Store::open(
        dir,
        StoreOptions {
            fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
            background: false,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    generate(
        &store,
        &GenSpec {
            series: 90,
            samples_per_series: 400,
            start: parse_timestamp("2026-09-25T00:00:00Z").unwrap(),
            step: 2 * HOUR + 17_000_000_000, // crosses both month boundaries
            seed: 11,
            tenants: 5,
            usage: true,
        },
        false,
    );
    store.close().unwrap();
}

fn tally(args: &[&str]) -> (String, String) {
    let out = Command::new(tally_bin()).args(args).output().expect("run tally");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "tally {args:?} failed:\n{stderr}\n{stdout}");
    (stdout, stderr)
}

fn sql_json(target: &[&str], q: &str) -> serde_json::Value {
    let mut args = vec!["sql", "--format", "json"];
    args.extend_from_slice(target);
    args.push(q);
    let (out, _) = tally(&args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON from tally sql ({e}): {out}"))
}

/// Tally's own answer: per (tenant, currency) exact sums, and the number of ledger keys.
fn expected(target: &[&str], grain: &str) -> (serde_json::Value, usize) {
    let sums = sql_json(
        target,
        &format!(
            "SELECT tenant, currency, sum(cost), count(*) FROM costs WHERE {MONTH_WHERE} GROUP BY 1, 2 ORDER BY 1, 2"
        ),
    );
    let groups = sql_json(
        target,
        &format!(
            "SELECT date_trunc('{grain}', ts), tenant, cost_center, instance, sku, currency \
             FROM costs WHERE {MONTH_WHERE} GROUP BY 1, 2, 3, 4, 5, 6"
        ),
    );
    let n = groups["rows"].as_array().map_or(0, |r| r.len());
    (sums["rows"].clone(), n)
}

fn check(py: &Path, work: &Path, spec: serde_json::Value) {
    let spec_path = work.join(format!("spec-{}.json", rand_suffix()));
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/check_ledger.py");
    let out = Command::new(py)
        .arg(script)
        .arg(&spec_path)
        .output()
        .expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "DuckDB/pyarrow check failed:\n{text}");
    println!("{text}");
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[test]
fn ledger_files_match_sql_exactly_in_duckdb_and_pyarrow() {
    let py = venv_python();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_data(&data);
    let d = data.to_str().unwrap();
    let out = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();

    // Directly on the data directory.
    for (grain, hours) in [("day", 24), ("hour", 1)] {
        let pq = out(&format!("ledger-{grain}.parquet"));
        let ar = out(&format!("ledger-{grain}.arrow"));
        let rd = out(&format!("ledger-{grain}-rounded.parquet"));
        let part = out(&format!("bucket-{grain}"));
        let base = [
            "export",
            "ledger",
            "--data-dir",
            d,
            "--month",
            "2026-10",
            "--grain",
            grain,
            "--quiet",
        ];
        tally(&[&base[..], &["--format", "parquet", "--out", &pq]].concat());
        tally(&[&base[..], &["--format", "arrow", "--out", &ar]].concat());
        tally(
            &[
                &base[..],
                &["--format", "parquet", "--round", "minor-units", "--out", &rd],
            ]
            .concat(),
        );
        tally(&[&base[..], &["--format", "parquet", "--partitioned", "--out", &part]].concat());
        let (sums, n) = expected(&["--data-dir", d], grain);
        assert!(n > 100, "too few ledger rows to be a meaningful test: {n}");
        check(
            &py,
            tmp.path(),
            serde_json::json!({
                "parquet": pq, "arrow": ar, "rounded": rd, "partitioned": part,
                "expected": sums, "ledger_rows": n,
                "month_start": "2026-10-01T00:00:00Z", "month_end": "2026-11-01T00:00:00Z",
                "grain_hours": hours,
            }),
        );
    }

    // The same through a running server: HTTP export, CLI --server, and the lock error.
    let srv = TallyServer::start(&data, &[]);
    let url = format!("http://{}", srv.addr);
    let e = Command::new(tally_bin())
        .args(["sql", "--data-dir", d, "SELECT 1 FROM costs"])
        .output()
        .unwrap();
    assert!(!e.status.success());
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(msg.contains("--server"), "lock error should point at --server: {msg}");

    let (st, body) = http_raw(
        "GET",
        &srv.addr,
        "/api/v1/export/ledger?month=2026-10&format=parquet",
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let http_pq = out("http.parquet");
    std::fs::write(&http_pq, &body).unwrap();
    let (st, body) = http_raw(
        "GET",
        &srv.addr,
        "/api/v1/export/ledger?month=2026-10&format=parquet&round=minor-units",
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(st, 200);
    let http_rd = out("http-rounded.parquet");
    std::fs::write(&http_rd, &body).unwrap();
    let cli_ar = out("cli-server.arrow");
    tally(&[
        "export", "ledger", "--server", &url, "--month", "2026-10", "--format", "arrow", "--out", &cli_ar, "--quiet",
    ]);
    // Hive-partitioned through the server: the CLI splits the server's ledger per tenant.
    let srv_part = out("bucket-server");
    let (_, err) = tally(&[
        "export",
        "ledger",
        "--server",
        &url,
        "--month",
        "2026-10",
        "--format",
        "parquet",
        "--partitioned",
        "--out",
        &srv_part,
        "--quiet",
    ]);
    assert!(err.contains("files under"), "{err}");
    let (sums, n) = expected(&["--server", &url], "day");
    check(
        &py,
        tmp.path(),
        serde_json::json!({
            "parquet": http_pq, "arrow": cli_ar, "rounded": http_rd, "partitioned": srv_part,
            "expected": sums, "ledger_rows": n,
            "month_start": "2026-10-01T00:00:00Z", "month_end": "2026-11-01T00:00:00Z",
            "grain_hours": 24,
        }),
    );

    // Tenant-scoped export holds only that tenant.
    let (st, body) = http_raw(
        "GET",
        &srv.addr,
        "/api/v1/export/ledger?month=2026-10&format=arrow",
        &[("X-Scope-OrgID", "t3")],
        &[],
    )
    .unwrap();
    assert_eq!(st, 200);
    let scoped = out("scoped.arrow");
    std::fs::write(&scoped, &body).unwrap();
    let o = Command::new(&py)
        .args([
            "-c",
            "import sys,pyarrow as pa,pyarrow.ipc as i;t=i.open_file(pa.memory_map(sys.argv[1])).read_all();\
             print(sorted(set(t.column('x_TenantId').to_pylist())))",
            &scoped,
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "['t3']");

    // Bad requests are 400 with a message.
    // One file per HTTP response: partitioned output is refused with a pointer to the CLI.
    let (st, body) = http_raw(
        "GET",
        &srv.addr,
        "/api/v1/export/ledger?month=2026-10&partitioned=true",
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(st, 400);
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("--partitioned") && body.contains("X-Scope-OrgID"),
        "{body}"
    );
    for q in [
        "month=2026-13",
        "month=2026-10&format=csv",
        "month=2026-10&grain=week",
        "format=parquet",
    ] {
        let (st, body) = http_raw("GET", &srv.addr, &format!("/api/v1/export/ledger?{q}"), &[], &[]).unwrap();
        assert_eq!(st, 400, "{q}: {}", String::from_utf8_lossy(&body));
    }
    assert_eq!(srv.terminate(), 0);
}

#[test]
fn sql_over_http_json_csv_arrow_and_tenant_isolation() {
    let py = venv_python();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_data(&data);
    let srv = TallyServer::start(&data, &[]);
    let q = "SELECT tenant, sum(cost) AS total, count(*) AS n FROM costs GROUP BY tenant ORDER BY tenant";
    let (st, json) = http_raw(
        "POST",
        &srv.addr,
        "/api/v1/sql",
        &[("Content-Type", "text/plain")],
        q.as_bytes(),
    )
    .unwrap();
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&json));
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["columns"][1]["type"], "DECIMAL(38,9)");
    let rows = v["rows"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 6, "t0..t4 and default: {v}");

    let (st, csv) = http_raw(
        "POST",
        &srv.addr,
        "/api/v1/sql",
        &[("Accept", "text/csv")],
        q.as_bytes(),
    )
    .unwrap();
    assert_eq!(st, 200);
    let csv = String::from_utf8(csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "tenant,total,n");
    for (line, r) in lines[1..].iter().zip(&rows) {
        assert_eq!(
            *line,
            format!("{},{},{}", r[0].as_str().unwrap(), r[1].as_str().unwrap(), r[2])
        );
    }

    let (st, arrow) = http_raw(
        "POST",
        &srv.addr,
        "/api/v1/sql",
        &[("Accept", "application/vnd.apache.arrow.stream")],
        q.as_bytes(),
    )
    .unwrap();
    assert_eq!(st, 200);
    let f = tmp.path().join("r.arrows");
    std::fs::write(&f, &arrow).unwrap();
    let o = Command::new(&py)
        .args([
            "-c",
            "import sys,json,pyarrow as pa,pyarrow.ipc as i;t=i.open_stream(open(sys.argv[1],'rb').read()).read_all();\
             print(json.dumps([str(t.schema.field('total').type)]+[[a,str(b),c] for a,b,c in zip(*[t.column(k).to_pylist() for k in ('tenant','total','n')])]))",
            f.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(got[0], "decimal128(38, 9)");
    for (g, r) in got.as_array().unwrap()[1..].iter().zip(&rows) {
        assert_eq!(g[0], r[0]);
        let (a, b): (String, String) = (g[1].as_str().unwrap().into(), r[1].as_str().unwrap().into());
        assert_eq!(
            a.trim_end_matches('0').trim_end_matches('.'),
            b.trim_end_matches('0').trim_end_matches('.'),
            "arrow decimal {a} vs JSON {b}"
        );
        assert_eq!(g[2], r[2]);
    }

    // X-Scope-OrgID wins over the SQL.
    let (st, body) = http_raw(
        "POST",
        &srv.addr,
        "/api/v1/sql",
        &[("X-Scope-OrgID", "t1")],
        b"SELECT tenant, sum(cost) FROM costs WHERE tenant IN ('t1', 't2') OR tenant = 't3' GROUP BY tenant",
    )
    .unwrap();
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let t1 = rows.iter().find(|r| r[0] == "t1").unwrap();
    assert_eq!(v["rows"], serde_json::json!([[t1[0], t1[1]]]));

    // Errors: 400 with the construct named.
    let (st, body) = http_raw(
        "POST",
        &srv.addr,
        "/api/v1/sql",
        &[],
        b"SELECT * FROM costs a JOIN samples b ON a.ts = b.ts",
    )
    .unwrap();
    assert_eq!(st, 400);
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("JOIN") && body.contains("line 1, column"), "{body}");
    let (st, _) = http_raw("POST", &srv.addr, "/api/v1/sql", &[], b"").unwrap();
    assert_eq!(st, 400);

    // The CLI against the server: aligned table.
    let url = format!("http://{}", srv.addr);
    let (table, _) = tally(&["sql", "--server", &url, q]);
    assert!(table.lines().next().unwrap().starts_with("tenant"), "{table}");
    assert!(table.contains("(6 rows)"), "{table}");
    assert_eq!(srv.terminate(), 0);
}

/// Two tenants; acme has two cost series that differ only in `pod` (one ledger key), and
/// each tenant has a label the other does not.
fn make_access_data(dir: &Path) {
    use tally::model::{LabelLimits, Labels, Money, Sample, SeriesKind, Value};
    use tally::store::WriteBatch;
    let store = Store::open(
        dir,
        StoreOptions {
            fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
            background: false,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let t0 = parse_timestamp("2026-10-05T00:00:00Z").unwrap();
    let mut b = WriteBatch::new();
    let series: [(&[(&str, &str)], i64); 3] = [
        (
            &[("tenant", "acme"), ("pod", "a"), ("team", "core"), ("acme_only", "x")],
            1_250_000_001,
        ),
        (
            &[("tenant", "acme"), ("pod", "b"), ("team", "core"), ("acme_only", "x")],
            2_000_000_003,
        ),
        (
            &[("tenant", "beta"), ("pod", "a"), ("team", "web"), ("beta_only", "y")],
            7_000_000_000,
        ),
    ];
    for (extra, nanos) in series {
        let mut l: Vec<(&str, &str)> = vec![
            ("__name__", "cost"),
            ("cost_center", "cc-1"),
            ("instance", "i-1"),
            ("sku", "m5.large"),
            ("currency", "USD"),
            ("source_metric", "cpu_hours"),
        ];
        l.extend_from_slice(extra);
        let samples = (0..6)
            .map(|k| Sample {
                ts: t0 + k * 4 * HOUR,
                value: Value::Money(Money::from_nanos(nanos)),
            })
            .collect();
        b.add(
            Labels::from_pairs(l, &LabelLimits::default()).unwrap(),
            SeriesKind::MONEY,
            samples,
        );
    }
    store.append(&b).unwrap();
    store.close().unwrap();
}

fn post_sql(addr: &str, headers: &[(&str, &str)], q: &str) -> (u16, serde_json::Value) {
    let (st, body) = http_raw("POST", addr, "/api/v1/sql", headers, q.as_bytes()).unwrap();
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {st} {}", String::from_utf8_lossy(&body)));
    (st, v)
}

fn describe_columns(v: &serde_json::Value) -> Vec<String> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn tenant_tokens_scope_sql_metadata_and_ledger() {
    let py = venv_python();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_access_data(&data);
    let tokens = tmp.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        "# bearer token, tenant\ntoken,tenant\ntok-acme,acme\ntok-ops,*\n",
    )
    .unwrap();
    let srv = TallyServer::start(&data, &["--tenant-tokens", tokens.to_str().unwrap()]);
    let a = srv.addr.clone();
    let acme = [("Authorization", "Bearer tok-acme")];
    let ops = [("Authorization", "Bearer tok-ops")];
    let q = "SELECT tenant, sum(cost) FROM costs GROUP BY tenant ORDER BY tenant";

    // Missing / unknown / malformed token: 401; token for another tenant's header: 403.
    let (st, body) = http_raw("POST", &a, "/api/v1/sql", &[], q.as_bytes()).unwrap();
    assert_eq!(st, 401, "{}", String::from_utf8_lossy(&body));
    let (st, _) = post_sql(&a, &[("Authorization", "Bearer nope")], q);
    assert_eq!(st, 401);
    let (st, _) = post_sql(&a, &[("Authorization", "tok-acme")], q);
    assert_eq!(st, 401);
    let (st, v) = post_sql(&a, &[acme[0], ("X-Scope-OrgID", "beta")], q);
    assert_eq!(st, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("acme"), "{v}");
    // Same tenant in the header is fine.
    let (st, _) = post_sql(&a, &[acme[0], ("X-Scope-OrgID", "acme")], q);
    assert_eq!(st, 200);

    // The token's tenant wins over the SQL.
    let (st, v) = post_sql(&a, &acme, q);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"], serde_json::json!([["acme", "19.500000024"]]));
    let (_, v) = post_sql(
        &a,
        &acme,
        "SELECT tenant, sum(cost) FROM costs WHERE tenant = 'beta' OR tenant IN ('beta') GROUP BY tenant",
    );
    assert_eq!(v["rows"], serde_json::json!([]));
    let (_, v) = post_sql(&a, &acme, "SELECT count(*) FROM samples WHERE tenant <> 'acme'");
    assert_eq!(v["rows"], serde_json::json!([[0]]));
    let (_, v) = post_sql(&a, &ops, q);
    assert_eq!(v["rows"], serde_json::json!([["acme", "19.500000024"], ["beta", "42"]]));

    // Metadata is scoped too: DESCRIBE lists only the token's tenant's labels.
    let (st, v) = post_sql(&a, &acme, "SHOW TABLES");
    assert_eq!(st, 200);
    assert_eq!(v["rows"], serde_json::json!([["costs"], ["samples"]]));
    for table in ["costs", "samples"] {
        let (st, v) = post_sql(&a, &acme, &format!("DESCRIBE {table}"));
        assert_eq!(st, 200);
        let cols = describe_columns(&v);
        assert!(cols.contains(&"acme_only".to_string()), "{table}: {cols:?}");
        assert!(
            !cols.contains(&"beta_only".to_string()),
            "{table} leaks beta's labels: {cols:?}"
        );
        let (_, v) = post_sql(&a, &ops, &format!("DESCRIBE {table}"));
        let cols = describe_columns(&v);
        assert!(cols.contains(&"beta_only".to_string()) && cols.contains(&"acme_only".to_string()));
        let (_, v) = post_sql(&a, &[ops[0], ("X-Scope-OrgID", "beta")], &format!("DESCRIBE {table}"));
        let cols = describe_columns(&v);
        assert!(cols.contains(&"beta_only".to_string()) && !cols.contains(&"acme_only".to_string()));
    }
    // A label of another tenant is not a column for this one.
    let (st, v) = post_sql(&a, &acme, "SELECT beta_only FROM costs");
    assert_eq!(st, 400, "{v}");

    // The ledger endpoint: same rules.
    let path = "/api/v1/export/ledger?month=2026-10&format=arrow";
    let (st, _) = http_raw("GET", &a, path, &[], &[]).unwrap();
    assert_eq!(st, 401);
    let (st, _) = http_raw("GET", &a, path, &[acme[0], ("X-Scope-OrgID", "beta")], &[]).unwrap();
    assert_eq!(st, 403);
    let (st, body) = http_raw("GET", &a, path, &acme, &[]).unwrap();
    assert_eq!(st, 200);
    let f = tmp.path().join("acme.arrow");
    std::fs::write(&f, &body).unwrap();

    // The CLI sends --token / TALLY_TOKEN; its ledger merges acme's two pods into one
    // row per day whose Tags keep only what both share.
    let url = format!("http://{a}");
    let (out, _) = tally(&["sql", "--server", &url, "--token", "tok-acme", "--format", "csv", q]);
    assert_eq!(out.trim(), "tenant,sum(cost)\nacme,19.500000024");
    let o = Command::new(tally_bin())
        .args(["sql", "--server", &url, "--format", "csv", q])
        .env("TALLY_TOKEN", "tok-ops")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 3);
    let o = Command::new(tally_bin())
        .args(["sql", "--server", &url, q])
        .env_remove("TALLY_TOKEN")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("401"));
    let cli = tmp.path().join("cli.arrow");
    tally(&[
        "export",
        "ledger",
        "--server",
        &url,
        "--token",
        "tok-acme",
        "--month",
        "2026-10",
        "--format",
        "arrow",
        "--out",
        cli.to_str().unwrap(),
        "--quiet",
    ]);
    for file in [&f, &cli] {
        let o = Command::new(&py)
            .args([
                "-c",
                "import sys,json,pyarrow as pa,pyarrow.ipc as i;t=i.open_file(pa.memory_map(sys.argv[1])).read_all();\
                 print(json.dumps([[r['x_TenantId'],r['ResourceId'],r['Tags'],str(r['BilledCost']),r['ChargePeriodStart'].isoformat()] for r in t.to_pylist()]))",
                file.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        // Samples every 4h from Oct 5 00:00: six per series, all on Oct 5.
        assert_eq!(
            rows,
            serde_json::json!([[
                "acme",
                "i-1",
                "{\"acme_only\":\"x\",\"team\":\"core\"}",
                "19.500000024",
                "2026-10-05T00:00:00+00:00"
            ]]),
            "{}",
            file.display()
        );
    }
    assert_eq!(srv.terminate(), 0);
}

#[test]
fn sql_limits_from_serve_flags_and_config() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_access_data(&data);
    let q = "SELECT ts, sum(cost) FROM costs GROUP BY ts";

    // Flags are documented.
    let (help, _) = tally(&["serve", "--help"]);
    for flag in [
        "--sql-max-rows-scanned",
        "--sql-max-memory",
        "--sql-timeout",
        "--tenant-tokens",
    ] {
        assert!(help.contains(flag), "serve --help lacks {flag}");
    }

    // Rows scanned, from the config file.
    let cfg = tmp.path().join("tally.toml");
    std::fs::write(&cfg, "sql_max_rows_scanned = 5\nsql_max_memory = \"64MiB\"\n").unwrap();
    let srv = TallyServer::start(&data, &["--config", cfg.to_str().unwrap()]);
    let (st, v) = post_sql(&srv.addr, &[], q);
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["errorType"], "limit");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("more than 5 rows") && e.contains("--sql-max-rows-scanned"),
        "{e}"
    );
    // Within the limit still works.
    let (st, v) = post_sql(&srv.addr, &[], "SELECT count(*) FROM costs WHERE tenant = 'none'");
    assert_eq!(st, 200, "{v}");
    assert_eq!(srv.terminate(), 0);

    // Memory, from the flag (wins over the config file's 64MiB).
    let srv = TallyServer::start(
        &data,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--sql-max-rows-scanned",
            "1000",
            "--sql-max-memory",
            "1KiB",
        ],
    );
    let (st, v) = post_sql(&srv.addr, &[], "SELECT ts, cost, pod, team, acme_only FROM costs");
    assert_eq!(st, 422, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("1024 bytes") && e.contains("--sql-max-memory"), "{e}");
    let (st, v) = post_sql(&srv.addr, &[], "SELECT sum(cost) FROM costs");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"], serde_json::json!([["61.500000024"]]));
    assert_eq!(srv.terminate(), 0);

    // Timeout: a 1ns budget is spent before the first series is done.
    let srv = TallyServer::start(&data, &["--sql-timeout", "1ns"]);
    let (st, v) = post_sql(&srv.addr, &[], q);
    assert_eq!(st, 422, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("timeout") && e.contains("--sql-timeout"), "{e}");
    assert_eq!(srv.terminate(), 0);

    // Bad values fail at startup with the flag named.
    for (args, want) in [
        (vec!["--sql-max-memory", "12parsecs"], "--sql-max-memory"),
        (vec!["--sql-timeout", "soon"], "--sql-timeout"),
        (vec!["--sql-max-rows-scanned", "0"], "--sql-max-rows-scanned"),
        (vec!["--tenant-tokens", "/nonexistent/tokens.toml"], "tenant token file"),
    ] {
        let o = Command::new(tally_bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(tmp.path().join("unused"))
            .args(&args)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
