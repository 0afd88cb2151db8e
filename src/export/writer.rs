//! The ledger as Arrow (FOCUS 1.2 column names, money as `Decimal128(38, 9)`), and its
//! Parquet / Arrow IPC file writers.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Decimal128Builder, Float64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::ledger::{Ledger, LedgerRow};
use super::ExportError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    /// Arrow IPC file format (`.arrow`, readable with `pyarrow.ipc.open_file`).
    Arrow,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, ExportError> {
        match s {
            "parquet" => Ok(Format::Parquet),
            "arrow" => Ok(Format::Arrow),
            other => Err(ExportError::Invalid(format!(
                "format {other:?}: expected `parquet` or `arrow`"
            ))),
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Arrow => "arrow",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Parquet => "application/vnd.apache.parquet",
            Format::Arrow => "application/vnd.apache.arrow.file",
        }
    }
}

/// Parquet row groups of this many rows (a month of hourly rows for ~100 resources).
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Microseconds: period bounds are whole hours, and Spark/Trino read `TIMESTAMP(MICROS)` natively.
fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The documented ledger schema, in column order.
pub fn ledger_schema() -> Arc<Schema> {
    let dec = DataType::Decimal128(38, 9);
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    Arc::new(Schema::new(vec![
        Field::new("BillingPeriodStart", ts_type(), false),
        Field::new("BillingPeriodEnd", ts_type(), false),
        Field::new("ChargePeriodStart", ts_type(), false),
        Field::new("ChargePeriodEnd", ts_type(), false),
        s("ChargeCategory", false),
        Field::new("BilledCost", dec.clone(), false),
        Field::new("EffectiveCost", dec.clone(), false),
        Field::new("ListCost", dec.clone(), false),
        Field::new("ContractedCost", dec.clone(), false),
        s("BillingCurrency", false),
        s("ServiceName", true),
        s("SkuId", true),
        Field::new("PricingQuantity", DataType::Float64, true),
        s("PricingUnit", true),
        Field::new("ConsumedQuantity", DataType::Float64, true),
        s("ConsumedUnit", true),
        s("ResourceId", true),
        s("RegionId", true),
        s("SubAccountId", false),
        s("Tags", false),
        s("x_TenantId", false),
        s("x_CostCenter", true),
        s("x_LedgerRunId", false),
        s("x_SourceWatermark", false),
        Field::new("x_UnroundedCost", dec, false),
    ]))
}

fn werr(what: &str, e: impl std::fmt::Display) -> ExportError {
    ExportError::Write {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

/// The ledger rows (or a subset) as one record batch.
pub fn ledger_batch(l: &Ledger, rows: &[&LedgerRow]) -> Result<RecordBatch, ExportError> {
    let n = rows.len();
    let ts = |f: &dyn Fn(&LedgerRow) -> i64| -> ArrayRef {
        let mut b = TimestampMicrosecondBuilder::with_capacity(n);
        rows.iter().for_each(|r| b.append_value(f(r).div_euclid(1000)));
        Arc::new(b.finish().with_timezone("UTC"))
    };
    let dec = |f: &dyn Fn(&LedgerRow) -> i128| -> Result<ArrayRef, ExportError> {
        let mut b = Decimal128Builder::with_capacity(n);
        rows.iter().for_each(|r| b.append_value(f(r)));
        Ok(Arc::new(
            b.finish()
                .with_precision_and_scale(38, 9)
                .map_err(|e| werr("decimal column", e))?,
        ))
    };
    let st = |f: &dyn Fn(&LedgerRow) -> Option<String>| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 16);
        rows.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish())
    };
    let fl = |f: &dyn Fn(&LedgerRow) -> Option<f64>| -> ArrayRef {
        let mut b = Float64Builder::with_capacity(n);
        rows.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish())
    };
    let cols: Vec<ArrayRef> = vec![
        ts(&|_| l.billing_start),
        ts(&|_| l.billing_end),
        ts(&|r| r.period_start),
        ts(&|r| r.period_end),
        st(&|_| Some("Usage".into())),
        dec(&|r| r.billed)?,
        dec(&|r| r.billed)?,
        dec(&|r| r.billed)?,
        dec(&|r| r.billed)?,
        st(&|r| Some(r.key.currency.clone())),
        st(&|r| r.attrs.service.clone()),
        st(&|r| r.key.sku.clone()),
        fl(&|r| r.quantity),
        st(&|r| r.unit.clone()),
        fl(&|r| r.quantity),
        st(&|r| r.unit.clone()),
        st(&|r| r.key.resource.clone()),
        st(&|r| r.attrs.region.clone()),
        st(&|r| Some(r.key.tenant.clone())),
        st(&|r| Some(r.attrs.tags_json())),
        st(&|r| Some(r.key.tenant.clone())),
        st(&|r| r.key.cost_center.clone()),
        st(&|_| Some(l.run_id.clone())),
        st(&|_| Some(l.watermark.clone())),
        dec(&|r| r.cost)?,
    ];
    RecordBatch::try_new(ledger_schema(), cols).map_err(|e| werr("ledger batch", e))
}

