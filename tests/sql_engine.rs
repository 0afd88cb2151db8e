//! The SQL engine against a naive reference evaluation over the generated rows:
//! random queries from the subset (filters that push down and filters that don't, label
//! and time group keys, exact DECIMAL aggregates), pushdown effects, tenant isolation,
//! limits, and errors for everything outside the subset.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use common::costgen::{generate, CostRow, GenSpec, SKUS};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tally::query::sql::value::{date_trunc, div_round, format_dec, format_ts, parse_timestamp, time_bucket, TruncUnit};
use tally::query::sql::{execute, execute_with_stats, Limits, QueryOptions, QueryResult, SqlError};
use tally::store::{Store, StoreOptions};
use tally::wal::FsyncPolicy;

const HOUR: i64 = 3_600_000_000_000;

fn open(dir: &std::path::Path) -> Store {
    Store::open(
        dir,
        StoreOptions {
            fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
            background: false,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

fn start() -> i64 {
    parse_timestamp("2026-09-28T00:00:00Z").unwrap()
}

fn dataset(dir: &std::path::Path) -> (Store, Vec<CostRow>) {
    let store = open(dir);
    let rows = generate(
        &store,
        &GenSpec {
            series: 60,
            samples_per_series: 300,
            start: start(),
            step: 3 * HOUR, // 37.5 days: spans late September to early November
            seed: 7,
            tenants: 4,
            usage: true,
        },
        true,
    );
    store.flush().unwrap(); // part in segments...
    let more = generate(
        &store,
        &GenSpec {
            series: 60,
            samples_per_series: 20,
            start: start() + 300 * 3 * HOUR,
            step: 3 * HOUR,
            seed: 8,
            tenants: 4,
            usage: false,
        },
        true,
    ); // ...and part in the head
    (store, rows.into_iter().chain(more).collect())
}

fn opts() -> QueryOptions {
    QueryOptions {
        now_ns: parse_timestamp("2026-11-15T00:00:00Z").unwrap(),
        ..QueryOptions::default()
    }
}

fn rows_text(r: &QueryResult) -> Vec<Vec<String>> {
    r.rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|v| if v.is_null() { "NULL".into() } else { v.to_string() })
                .collect()
        })
        .collect()
}

fn run(store: &Store, sql: &str) -> QueryResult {
    match execute(&store.snapshot(), sql, &opts()) {
        Ok(r) => r,
        Err(e) => panic!("{sql}\n=> {e}"),
    }
}

