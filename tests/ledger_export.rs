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
            "SELECT date_trunc('{grain}', ts), tenant, cost_center, instance, sku, currency, source_metric, region \
             FROM costs WHERE {MONTH_WHERE} GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"
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
    let (sums, n) = expected(&["--server", &url], "day");
    check(
        &py,
        tmp.path(),
        serde_json::json!({
            "parquet": http_pq, "arrow": cli_ar, "rounded": http_rd, "partitioned": null,
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