/// Writes rows as one Parquet or Arrow IPC file to `out`.
pub fn write_rows<W: Write + Send>(l: &Ledger, rows: &[&LedgerRow], format: Format, out: W) -> Result<W, ExportError> {
    let batches = rows
        .chunks(ROW_GROUP_ROWS)
        .map(|c| ledger_batch(l, c))
        .collect::<Result<Vec<_>, _>>()?;
    write_batches(&batches, format, out)
}

/// Writes ledger record batches as one Parquet (zstd, page statistics, [`ROW_GROUP_ROWS`]
/// row groups) or Arrow IPC file.
pub fn write_batches<W: Write + Send>(batches: &[RecordBatch], format: Format, out: W) -> Result<W, ExportError> {
    let schema = ledger_schema();
    match format {
        Format::Parquet => {
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(
                    ZstdLevel::try_new(3).map_err(|e| werr("zstd level", e))?,
                ))
                .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                .set_statistics_enabled(EnabledStatistics::Page)
                .set_created_by(format!("tally {}", env!("CARGO_PKG_VERSION")))
                .build();
            let mut w = ArrowWriter::try_new(out, schema, Some(props)).map_err(|e| werr("parquet", e))?;
            for b in batches {
                w.write(b).map_err(|e| werr("parquet", e))?;
            }
            w.into_inner().map_err(|e| werr("parquet", e))
        }
        Format::Arrow => {
            let mut w = arrow_ipc::writer::FileWriter::try_new(out, &schema).map_err(|e| werr("arrow", e))?;
            for b in batches {
                w.write(b).map_err(|e| werr("arrow", e))?;
            }
            w.finish().map_err(|e| werr("arrow", e))?;
            w.into_inner().map_err(|e| werr("arrow", e))
        }
    }
}

/// Writes the whole ledger as one file.
pub fn write_ledger<W: Write + Send>(l: &Ledger, format: Format, out: W) -> Result<W, ExportError> {
    let rows: Vec<&LedgerRow> = l.rows.iter().collect();
    write_rows(l, &rows, format, out)
}

