"""Reads tally's exported ledgers with DuckDB and pyarrow and checks them against tally's
own SQL results (given as JSON). Exits non-zero with a message on the first mismatch.

usage: check_ledger.py SPEC.json
SPEC: {"parquet": path, "arrow": path, "rounded": path, "partitioned": dir or null,
       "expected": [[tenant, currency, "exact sum", count], ...],   # tally SQL, this month
       "ledger_rows": n,                                              # tally SQL group count
       "month_start": "2026-10-01T00:00:00Z", "month_end": "2026-11-01T00:00:00Z",
       "grain_hours": 24}
"""
import json
import sys
from datetime import datetime
from decimal import Decimal, ROUND_HALF_EVEN

import duckdb
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

DEC = pa.decimal128(38, 9)
TS = pa.timestamp("us", tz="UTC")
SCHEMA = [
    ("BillingPeriodStart", TS), ("BillingPeriodEnd", TS),
    ("ChargePeriodStart", TS), ("ChargePeriodEnd", TS),
    ("ChargeCategory", pa.string()),
    ("BilledCost", DEC), ("EffectiveCost", DEC), ("ListCost", DEC), ("ContractedCost", DEC),
    ("BillingCurrency", pa.string()), ("ServiceName", pa.string()), ("SkuId", pa.string()),
    ("PricingQuantity", pa.float64()), ("PricingUnit", pa.string()),
    ("ConsumedQuantity", pa.float64()), ("ConsumedUnit", pa.string()),
    ("ResourceId", pa.string()), ("RegionId", pa.string()), ("SubAccountId", pa.string()),
    ("Tags", pa.string()), ("x_TenantId", pa.string()), ("x_CostCenter", pa.string()),
    ("x_LedgerRunId", pa.string()), ("x_SourceWatermark", pa.string()), ("x_UnroundedCost", DEC),
]


def fail(msg):
    print("CHECK FAILED: " + msg)
    sys.exit(1)


def check_schema(schema, what):
    got = [(f.name, f.type) for f in schema]
    if got != SCHEMA:
        fail(f"{what}: schema differs\n got  {got}\n want {SCHEMA}")


def sums_by_tenant_currency(rows):
    out = {}
    for t, c, s in rows:
        out[(t, c)] = out.get((t, c), Decimal(0)) + Decimal(s)
    return out


