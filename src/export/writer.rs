//! The ledger as Arrow (FOCUS 1.2 column names, money as `Decimal128(38, 9)`), and its
//! Parquet / Arrow IPC file writers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Decimal128Builder, Float64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
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
            for chunk in rows.chunks(ROW_GROUP_ROWS) {
                w.write(&ledger_batch(l, chunk)?).map_err(|e| werr("parquet", e))?;
            }
            w.into_inner().map_err(|e| werr("parquet", e))
        }
        Format::Arrow => {
            let mut w = arrow_ipc::writer::FileWriter::try_new(out, &schema).map_err(|e| werr("arrow", e))?;
            for chunk in rows.chunks(ROW_GROUP_ROWS) {
                w.write(&ledger_batch(l, chunk)?).map_err(|e| werr("arrow", e))?;
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

/// Writes `dir/month=YYYY-MM/tenant=T/ledger.<ext>`, one file per tenant; returns the files.
pub fn write_partitioned(l: &Ledger, format: Format, dir: &Path) -> Result<Vec<PathBuf>, ExportError> {
    let mut tenants: std::collections::BTreeMap<&str, Vec<&LedgerRow>> = Default::default();
    for r in &l.rows {
        tenants.entry(r.key.tenant.as_str()).or_default().push(r);
    }
    let mut files = Vec::new();
    for (t, rows) in tenants {
        let d = dir
            .join(format!("month={}", hive_escape(&l.month)))
            .join(format!("tenant={}", hive_escape(t)));
        std::fs::create_dir_all(&d).map_err(|e| werr(&d.display().to_string(), e))?;
        let p = d.join(format!("ledger.{}", format.extension()));
        let tmp = p.with_extension("tmp");
        let f = std::fs::File::create(&tmp).map_err(|e| werr(&tmp.display().to_string(), e))?;
        let f = write_rows(l, &rows, format, std::io::BufWriter::new(f))?;
        f.into_inner()
            .map_err(|e| werr(&tmp.display().to_string(), e))?
            .sync_all()
            .map_err(|e| werr(&tmp.display().to_string(), e))?;
        std::fs::rename(&tmp, &p).map_err(|e| werr(&p.display().to_string(), e))?;
        files.push(p);
    }
    Ok(files)
}