/// Hive-style partition value: safe characters kept, others percent-encoded.
fn hive_escape(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// `dir/month=YYYY-MM/tenant=T/ledger.<ext>`.
pub fn partition_file(dir: &Path, month: &str, tenant: &str, format: Format) -> PathBuf {
    dir.join(format!("month={}", hive_escape(month)))
        .join(format!("tenant={}", hive_escape(tenant)))
        .join(format!("ledger.{}", format.extension()))
}

/// Writes a file through a temporary name, fsynced, then renamed into place.
fn write_file(p: &Path, batches: &[RecordBatch], format: Format) -> Result<(), ExportError> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(|e| werr(&d.display().to_string(), e))?;
    }
    let tmp = p.with_extension("tmp");
    let f = std::fs::File::create(&tmp).map_err(|e| werr(&tmp.display().to_string(), e))?;
    let f = write_batches(batches, format, std::io::BufWriter::new(f))?;
    f.into_inner()
        .map_err(|e| werr(&tmp.display().to_string(), e))?
        .sync_all()
        .map_err(|e| werr(&tmp.display().to_string(), e))?;
    std::fs::rename(&tmp, p).map_err(|e| werr(&p.display().to_string(), e))
}

/// Writes `dir/month=YYYY-MM/tenant=T/ledger.<ext>`, one file per tenant; returns the files.
pub fn write_partitioned(l: &Ledger, format: Format, dir: &Path) -> Result<Vec<PathBuf>, ExportError> {
    let mut tenants: BTreeMap<&str, Vec<&LedgerRow>> = BTreeMap::new();
    for r in &l.rows {
        tenants.entry(r.key.tenant.as_str()).or_default().push(r);
    }
    let mut files = Vec::new();
    for (t, rows) in tenants {
        let batches = rows
            .chunks(ROW_GROUP_ROWS)
            .map(|c| ledger_batch(l, c))
            .collect::<Result<Vec<_>, _>>()?;
        let p = partition_file(dir, &l.month, t, format);
        write_file(&p, &batches, format)?;
        files.push(p);
    }
    Ok(files)
}

/// Reads a ledger Arrow IPC file (as served by `GET /api/v1/export/ledger?format=arrow`),
/// checking that it has the ledger schema.
pub fn read_arrow_ledger(bytes: &[u8]) -> Result<Vec<RecordBatch>, ExportError> {
    let bad = |e: &dyn std::fmt::Display| ExportError::Invalid(format!("not a tally ledger Arrow file: {e}"));
    let r = arrow_ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes), None).map_err(|e| bad(&e))?;
    let want = ledger_schema();
    if r.schema().fields() != want.fields() {
        return Err(bad(
            &"its columns differ from the ledger schema (server of another version?)",
        ));
    }
    let mut out = Vec::new();
    for b in r {
        let b = b.map_err(|e| bad(&e))?;
        // Re-attach the canonical schema (drops any reader-side metadata differences).
        out.push(RecordBatch::try_new(want.clone(), b.columns().to_vec()).map_err(|e| bad(&e))?);
    }
    Ok(out)
}

/// Splits ledger batches by `x_TenantId` (consecutive runs become zero-copy slices).
pub fn split_by_tenant(batches: &[RecordBatch]) -> Result<BTreeMap<String, Vec<RecordBatch>>, ExportError> {
    let mut out: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
    for b in batches {
        let col = b
            .column_by_name("x_TenantId")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| ExportError::Invalid("ledger batch without a text x_TenantId column".into()))?;
        let mut i = 0;
        while i < col.len() {
            if col.is_null(i) {
                return Err(ExportError::Invalid("ledger row without x_TenantId".into()));
            }
            let t = col.value(i);
            let mut j = i + 1;
            while j < col.len() && !col.is_null(j) && col.value(j) == t {
                j += 1;
            }
            out.entry(t.to_string()).or_default().push(b.slice(i, j - i));
            i = j;
        }
    }
    Ok(out)
}

/// [`write_partitioned`] for ledger batches (e.g. downloaded from a server).
pub fn write_partitioned_batches(
    month: &str,
    batches: &[RecordBatch],
    format: Format,
    dir: &Path,
) -> Result<Vec<PathBuf>, ExportError> {
    let mut files = Vec::new();
    for (t, bs) in split_by_tenant(batches)? {
        let p = partition_file(dir, month, &t, format);
        write_file(&p, &bs, format)?;
        files.push(p);
    }
    Ok(files)
}