def main():
    spec = json.load(open(sys.argv[1]))
    expected = {(t, c): Decimal(s) for t, c, s, _n in spec["expected"]}
    con = duckdb.connect()

    # Parquet through DuckDB: exact decimal sums, row counts, period bounds.
    pqf = spec["parquet"]
    meta = pq.ParquetFile(pqf).metadata
    check_schema(pq.read_schema(pqf), "parquet")
    for rg in range(meta.num_row_groups):
        for ci in range(meta.num_columns):
            col = meta.row_group(rg).column(ci)
            if col.compression != "ZSTD":
                fail(f"parquet column {col.path_in_schema} compressed with {col.compression}, want ZSTD")
            if not col.is_stats_set:
                fail(f"parquet column {col.path_in_schema} has no statistics")
    rel = con.execute(
        "SELECT x_TenantId, BillingCurrency, sum(BilledCost)::VARCHAR, typeof(sum(BilledCost)) "
        f"FROM read_parquet('{pqf}') GROUP BY 1, 2"
    ).fetchall()
    for _t, _c, _s, ty in rel:
        if not ty.startswith("DECIMAL"):
            fail(f"DuckDB summed BilledCost as {ty}, want DECIMAL")
    got = {(t, c): Decimal(s) for t, c, s, _ in rel}
    if got != expected:
        fail(f"parquet per-tenant sums differ from tally SQL\n got  {sorted(got.items())}\n want {sorted(expected.items())}")
    n_parquet = con.execute(f"SELECT count(*) FROM read_parquet('{pqf}')").fetchone()[0]
    if n_parquet != spec["ledger_rows"]:
        fail(f"parquet has {n_parquet} rows, tally SQL has {spec['ledger_rows']} groups")
    bad = con.execute(
        f"SELECT count(*) FROM read_parquet('{pqf}') WHERE ChargePeriodStart < BillingPeriodStart "
        "OR ChargePeriodEnd > BillingPeriodEnd OR ChargePeriodEnd - ChargePeriodStart <> "
        f"INTERVAL {spec['grain_hours']} HOUR OR ChargeCategory <> 'Usage' OR BilledCost <> x_UnroundedCost "
        "OR x_TenantId <> SubAccountId"
    ).fetchone()[0]
    if bad:
        fail(f"{bad} parquet rows have bad periods / category / ids")
    bp = con.execute(
        f"SELECT DISTINCT epoch(BillingPeriodStart), epoch(BillingPeriodEnd) FROM read_parquet('{pqf}')"
    ).fetchall()
    want = tuple(datetime.fromisoformat(spec[k].replace("Z", "+00:00")).timestamp() for k in ("month_start", "month_end"))
    if len(bp) != 1 or tuple(bp[0]) != want:
        fail(f"billing period {bp} != {want}")
    dup = con.execute(
        f"SELECT count(*) FROM (SELECT ChargePeriodStart, x_TenantId, x_CostCenter, ResourceId, SkuId, "
        f"BillingCurrency, count(*) n FROM read_parquet('{pqf}') "
        "GROUP BY ALL HAVING n > 1)"
    ).fetchone()[0]
    if dup:
        fail(f"{dup} duplicate ledger keys (period, tenant, cost center, resource, SKU, currency)")
    bad_tags = con.execute(
        f"SELECT count(*) FROM read_parquet('{pqf}') WHERE json_type(Tags::JSON) <> 'OBJECT'"
    ).fetchone()[0]
    if bad_tags:
        fail(f"{bad_tags} rows whose Tags is not a JSON object")
    q = con.execute(f"SELECT count(*) FROM read_parquet('{pqf}') WHERE ConsumedQuantity IS NULL").fetchone()[0]
    if q:
        fail(f"{q} rows without ConsumedQuantity (usage series not joined)")

    # Arrow IPC file through pyarrow: same schema, same sums, same rows.
    with pa.memory_map(spec["arrow"], "r") as src:
        table = ipc.open_file(src).read_all()
    check_schema(table.schema, "arrow")
    if table.num_rows != n_parquet:
        fail(f"arrow has {table.num_rows} rows, parquet {n_parquet}")
    rows = zip(table.column("x_TenantId").to_pylist(), table.column("BillingCurrency").to_pylist(),
               table.column("BilledCost").to_pylist())
    got = sums_by_tenant_currency(rows)
    if got != expected:
        fail(f"arrow per-tenant sums differ\n got  {sorted(got.items())}\n want {sorted(expected.items())}")

    # Rounded ledger: multiples of the minor unit that add up to rounded totals.
    rt = pq.read_table(spec["rounded"])
    check_schema(rt.schema, "rounded parquet")
    billed = rt.column("BilledCost").to_pylist()
    exact = rt.column("x_UnroundedCost").to_pylist()
    tenants = rt.column("x_TenantId").to_pylist()
    curs = rt.column("BillingCurrency").to_pylist()
    cent = Decimal("0.01")
    for b in billed:
        if b != b.quantize(cent):
            fail(f"rounded amount {b} is not a whole cent")
    by_t, by_t_exact, grand, grand_exact = {}, {}, {}, {}
    for b, e, t, c in zip(billed, exact, tenants, curs):
        by_t[(t, c)] = by_t.get((t, c), Decimal(0)) + b
        by_t_exact[(t, c)] = by_t_exact.get((t, c), Decimal(0)) + e
        grand[c] = grand.get(c, Decimal(0)) + b
        grand_exact[c] = grand_exact.get(c, Decimal(0)) + e
    if by_t_exact != expected:
        fail("rounded ledger's x_UnroundedCost sums differ from tally SQL")
    for k, v in by_t.items():
        if abs(v - by_t_exact[k]) >= cent:
            fail(f"tenant {k}: rounded total {v} is a cent or more from exact {by_t_exact[k]}")
    for c, v in grand.items():
        want = grand_exact[c].quantize(cent, rounding=ROUND_HALF_EVEN)
        if v != want:
            fail(f"{c}: rounded rows sum to {v}, rounded grand total is {want}")

    # Hive-partitioned bucket: DuckDB reads the whole tree with partition columns.
    if spec.get("partitioned"):
        d = spec["partitioned"]
        rel = con.execute(
            f"SELECT tenant, x_TenantId, BillingCurrency, sum(BilledCost)::VARCHAR, month FROM "
            f"read_parquet('{d}/**/*.parquet', hive_partitioning = true) GROUP BY ALL"
        ).fetchall()
        got = {}
        for part_t, t, c, s, month in rel:
            if str(part_t) != t:
                fail(f"partition tenant={part_t} holds rows of {t}")
            if str(month) != spec["month_start"][:7]:
                fail(f"partition month={month}")
            got[(t, c)] = Decimal(s)
        if got != expected:
            fail("partitioned per-tenant sums differ from tally SQL")

    print(f"ledger OK: {n_parquet} rows, {len(expected)} tenant/currency totals equal tally SQL exactly")


if __name__ == "__main__":
    main()