#[derive(Debug, Clone)]
enum F {
    TenantEq(usize),
    TenantIn(Vec<usize>),
    TsGe(i64),
    TsLt(i64),
    CcEq(usize),
    CcIsNull,
    SkuIn(Vec<usize>),
    SkuNotEq(usize),
    CostGt(i64),
    Usd,
    SkuLike,
    TsBetween(i64, i64),
    OrTenantSku(usize, usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum K {
    Tenant,
    CostCenter,
    Sku,
    Currency,
    Day,
    Month,
    Bucket6h,
}

#[derive(Debug, Clone, Copy)]
enum A {
    Sum,
    Count,
    Min,
    Max,
    Avg,
    CountDistinctSku,
    SumTimesTwo,
}

fn f_sql(f: &F) -> String {
    let ts = |t: i64| format!("TIMESTAMP '{}'", format_ts(t));
    match f {
        F::TenantEq(t) => format!("tenant = '{}'", tname(*t)),
        F::TenantIn(v) => format!(
            "tenant IN ({})",
            v.iter()
                .map(|t| format!("'{}'", tname(*t)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        F::TsGe(t) => format!("ts >= {}", ts(*t)),
        F::TsLt(t) => format!("ts < '{}'", format_ts(*t)),
        F::CcEq(c) => format!("cost_center = 'cc-{c}'"),
        F::CcIsNull => "cost_center IS NULL".into(),
        F::SkuIn(v) => format!(
            "sku IN ({})",
            v.iter()
                .map(|s| format!("'{}'", SKUS[*s]))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        F::SkuNotEq(s) => format!("NOT (sku = '{}')", SKUS[*s]),
        F::CostGt(n) => format!("cost > {}", format_dec(*n as i128)),
        F::Usd => "currency = 'USD'".into(),
        F::SkuLike => "sku LIKE 'm%'".into(),
        F::TsBetween(a, b) => format!("ts BETWEEN {} AND {}", ts(*a), ts(*b)),
        F::OrTenantSku(t, s) => format!("(tenant = '{}' OR sku = '{}')", tname(*t), SKUS[*s]),
    }
}

fn tname(t: usize) -> String {
    if t == 4 {
        "default".into()
    } else {
        format!("t{t}")
    }
}

fn f_ref(f: &F, r: &CostRow) -> bool {
    match f {
        F::TenantEq(t) => r.tenant_or_default() == tname(*t),
        F::TenantIn(v) => v.iter().any(|t| r.tenant_or_default() == tname(*t)),
        F::TsGe(t) => r.ts >= *t,
        F::TsLt(t) => r.ts < *t,
        F::CcEq(c) => r.cost_center.as_deref() == Some(&format!("cc-{c}")),
        F::CcIsNull => r.cost_center.is_none(),
        F::SkuIn(v) => v.iter().any(|s| r.sku == SKUS[*s]),
        F::SkuNotEq(s) => r.sku != SKUS[*s],
        F::CostGt(n) => r.cost > *n,
        F::Usd => r.currency == "USD",
        F::SkuLike => r.sku.starts_with('m'),
        F::TsBetween(a, b) => r.ts >= *a && r.ts <= *b,
        F::OrTenantSku(t, s) => r.tenant_or_default() == tname(*t) || r.sku == SKUS[*s],
    }
}

fn k_sql(k: K) -> &'static str {
    match k {
        K::Tenant => "tenant",
        K::CostCenter => "cost_center",
        K::Sku => "sku",
        K::Currency => "currency",
        K::Day => "date_trunc('day', ts)",
        K::Month => "date_trunc('month', ts)",
        K::Bucket6h => "time_bucket(INTERVAL '6 hours', ts)",
    }
}

fn k_ref(k: K, r: &CostRow) -> String {
    match k {
        K::Tenant => r.tenant_or_default().to_string(),
        K::CostCenter => r.cost_center.clone().unwrap_or_else(|| "NULL".into()),
        K::Sku => r.sku.clone(),
        K::Currency => r.currency.clone(),
        K::Day => format_ts(date_trunc(TruncUnit::Day, r.ts)),
        K::Month => format_ts(date_trunc(TruncUnit::Month, r.ts)),
        K::Bucket6h => format_ts(time_bucket(6 * HOUR, r.ts)),
    }
}

fn a_sql(a: A) -> &'static str {
    match a {
        A::Sum => "sum(cost)",
        A::Count => "count(*)",
        A::Min => "min(cost)",
        A::Max => "max(cost)",
        A::Avg => "avg(cost)",
        A::CountDistinctSku => "count(DISTINCT sku)",
        A::SumTimesTwo => "sum(cost * 2)",
    }
}

fn a_ref(a: A, rows: &[&CostRow]) -> String {
    let costs = rows.iter().map(|r| r.cost as i128);
    let null = || "NULL".to_string();
    match a {
        A::Sum if rows.is_empty() => null(),
        A::Sum => format_dec(costs.sum()),
        A::SumTimesTwo if rows.is_empty() => null(),
        A::SumTimesTwo => format_dec(costs.map(|c| c * 2).sum()),
        A::Count => rows.len().to_string(),
        A::Min => costs.min().map_or_else(null, format_dec),
        A::Max => costs.max().map_or_else(null, format_dec),
        A::Avg if rows.is_empty() => null(),
        A::Avg => format_dec(div_round(costs.sum(), rows.len() as i128)),
        A::CountDistinctSku => rows.iter().map(|r| &r.sku).collect::<HashSet<_>>().len().to_string(),
    }
}

fn reference(data: &[CostRow], filters: &[F], keys: &[K], aggs: &[A]) -> Vec<Vec<String>> {
    let mut groups: BTreeMap<Vec<String>, Vec<&CostRow>> = BTreeMap::new();
    for r in data {
        if filters.iter().all(|f| f_ref(f, r)) {
            groups
                .entry(keys.iter().map(|k| k_ref(*k, r)).collect())
                .or_default()
                .push(r);
        }
    }
    if keys.is_empty() && groups.is_empty() {
        groups.insert(vec![], vec![]);
    }
    let mut out: Vec<Vec<String>> = groups
        .into_iter()
        .map(|(k, rs)| k.into_iter().chain(aggs.iter().map(|a| a_ref(*a, &rs))).collect())
        .collect();
    out.sort();
    out
}

fn filter_strategy() -> impl Strategy<Value = F> {
    let t0 = start();
    let span = 320 * 3 * HOUR;
    prop_oneof![
        (0usize..5).prop_map(F::TenantEq),
        prop::collection::vec(0usize..5, 1..3).prop_map(F::TenantIn),
        (0..span).prop_map(move |d| F::TsGe(t0 + d)),
        (0..span).prop_map(move |d| F::TsLt(t0 + d)),
        (0usize..3).prop_map(F::CcEq),
        Just(F::CcIsNull),
        prop::collection::vec(0usize..4, 1..3).prop_map(F::SkuIn),
        (0usize..4).prop_map(F::SkuNotEq),
        (0i64..4_000_000_000).prop_map(F::CostGt),
        Just(F::Usd),
        Just(F::SkuLike),
        (0..span, 0..span).prop_map(move |(a, b)| F::TsBetween(t0 + a.min(b), t0 + a.max(b))),
        (0usize..5, 0usize..4).prop_map(|(t, s)| F::OrTenantSku(t, s)),
    ]
}

#[test]
fn random_queries_match_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, data) = dataset(tmp.path());
    let keys = prop::sample::subsequence(
        vec![
            K::Tenant,
            K::CostCenter,
            K::Sku,
            K::Currency,
            K::Day,
            K::Month,
            K::Bucket6h,
        ],
        0..3,
    );
    let aggs = prop::collection::vec(
        prop::sample::select(vec![
            A::Sum,
            A::Count,
            A::Min,
            A::Max,
            A::Avg,
            A::CountDistinctSku,
            A::SumTimesTwo,
        ]),
        1..3,
    );
    let filters = prop::collection::vec(filter_strategy(), 0..4);
    let mut runner = TestRunner::new(Config {
        cases: 160,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&(filters, keys, aggs), |(filters, keys, aggs)| {
            let mut sql = String::from("SELECT ");
            let items: Vec<String> = keys
                .iter()
                .map(|k| k_sql(*k).to_string())
                .chain(aggs.iter().map(|a| a_sql(*a).to_string()))
                .collect();
            sql.push_str(&items.join(", "));
            sql.push_str(" FROM costs");
            if !filters.is_empty() {
                sql.push_str(" WHERE ");
                sql.push_str(&filters.iter().map(f_sql).collect::<Vec<_>>().join(" AND "));
            }
            if !keys.is_empty() {
                sql.push_str(" GROUP BY ");
                sql.push_str(&(1..=keys.len()).map(|i| i.to_string()).collect::<Vec<_>>().join(", "));
            }
            let got =
                execute(&store.snapshot(), &sql, &opts()).map_err(|e| TestCaseError::fail(format!("{sql}: {e}")))?;
            let mut got = rows_text(&got);
            got.sort();
            let want = reference(&data, &filters, &keys, &aggs);
            prop_assert_eq!(got, want, "query: {}", sql);
            Ok(())
        })
        .unwrap();
}

#[test]
fn chargeback_order_limit_having_case_and_projection() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, data) = dataset(tmp.path());
    let (m0, m1) = (
        parse_timestamp("2026-10-01").unwrap(),
        parse_timestamp("2026-11-01").unwrap(),
    );
    let r = run(
        &store,
        "SELECT tenant, cost_center, sum(cost) AS total FROM costs \
         WHERE ts >= '2026-10-01' AND ts < '2026-11-01' AND currency = 'USD' \
         GROUP BY tenant, cost_center ORDER BY total DESC, tenant, cost_center LIMIT 5 OFFSET 1",
    );
    let mut want: BTreeMap<(String, String), i128> = BTreeMap::new();
    for x in data.iter().filter(|x| x.ts >= m0 && x.ts < m1 && x.currency == "USD") {
        *want
            .entry((
                x.tenant_or_default().to_string(),
                x.cost_center.clone().unwrap_or("NULL".into()),
            ))
            .or_default() += x.cost as i128;
    }
    let mut v: Vec<_> = want.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let want_rows: Vec<Vec<String>> = v
        .into_iter()
        .skip(1)
        .take(5)
        .map(|((t, c), s)| vec![t, c, format_dec(s)])
        .collect();
    assert_eq!(rows_text(&r), want_rows);
    assert_eq!(r.columns[2].0, "total");

    // HAVING, CASE, arithmetic over aggregates, ORDER BY an ordinal.
    let r = run(
        &store,
        "SELECT sku, CASE WHEN sum(cost) > 1000 THEN 'big' ELSE 'small' END AS size, count(*) * 2 AS twice \
         FROM costs GROUP BY sku HAVING count(*) > 10 ORDER BY 1",
    );
    assert_eq!(r.rows.len(), SKUS.len());
    let skus: BTreeSet<&str> = SKUS.iter().copied().collect();
    assert_eq!(
        rows_text(&r).iter().map(|x| x[0].clone()).collect::<Vec<_>>(),
        skus.into_iter().map(String::from).collect::<Vec<_>>()
    );

    // Non-aggregate projection with expressions and LIMIT.
    let r = run(
        &store,
        "SELECT ts, tenant, cost, cost * 2 AS double_cost, sku IS NULL AS nosku FROM costs \
         WHERE tenant = 't1' ORDER BY ts, cost LIMIT 3",
    );
    assert_eq!(r.rows.len(), 3);
    let mut t1: Vec<&CostRow> = data.iter().filter(|x| x.tenant.as_deref() == Some("t1")).collect();
    t1.sort_by_key(|x| (x.ts, x.cost));
    for (row, x) in rows_text(&r).iter().zip(&t1) {
        assert_eq!(row[0], format_ts(x.ts));
        assert_eq!(row[2], format_dec(x.cost as i128));
        assert_eq!(row[3], format_dec(2 * x.cost as i128));
        assert_eq!(row[4], "false");
    }

    // The samples table: usage metrics and money as DOUBLE.
    let r = run(
        &store,
        "SELECT metric, count(*) FROM samples WHERE metric IN ('cost', 'cpu_hours') GROUP BY metric ORDER BY metric",
    );
    assert_eq!(rows_text(&r)[0][0], "cost");
    assert_eq!(rows_text(&r)[0][1], data.len().to_string());

    // now() - INTERVAL.
    let r = run(
        &store,
        "SELECT count(*) FROM costs WHERE ts > now() - INTERVAL '7 days'",
    );
    let cut = opts().now_ns - 7 * 24 * HOUR;
    assert_eq!(
        rows_text(&r)[0][0],
        data.iter().filter(|x| x.ts > cut).count().to_string()
    );

    // SHOW TABLES / DESCRIBE.
    assert_eq!(
        rows_text(&run(&store, "SHOW TABLES")),
        vec![vec!["costs".to_string()], vec!["samples".to_string()]]
    );
    let d = rows_text(&run(&store, "DESCRIBE costs"));
    for col in [
        "ts",
        "tenant",
        "cost",
        "currency",
        "source_metric",
        "sku",
        "cost_center",
        "region",
        "instance",
    ] {
        assert!(d.iter().any(|r| r[0] == col), "DESCRIBE costs lacks {col}: {d:?}");
    }
    assert!(d.iter().any(|r| r[0] == "cost" && r[1] == "DECIMAL(38,9)"));
}

#[test]
fn pushdown_restricts_what_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, data) = dataset(tmp.path());
    let snap = store.snapshot();
    let total = data.len() as u64;
    let (_, all) = execute_with_stats(&snap, "SELECT count(*) FROM costs", &opts()).unwrap();
    assert_eq!(all.rows_scanned, total);
    let (_, st) = execute_with_stats(
        &snap,
        "SELECT sum(cost) FROM costs WHERE tenant IN ('t1', 't2')",
        &opts(),
    )
    .unwrap();
    assert_eq!(st.selects, 2);
    let want = data
        .iter()
        .filter(|r| matches!(r.tenant.as_deref(), Some("t1" | "t2")))
        .count() as u64;
    assert_eq!(
        st.rows_scanned, want,
        "tenant predicate should read only those tenants' samples"
    );
    let (_, st) = execute_with_stats(
        &snap,
        "SELECT sum(cost) FROM costs WHERE ts >= '2026-10-10' AND ts < '2026-10-11'",
        &opts(),
    )
    .unwrap();
    let (a, b) = (
        parse_timestamp("2026-10-10").unwrap(),
        parse_timestamp("2026-10-11").unwrap(),
    );
    assert_eq!(
        st.rows_scanned,
        data.iter().filter(|r| r.ts >= a && r.ts < b).count() as u64
    );
    let (_, st) = execute_with_stats(&snap, "SELECT count(*) FROM costs WHERE sku = 'gp3'", &opts()).unwrap();
    assert_eq!(st.rows_scanned, data.iter().filter(|r| r.sku == "gp3").count() as u64);
}

