//! The monthly ledger: exact cost per (charge period, tenant, cost center, resource, SKU,
//! currency) with the quantity consumed, named after FOCUS 1.2 columns. Labels beyond the
//! key go to `Tags` (see [`Attrs`] for what happens when series with different labels
//! share a row).
//!
//! Money is summed in `i128` nano-units and never across currencies. The ledger's total
//! per tenant and currency equals `SELECT sum(cost) FROM costs WHERE tenant = … AND ts in
//! the month` exactly (same series, same range, same arithmetic).

use std::collections::{BTreeMap, HashMap};

use super::rounding::{minor_unit_nanos, round_hierarchical};
use super::ExportError;
use crate::index::Matcher;
use crate::model::{Labels, METRIC_NAME};
use crate::query::sql::value::{date_trunc, parse_month, TruncUnit};
use crate::store::{SampleValues, SelectRequest, SeriesSource};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    Hour,
    Day,
}

impl Grain {
    pub fn parse(s: &str) -> Result<Grain, ExportError> {
        match s {
            "hour" => Ok(Grain::Hour),
            "day" => Ok(Grain::Day),
            other => Err(ExportError::Invalid(format!(
                "grain {other:?}: expected `hour` or `day`"
            ))),
        }
    }

    fn unit(self) -> TruncUnit {
        match self {
            Grain::Hour => TruncUnit::Hour,
            Grain::Day => TruncUnit::Day,
        }
    }

    fn width(self) -> i64 {
        self.unit().fixed_width().unwrap_or(86_400_000_000_000)
    }
}

#[derive(Debug, Clone)]
pub struct LedgerOptions {
    /// `YYYY-MM`.
    pub month: String,
    pub grain: Grain,
    /// Round amounts to the currency's minor unit (largest remainder).
    pub round_minor_units: bool,
    /// Restrict to one tenant (`X-Scope-OrgID`).
    pub tenant_scope: Option<String>,
    pub default_tenant: String,
    /// `x_LedgerRunId`.
    pub run_id: String,
    /// `x_SourceWatermark` (e.g. the store's durable source positions as JSON).
    pub watermark: String,
}

/// The identity of a ledger row apart from its charge period: the issue's key
/// (tenant, cost center, resource, SKU, currency). Field order is the sort order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey {
    pub tenant: String,
    pub cost_center: Option<String>,
    pub resource: Option<String>,
    pub sku: Option<String>,
    pub currency: String,
}

/// Descriptive attributes of a row that are not part of its key. When several cost
/// series fall into one row, each attribute keeps a value only if it is identical in
/// every merged series (absent counts as a value): differing `ServiceName`/`RegionId`
/// become NULL and a tag is kept only if every merged series has it with the same value.
/// Intersection is commutative and associative, so the result does not depend on the
/// order series are read in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attrs {
    pub service: Option<String>,
    pub region: Option<String>,
    pub tags: BTreeMap<String, String>,
}

impl Attrs {
    fn merge(&mut self, o: &Attrs) {
        if self.service != o.service {
            self.service = None;
        }
        if self.region != o.region {
            self.region = None;
        }
        self.tags.retain(|k, v| o.tags.get(k) == Some(v));
    }