#[test]
fn tenant_scope_wins_over_the_sql() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, data) = dataset(tmp.path());
    let scoped = QueryOptions {
        tenant_scope: Some("t2".into()),
        ..opts()
    };
    let snap = store.snapshot();
    for sql in [
        "SELECT tenant, count(*) FROM costs GROUP BY tenant",
        "SELECT tenant, count(*) FROM costs WHERE tenant = 't1' OR tenant = 't2' GROUP BY tenant",
        "SELECT tenant, count(*) FROM costs WHERE tenant IN ('t1', 't2') GROUP BY tenant",
    ] {
        let r = execute(&snap, sql, &scoped).unwrap();
        let want = data.iter().filter(|r| r.tenant.as_deref() == Some("t2")).count();
        assert_eq!(rows_text(&r), vec![vec!["t2".to_string(), want.to_string()]], "{sql}");
    }
    let r = execute(&snap, "SELECT count(*) FROM costs WHERE tenant = 't1'", &scoped).unwrap();
    assert_eq!(rows_text(&r), vec![vec!["0".to_string()]]);
}

#[test]
fn limits_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = dataset(tmp.path());
    let snap = store.snapshot();
    let o = QueryOptions {
        limits: Limits {
            max_rows_scanned: 1000,
            ..Limits::default()
        },
        ..opts()
    };
    let e = execute(&snap, "SELECT sum(cost) FROM costs", &o).unwrap_err();
    assert!(matches!(e, SqlError::Limit(_)) && e.to_string().contains("rows"), "{e}");
    let o = QueryOptions {
        limits: Limits {
            max_memory_bytes: 10_000,
            ..Limits::default()
        },
        ..opts()
    };
    let e = execute(&snap, "SELECT ts, cost FROM costs", &o).unwrap_err();
    assert!(
        matches!(e, SqlError::Limit(_)) && e.to_string().contains("memory"),
        "{e}"
    );
    let o = QueryOptions {
        limits: Limits {
            timeout: Duration::ZERO,
            ..Limits::default()
        },
        ..opts()
    };
    let e = execute(&snap, "SELECT sum(cost) FROM costs", &o).unwrap_err();
    assert!(e.to_string().contains("timeout"), "{e}");
}

#[test]
fn unsupported_sql_names_the_construct_and_position() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let snap = store.snapshot();
    let cases: &[(&str, &str)] = &[
        ("SELECT * FROM costs c JOIN samples s ON c.ts = s.ts", "JOIN"),
        ("SELECT * FROM costs WHERE cost > (SELECT 1)", "subquery"),
        ("SELECT tenant FROM costs UNION SELECT tenant FROM samples", "UNION"),
        ("WITH x AS (SELECT 1) SELECT * FROM costs", "WITH"),
        ("SELECT sum(cost) OVER () FROM costs", "OVER"),
        ("SELECT CAST(cost AS DOUBLE) FROM costs", "CAST"),
        ("SELECT upper(sku) FROM costs", "function upper()"),
        ("INSERT INTO costs VALUES (1)", "INSERT"),
        ("SELECT DISTINCT sku FROM costs", "DISTINCT"),
        ("SELECT * FROM nope", "unknown table"),
        ("SELECT nope FROM costs", "unknown column `nope`"),
        (
            "SELECT sku, sum(cost) FROM costs GROUP BY tenant",
            "must appear in GROUP BY",
        ),
        ("SELECT * FROM costs WHERE sum(cost) > 1", "not allowed in WHERE"),
        ("SELECT sum(sum(cost)) FROM costs", "not allowed"),
        ("SELECT * FROM costs WHERE ts > 'yesterday-ish'", "timestamp"),
        ("SELECT sku + 1 FROM costs", "not defined"),
        ("SELECT * FROM costs WHERE ts > now() - INTERVAL '1 month'", "months"),
        ("SELECT * FROM costs LIMIT -1", "LIMIT"),
        ("SELEKT 1", "syntax"),
        ("SELECT 1; SELECT 2", "exactly one"),
        ("SELECT sku FROM costs ORDER BY 7", "position 7"),
        // sqlparser gives `END` no span: the position is its first token's.
        ("  END", "statement `END`"),
    ];
    for (sql, needle) in cases {
        match execute(&snap, sql, &opts()) {
            Ok(_) => panic!("{sql} should fail"),
            Err(e) => {
                let m = e.to_string();
                assert!(m.contains(needle), "{sql}\n=> {m}\n(expected to mention {needle:?})");
                if matches!(e, SqlError::Unsupported { .. }) {
                    assert!(m.contains("line 1, column"), "{sql}: no position in {m}");
                }
            }
        }
    }
}