    /// `Tags` as a JSON object with sorted keys.
    pub fn tags_json(&self) -> String {
        let m: serde_json::Map<String, serde_json::Value> = self
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::Value::Object(m).to_string()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRow {
    pub period_start: i64,
    pub period_end: i64,
    pub key: RowKey,
    pub attrs: Attrs,
    /// Exact nano-units.
    pub cost: i128,
    /// `cost` rounded to the minor unit when requested, else equal to `cost`.
    pub billed: i128,
    /// Summed usage; NULL when no usage series joined, or when the joined usage series
    /// disagree on the unit (quantities in different units are not added).
    pub quantity: Option<f64>,
    pub unit: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Ledger {
    pub billing_start: i64,
    pub billing_end: i64,
    pub month: String,
    pub run_id: String,
    pub watermark: String,
    pub rows: Vec<LedgerRow>,
    pub samples: u64,
}

const RESOURCE_LABELS: &[&str] = &["resource_id", "resource", "instance"];
const REGION_LABELS: &[&str] = &["region_id", "region"];
const SERVICE_LABELS: &[&str] = &["service"];

fn first_of(l: &Labels, names: &[&'static str]) -> (Option<String>, Option<&'static str>) {
    for n in names {
        if let Some(v) = l.get(n) {
            return (Some(v.to_string()), Some(*n));
        }
    }
    (None, None)
}

/// The ledger key of a cost series, its attributes, and the key that joins it to its
/// usage series.
fn keys_of(l: &Labels, default_tenant: &str) -> (RowKey, Attrs, String) {
    let (resource, rl) = first_of(l, RESOURCE_LABELS);
    let (region, gl) = first_of(l, REGION_LABELS);
    let (service, sl) = first_of(l, SERVICE_LABELS);
    let service = service.or_else(|| l.get("source_metric").map(str::to_string));
    let fixed = ["__name__", "tenant", "cost_center", "sku", "currency", "source_metric"];
    let mut tags = BTreeMap::new();
    for lab in l.iter() {
        let n = lab.name.as_str();
        if fixed.contains(&n) || Some(n) == rl || Some(n) == gl || Some(n) == sl {
            continue;
        }
        tags.insert(n.to_string(), lab.value.to_string());
    }
    let tenant = l.tenant().unwrap_or(default_tenant).to_string();
    let key = RowKey {
        tenant: tenant.clone(),
        cost_center: l.get("cost_center").map(str::to_string),
        resource,
        sku: l.get("sku").map(str::to_string),
        currency: l.get("currency").unwrap_or("XXX").to_string(),
    };
    let attrs = Attrs { service, region, tags };
    let join = usage_join_key(
        l,
        &tenant,
        &["__name__", "currency", "source_metric", "tenant"],
        l.get("source_metric"),
    );
    (key, attrs, join)
}

/// Usage series carry `metric`, `tenant`, `sku`, `unit` and the event's labels; cost
/// series carry `cost`, `tenant`, `sku`, `currency`, `source_metric` and the same labels.
fn usage_join_key(l: &Labels, tenant: &str, skip: &[&str], metric: Option<&str>) -> String {
    let mut s = format!("{}\u{1}{}", metric.unwrap_or(""), tenant);
    for lab in l.iter() {
        if skip.contains(&lab.name.as_str()) {
            continue;
        }
        s.push('\u{1}');
        s.push_str(&lab.name);
        s.push('=');
        s.push_str(&lab.value);
    }
    s
}

/// One ledger cell while it is being summed.
struct Cell {
    cost: i128,
    attrs: Attrs,
}

/// Usage summed into one cell; `conflict` once two joined series disagree on the unit.
struct Qty {
    sum: f64,
    unit: Option<String>,
    conflict: bool,
}

/// Builds the ledger for one month. `progress(series_done, series_total)` is called as
/// cost series are read.
pub fn build_ledger(
    src: &dyn SeriesSource,
    opts: &LedgerOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Ledger, ExportError> {
    let (start, end) = parse_month(&opts.month)
        .ok_or_else(|| ExportError::Invalid(format!("month {:?}: expected YYYY-MM", opts.month)))?;
    let matchers = [Matcher::equal(METRIC_NAME, "cost")];
    let req = SelectRequest {
        tenant: opts.tenant_scope.as_deref(),
        matchers: &matchers,
        start,
        end: end - 1,
    };
    let mut cells: BTreeMap<(RowKey, i64), Cell> = BTreeMap::new();
    let mut joins: HashMap<String, Vec<RowKey>> = HashMap::new();
    let mut usage_metrics: BTreeMap<String, ()> = BTreeMap::new();
    let stream = src.select(&req)?;
    let total = stream.size_hint().1.unwrap_or(0) as u64;
    let mut done = 0u64;
    let mut samples = 0u64;
    for s in stream {
        let s = s?;
        done += 1;
        if done % 64 == 0 {
            progress(done, total.max(done));
        }
        let SampleValues::Money(vals) = &s.values else {
            continue;
        };
        let (key, attrs, join) = keys_of(&s.labels, &opts.default_tenant);
        if let Some(scope) = &opts.tenant_scope {
            // Defence in depth: the read is already scoped; never let another tenant in.
            if &key.tenant != scope {
                continue;
            }
        }
        samples += vals.len() as u64;
        if let Some(m) = s.labels.get("source_metric") {
            usage_metrics.insert(m.to_string(), ());
        }
        let e = joins.entry(join).or_default();
        if !e.contains(&key) {
            e.push(key.clone());
        }
        let mut i = 0;
        while i < s.ts.len() {
            let p = date_trunc(opts.grain.unit(), s.ts[i]);
            let mut sum: i128 = 0;
            while i < s.ts.len() && date_trunc(opts.grain.unit(), s.ts[i]) == p {
                sum += vals[i] as i128;
                i += 1;
            }
            match cells.entry((key.clone(), p)) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(Cell {
                        cost: sum,
                        attrs: attrs.clone(),
                    });
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    let c = o.get_mut();
                    c.cost += sum;
                    c.attrs.merge(&attrs);
                }
            }
        }
    }
    progress(done, total.max(done));

    // Quantities from the usage series the costs were priced from.
    let mut qty: HashMap<(RowKey, i64), Qty> = HashMap::new();
    for m in usage_metrics.keys() {
        let um = [Matcher::equal(METRIC_NAME, m.as_str())];
        let ureq = SelectRequest {
            tenant: opts.tenant_scope.as_deref(),
            matchers: &um,
            start,
            end: end - 1,
        };
        for s in src.select(&ureq)? {
            let s = s?;
            let SampleValues::Float(vals) = &s.values else {
                continue;
            };
            let tenant = s.labels.tenant().unwrap_or(&opts.default_tenant).to_string();
            let join = usage_join_key(&s.labels, &tenant, &["__name__", "unit", "unpriced", "tenant"], Some(m));
            let Some(keys) = joins.get(&join) else {
                continue;
            };
            let unit = s.labels.get("unit").map(str::to_string);
            for (t, v) in s.ts.iter().zip(vals) {
                let p = date_trunc(opts.grain.unit(), *t);
                for k in keys {
                    let e = qty.entry((k.clone(), p)).or_insert_with(|| Qty {
                        sum: 0.0,
                        unit: unit.clone(),
                        conflict: false,
                    });
                    if e.unit != unit {
                        e.conflict = true;
                    }
                    e.sum += v;
                }
            }
        }
    }

    let width = opts.grain.width();
    let mut rows: Vec<LedgerRow> = cells
        .into_iter()
        .map(|((key, p), cell)| {
            let q = qty.remove(&(key.clone(), p)).filter(|q| !q.conflict);
            LedgerRow {
                period_start: p,
                period_end: p + width,
                key,
                attrs: cell.attrs,
                cost: cell.cost,
                billed: cell.cost,
                quantity: q.as_ref().map(|x| x.sum),
                unit: q.and_then(|x| x.unit),
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.key.tenant, a.period_start, &a.key).cmp(&(&b.key.tenant, b.period_start, &b.key)));
    if opts.round_minor_units {
        round_rows(&mut rows)?;
    }
    Ok(Ledger {
        billing_start: start,
        billing_end: end,
        month: opts.month.clone(),
        run_id: opts.run_id.clone(),
        watermark: opts.watermark.clone(),
        rows,
        samples,
    })
}

/// Per currency: rows sum exactly to their tenant's rounded total, tenants to the
/// rounded grand total.
fn round_rows(rows: &mut [LedgerRow]) -> Result<(), ExportError> {
    let mut currencies: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        currencies.entry(r.key.currency.clone()).or_default().push(i);
    }
    for (cur, idx) in currencies {
        let mut tenants: BTreeMap<&str, usize> = BTreeMap::new();
        for &i in &idx {
            let n = tenants.len();
            tenants.entry(rows[i].key.tenant.as_str()).or_insert(n);
        }
        let parts: Vec<(usize, i128)> = idx
            .iter()
            .map(|&i| {
                (
                    tenants.get(rows[i].key.tenant.as_str()).copied().unwrap_or(0),
                    rows[i].cost,
                )
            })
            .collect();
        let ngroups = tenants.len();
        let rounded = round_hierarchical(&parts, ngroups, minor_unit_nanos(&cur))
            .map_err(|e| ExportError::Invalid(format!("rounding {cur}: {e}")))?;
        for (&i, v) in idx.iter().zip(rounded) {
            rows[i].billed = v;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::rounding::round_half_even;
    use crate::model::{LabelLimits, SeriesKind};
    use crate::store::{ReadError, SeriesSamples, SeriesStream};
    use proptest::prelude::*;

    const DAY: i64 = 86_400_000_000_000;

    /// Series in the order given (not sorted: the ledger must not depend on read order).
    struct Mem(Vec<SeriesSamples>);

    impl SeriesSource for Mem {
        fn select<'a>(&'a self, req: &SelectRequest<'a>) -> Result<SeriesStream<'a>, ReadError> {
            let r = *req;
            let it = self.0.iter().filter_map(move |s| {
                if !r
                    .matchers
                    .iter()
                    .all(|m| m.matches(s.labels.get(&m.name).unwrap_or("")))
                {
                    return None;
                }
                if r.tenant.is_some_and(|t| s.labels.tenant().unwrap_or("default") != t) {
                    return None;
                }
                let idx: Vec<usize> = (0..s.ts.len())
                    .filter(|&i| s.ts[i] >= r.start && s.ts[i] <= r.end)
                    .collect();
                if idx.is_empty() {
                    return None;
                }
                let values = match &s.values {
                    SampleValues::Money(v) => SampleValues::Money(idx.iter().map(|&i| v[i]).collect()),
                    SampleValues::Float(v) => SampleValues::Float(idx.iter().map(|&i| v[i]).collect()),
                };
                Some(Ok(SeriesSamples {
                    labels: s.labels.clone(),
                    kind: s.kind,
                    ts: idx.iter().map(|&i| s.ts[i]).collect(),
                    values,
                }))
            });
            Ok(Box::new(it))
        }

        fn label_names(&self, _: Option<&str>, _: &[Matcher], _: i64, _: i64) -> Result<Vec<String>, ReadError> {
            Ok(vec![])
        }

        fn label_values(
            &self,
            _: Option<&str>,
            _: &str,
            _: &[Matcher],
            _: i64,
            _: i64,
        ) -> Result<Vec<String>, ReadError> {
            Ok(vec![])
        }
    }

    fn money(pairs: &[(&str, &str)], samples: &[(i64, i64)]) -> SeriesSamples {
        let mut p: Vec<(&str, &str)> = vec![("__name__", "cost")];
        p.extend_from_slice(pairs);
        SeriesSamples {
            labels: Labels::from_pairs(p, &LabelLimits::default()).unwrap(),
            kind: SeriesKind::MONEY,
            ts: samples.iter().map(|s| s.0).collect(),
            values: SampleValues::Money(samples.iter().map(|s| s.1).collect()),
        }
    }

    fn usage(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> SeriesSamples {
        SeriesSamples {
            labels: Labels::from_pairs(pairs.to_vec(), &LabelLimits::default()).unwrap(),
            kind: SeriesKind::GAUGE,
            ts: samples.iter().map(|s| s.0).collect(),
            values: SampleValues::Float(samples.iter().map(|s| s.1).collect()),
        }
    }

    fn opts(round: bool) -> LedgerOptions {
        LedgerOptions {
            month: "2026-10".into(),
            grain: Grain::Day,
            round_minor_units: round,
            tenant_scope: None,
            default_tenant: "default".into(),
            run_id: "lr-test".into(),
            watermark: "{}".into(),
        }
    }

    fn oct(day: i64, hour: i64) -> i64 {
        parse_month("2026-10").unwrap().0 + (day - 1) * DAY + hour * 3_600_000_000_000
    }

    #[test]
    fn series_differing_in_extra_labels_share_one_row_with_common_tags() {
        let base = [
            ("tenant", "acme"),
            ("cost_center", "cc1"),
            ("instance", "i-1"),
            ("sku", "m5"),
            ("currency", "USD"),
            ("source_metric", "cpu_hours"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            v
        };
        let a = money(
            &with(&[("team", "core"), ("pod", "a"), ("region", "eu")]),
            &[(oct(2, 1), 1_000_000_001), (oct(3, 0), 5)],
        );
        let b = money(
            &with(&[("team", "core"), ("pod", "b"), ("region", "us")]),
            &[(oct(2, 5), 2_000_000_002)],
        );
        let c = money(
            &with(&[("team", "core"), ("pod", "c"), ("region", "us")]),
            &[(oct(3, 1), 7)],
        );
        let ua = usage(
            &[
                ("__name__", "cpu_hours"),
                ("tenant", "acme"),
                ("cost_center", "cc1"),
                ("instance", "i-1"),
                ("sku", "m5"),
                ("unit", "h"),
                ("team", "core"),
                ("pod", "a"),
                ("region", "eu"),
            ],
            &[(oct(2, 1), 1.5)],
        );
        let ub = usage(
            &[
                ("__name__", "cpu_hours"),
                ("tenant", "acme"),
                ("cost_center", "cc1"),
                ("instance", "i-1"),
                ("sku", "m5"),
                ("unit", "h"),
                ("team", "core"),
                ("pod", "b"),
                ("region", "us"),
            ],
            &[(oct(2, 5), 2.0)],
        );
        for order in [
            vec![a.clone(), b.clone(), c.clone(), ua.clone(), ub.clone()],
            vec![c.clone(), b.clone(), a.clone(), ub.clone(), ua.clone()],
        ] {
            let l = build_ledger(&Mem(order), &opts(false), &mut |_, _| {}).unwrap();
            assert_eq!(l.rows.len(), 2, "{:#?}", l.rows);
            let d2 = &l.rows[0];
            assert_eq!(d2.period_start, oct(2, 0));
            assert_eq!(d2.cost, 3_000_000_003);
            assert_eq!(d2.attrs.tags_json(), r#"{"team":"core"}"#);
            assert_eq!(d2.attrs.region, None, "eu and us differ");
            assert_eq!(d2.attrs.service.as_deref(), Some("cpu_hours"));
            assert_eq!(d2.key.resource.as_deref(), Some("i-1"));
            assert_eq!((d2.quantity, d2.unit.as_deref()), (Some(3.5), Some("h")));
            let d3 = &l.rows[1];
            assert_eq!(d3.cost, 12);
            assert_eq!(d3.attrs.region, None, "eu (a) and us (c) differ on day 3");
            assert_eq!(d3.attrs.tags_json(), r#"{"team":"core"}"#);
            assert_eq!(d3.quantity, None);
        }
        // A single series keeps all its labels.
        let l = build_ledger(&Mem(vec![b]), &opts(false), &mut |_, _| {}).unwrap();
        assert_eq!(l.rows[0].attrs.tags_json(), r#"{"pod":"b","team":"core"}"#);
        assert_eq!(l.rows[0].attrs.region.as_deref(), Some("us"));
    }

    #[test]
    fn usage_in_different_units_is_not_added() {
        let key = [("tenant", "t"), ("instance", "i"), ("sku", "s"), ("currency", "USD")];
        let mut ca = key.to_vec();
        ca.extend([("source_metric", "m"), ("disk", "a")]);
        let mut cb = key.to_vec();
        cb.extend([("source_metric", "m"), ("disk", "b")]);
        let mut ua = key[..3].to_vec();
        ua.extend([("__name__", "m"), ("disk", "a"), ("unit", "GB")]);
        let mut ub = key[..3].to_vec();
        ub.extend([("__name__", "m"), ("disk", "b"), ("unit", "TB")]);
        let src = Mem(vec![
            money(&ca, &[(oct(1, 0), 10)]),
            money(&cb, &[(oct(1, 1), 20)]),
            usage(&ua, &[(oct(1, 0), 1.0)]),
            usage(&ub, &[(oct(1, 1), 1.0)]),
        ]);
        let l = build_ledger(&src, &opts(false), &mut |_, _| {}).unwrap();
        assert_eq!(l.rows.len(), 1);
        assert_eq!(l.rows[0].cost, 30);
        assert_eq!((l.rows[0].quantity, l.rows[0].unit.as_deref()), (None, None));
    }

    /// (tenant, cost center, resource, sku, JPY?, extra label value, [(minute of month, nanos)])
    type SeriesSpec = (usize, usize, usize, usize, bool, usize, Vec<(i64, i64)>);

    fn arb_series() -> impl Strategy<Value = Vec<SeriesSpec>> {
        prop::collection::vec(
            (
                0usize..3,
                0usize..3,
                0usize..3,
                0usize..2,
                prop::bool::weighted(0.2),
                0usize..3,
                prop::collection::vec((-2_000i64..46_000, -3_000_000_000i64..9_000_000_000), 1..12),
            ),
            1..24,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// One row per key and period; per tenant and currency the rows sum exactly to the
        /// samples in the month; rounded rows are whole minor units that sum exactly to the
        /// rounded grand total and within a unit of each tenant's exact total; and the result
        /// does not depend on the order the series are read in.
        #[test]
        fn ledger_rows_are_keyed_exact_and_round_consistently(spec in arb_series(), round in any::<bool>()) {
            let (start, end) = parse_month("2026-10").unwrap();
            let minute = 60_000_000_000i64;
            let mut series = Vec::new();
            let mut exact: BTreeMap<(String, String), i128> = BTreeMap::new();
            for (n, (t, cc, r, sku, jpy, extra, samples)) in spec.iter().enumerate() {
                let tenant = format!("t{t}");
                let cur = if *jpy { "JPY" } else { "USD" };
                let (ccs, rs, skus, ex, nn) = (format!("cc{cc}"), format!("r{r}"), format!("s{sku}"), format!("x{extra}"), format!("{n}"));
                let mut pts: Vec<(i64, i64)> = samples.iter().map(|(m, v)| (start + m * minute, *v)).collect();
                pts.sort_by_key(|p| p.0);
                pts.dedup_by_key(|p| p.0);
                for (ts, v) in &pts {
                    if *ts >= start && *ts < end {
                        *exact.entry((tenant.clone(), cur.to_string())).or_default() += *v as i128;
                    }
                }
                series.push(money(
                    &[("tenant", tenant.as_str()), ("cost_center", ccs.as_str()), ("resource", rs.as_str()),
                      ("sku", skus.as_str()), ("currency", cur), ("extra", ex.as_str()), ("series", nn.as_str())],
                    &pts,
                ));
            }
            let l = build_ledger(&Mem(series.clone()), &opts(round), &mut |_, _| {}).unwrap();
            let mut keys = std::collections::BTreeSet::new();
            let mut got: BTreeMap<(String, String), i128> = BTreeMap::new();
            let mut billed_t: BTreeMap<(String, String), i128> = BTreeMap::new();
            let mut grand_exact: BTreeMap<String, i128> = BTreeMap::new();
            let mut grand_billed: BTreeMap<String, i128> = BTreeMap::new();
            for r in &l.rows {
                prop_assert!(keys.insert((r.period_start, r.key.clone())), "duplicate key {:?}", r.key);
                prop_assert!(r.period_start >= start && r.period_end <= end);
                let tk = (r.key.tenant.clone(), r.key.currency.clone());
                *got.entry(tk.clone()).or_default() += r.cost;
                *billed_t.entry(tk).or_default() += r.billed;
                *grand_exact.entry(r.key.currency.clone()).or_default() += r.cost;
                *grand_billed.entry(r.key.currency.clone()).or_default() += r.billed;
                if round {
                    let unit = minor_unit_nanos(&r.key.currency);
                    prop_assert_eq!(r.billed % unit, 0);
                    prop_assert!((r.billed - r.cost).abs() < unit);
                } else {
                    prop_assert_eq!(r.billed, r.cost);
                }
            }
            prop_assert_eq!(&got, &exact);
            if round {
                for (c, g) in &grand_exact {
                    let unit = minor_unit_nanos(c);
                    prop_assert_eq!(grand_billed[c], round_half_even(*g, unit));
                }
                for (k, b) in &billed_t {
                    prop_assert!((b - got[k]).abs() < minor_unit_nanos(&k.1), "tenant {:?} off by a unit", k);
                }
            }
            let mut rev = series;
            rev.reverse();
            let l2 = build_ledger(&Mem(rev), &opts(round), &mut |_, _| {}).unwrap();
            prop_assert_eq!(&l.rows, &l2.rows);
        }
    }
}