/// Random token soup from the SQL vocabulary (valid, nearly valid and broken statements):
/// every one returns a result or an error, never a panic; errors for constructs outside
/// the subset name a position.
#[test]
fn arbitrary_sql_text_never_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    generate(
        &store,
        &GenSpec {
            series: 12,
            samples_per_series: 20,
            start: start(),
            step: 5 * HOUR,
            seed: 3,
            tenants: 3,
            usage: true,
        },
        false,
    );
    let snap = store.snapshot();
    const TOKENS: &[&str] = &[
        "SELECT",
        "FROM",
        "costs",
        "samples",
        "WHERE",
        "GROUP BY",
        "ORDER BY",
        "HAVING",
        "LIMIT",
        "OFFSET",
        "sum(cost)",
        "count(*)",
        "count(DISTINCT sku)",
        "avg(cost)",
        "min(ts)",
        "max(value)",
        "tenant",
        "sku",
        "cost",
        "value",
        "ts",
        "currency",
        "nope",
        "=",
        "<>",
        "<",
        ">=",
        "+",
        "-",
        "*",
        "/",
        "%",
        "AND",
        "OR",
        "NOT",
        "IN",
        "(",
        ")",
        ",",
        "BETWEEN",
        "LIKE",
        "'m%'",
        "IS",
        "NULL",
        "CASE",
        "WHEN",
        "THEN",
        "ELSE",
        "END",
        "1",
        "0",
        "-1",
        "2.5",
        "99999999999999999999999",
        "'t1'",
        "'2026-10-01'",
        "TIMESTAMP",
        "INTERVAL",
        "'7 days'",
        "now()",
        "date_trunc('day', ts)",
        "date_trunc('fortnight', ts)",
        "time_bucket(INTERVAL '6 hours', ts)",
        "AS",
        "x",
        "DESC",
        "NULLS",
        "FIRST",
        "*",
        "DISTINCT",
        "JOIN",
        "UNION",
        "SHOW TABLES",
        "DESCRIBE",
        ";",
        "'",
        "\"",
        "cost / 0",
        "1 / 0",
        "cost * cost",
        "coalesce(cost_center, 'none')",
    ];
    let mut runner = TestRunner::new(Config {
        cases: 400,
        ..Config::default()
    });
    runner
        .run(
            &(
                prop::collection::vec(prop::sample::select(TOKENS), 0..24),
                prop::bool::ANY,
            ),
            |(toks, prefix)| {
                let mut sql = if prefix { "SELECT ".to_string() } else { String::new() };
                sql.push_str(&toks.join(" "));
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| execute(&snap, &sql, &opts())));
                let Ok(r) = r else {
                    return Err(TestCaseError::fail(format!("panic on {sql:?}")));
                };
                if let Err(SqlError::Unsupported { pos, .. }) = &r {
                    prop_assert!(pos.contains("line"), "no position for {sql:?}: {r:?}");
                }
                Ok(())
            },
        )
        .unwrap();
}
