//! Query results and their renderings: Arrow (record batch / IPC stream), JSON, CSV and
//! an aligned text table. DECIMAL is exact everywhere: Arrow `Decimal128(38, 9)`, and
//! strings in JSON and CSV.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Decimal128Builder, DurationNanosecondBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampNanosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};

use super::plan;
use super::value::{Type, Val};
use super::SqlError;

#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub columns: Vec<(String, Type)>,
    pub rows: Vec<Vec<Val>>,
}

pub fn arrow_type(t: Type) -> DataType {
    match t {
        Type::Bool => DataType::Boolean,
        Type::Int => DataType::Int64,
        Type::Float => DataType::Float64,
        Type::Dec => DataType::Decimal128(38, 9),
        Type::Ts => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        Type::Interval => DataType::Duration(TimeUnit::Nanosecond),
        Type::Str | Type::Null => DataType::Utf8,
    }
}

fn arrow_err(e: impl std::fmt::Display) -> SqlError {
    SqlError::Exec(format!("arrow: {e}"))
}

impl QueryResult {
    pub fn schema(&self) -> Arc<Schema> {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|(n, t)| Field::new(n, arrow_type(*t), true))
                .collect::<Vec<_>>(),
        ))
    }

    pub fn to_record_batch(&self) -> Result<RecordBatch, SqlError> {
        let n = self.rows.len();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for (ci, (_, t)) in self.columns.iter().enumerate() {
            let vals = self.rows.iter().map(|r| r.get(ci).unwrap_or(&Val::Null));
            let a: ArrayRef = match t {
                Type::Bool => {
                    let mut b = BooleanBuilder::with_capacity(n);
                    vals.for_each(|v| b.append_option(v.truth()));
                    Arc::new(b.finish())
                }
                Type::Int => {
                    let mut b = Int64Builder::with_capacity(n);
                    vals.for_each(|v| b.append_option(if let Val::Int(i) = v { Some(*i) } else { None }));
                    Arc::new(b.finish())
                }
                Type::Float => {
                    let mut b = Float64Builder::with_capacity(n);
                    vals.for_each(|v| b.append_option(v.as_f64()));
                    Arc::new(b.finish())
                }
                Type::Dec => {
                    let mut b = Decimal128Builder::with_capacity(n);
                    vals.for_each(|v| b.append_option(if let Val::Dec(d) = v { Some(*d) } else { None }));
                    Arc::new(b.finish().with_precision_and_scale(38, 9).map_err(arrow_err)?)
                }
                Type::Ts => {
                    let mut b = TimestampNanosecondBuilder::with_capacity(n);
                    vals.for_each(|v| b.append_option(if let Val::Ts(t) = v { Some(*t) } else { None }));
                    Arc::new(b.finish().with_timezone("UTC"))
                }
                Type::Interval => {
                    let mut b = DurationNanosecondBuilder::with_capacity(n);
                    vals.for_each(|v| b.append_option(if let Val::Interval(t) = v { Some(*t) } else { None }));
                    Arc::new(b.finish())
                }
                Type::Str | Type::Null => {
                    let mut b = StringBuilder::with_capacity(n, n * 8);
                    vals.for_each(|v| match v {
                        Val::Null => b.append_null(),
                        v => b.append_value(v.to_string()),
                    });
                    Arc::new(b.finish())
                }
            };
            arrays.push(a);
        }
        RecordBatch::try_new(self.schema(), arrays).map_err(arrow_err)
    }

    /// An Arrow IPC stream (`application/vnd.apache.arrow.stream`).
    pub fn to_arrow_stream(&self) -> Result<Vec<u8>, SqlError> {
        let batch = self.to_record_batch()?;
        let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &batch.schema()).map_err(arrow_err)?;
        w.write(&batch).map_err(arrow_err)?;
        w.finish().map_err(arrow_err)?;
        w.into_inner().map_err(arrow_err)
    }

    /// `{"columns":[{"name","type"}],"rows":[[...]]}`; DECIMAL as exact strings,
    /// timestamps as RFC 3339 strings.
    pub fn to_json(&self) -> serde_json::Value {
        let columns: Vec<serde_json::Value> = self
            .columns
            .iter()
            .map(|(n, t)| serde_json::json!({"name": n, "type": t.sql_name()}))
            .collect();
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| serde_json::Value::Array(r.iter().map(json_val).collect()))
            .collect();
        serde_json::json!({"columns": columns, "rows": rows})
    }

    pub fn to_csv(&self) -> String {
        let mut s = String::new();
        let header: Vec<String> = self.columns.iter().map(|(n, _)| csv_field(n)).collect();
        s.push_str(&header.join(","));
        s.push('\n');
        for r in &self.rows {
            let f: Vec<String> = r.iter().map(|v| csv_field(&v.to_string())).collect();
            s.push_str(&f.join(","));
            s.push('\n');
        }
        s
    }

    /// An aligned text table (numbers right-aligned), with a row count.
    pub fn to_table(&self) -> String {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|v| if v.is_null() { "NULL".into() } else { v.to_string() })
                    .collect()
            })
            .collect();
        let mut w: Vec<usize> = self.columns.iter().map(|(n, _)| n.chars().count()).collect();
        for r in &cells {
            for (i, c) in r.iter().enumerate() {
                if let Some(x) = w.get_mut(i) {
                    *x = (*x).max(c.chars().count());
                }
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, vals: &[String], right: &[bool]| {
            let f: Vec<String> = vals
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    if right.get(i).copied().unwrap_or(false) {
                        format!("{v:>width$}", width = w[i])
                    } else {
                        format!("{v:<width$}", width = w[i])
                    }
                })
                .collect();
            out.push_str(f.join(" | ").trim_end());
            out.push('\n');
        };
        let names: Vec<String> = self.columns.iter().map(|c| c.0.clone()).collect();
        let right: Vec<bool> = self
            .columns
            .iter()
            .map(|(_, t)| matches!(t, Type::Int | Type::Float | Type::Dec))
            .collect();
        line(&mut out, &names, &[]);
        let sep: Vec<String> = w.iter().map(|n| "-".repeat(*n)).collect();
        out.push_str(&sep.join("-+-"));
        out.push('\n');
        for r in &cells {
            line(&mut out, r, &right);
        }
        out.push_str(&format!(
            "({} row{})\n",
            cells.len(),
            if cells.len() == 1 { "" } else { "s" }
        ));
        out
    }
}

impl QueryResult {
    /// Reads back [`QueryResult::to_json`] (used by the CLI against a server).
    pub fn from_json(v: &serde_json::Value) -> Option<QueryResult> {
        use super::value::{parse_number, parse_timestamp};
        let mut columns = Vec::new();
        for c in v.get("columns")?.as_array()? {
            let name = c.get("name")?.as_str()?.to_string();
            let ty = match c.get("type")?.as_str()? {
                "BOOLEAN" => Type::Bool,
                "BIGINT" => Type::Int,
                "DOUBLE" => Type::Float,
                "DECIMAL(38,9)" => Type::Dec,
                "TIMESTAMP" => Type::Ts,
                "INTERVAL" => Type::Interval,
                _ => Type::Str,
            };
            columns.push((name, ty));
        }
        let mut rows = Vec::new();
        for r in v.get("rows")?.as_array()? {
            let mut row = Vec::new();
            for (i, x) in r.as_array()?.iter().enumerate() {
                let ty = columns.get(i).map_or(Type::Str, |c| c.1);
                row.push(match (ty, x) {
                    (_, serde_json::Value::Null) => Val::Null,
                    (Type::Bool, serde_json::Value::Bool(b)) => Val::Bool(*b),
                    (Type::Int, x) => x.as_i64().map_or(Val::Null, Val::Int),
                    (Type::Interval, x) => x.as_i64().map_or(Val::Null, Val::Interval),
                    (Type::Float, x) => x.as_f64().map_or(Val::Null, Val::Float),
                    (Type::Dec, serde_json::Value::String(s)) => {
                        parse_number(s).map_or(Val::Null, |v| v.cast_to(Type::Dec))
                    }
                    (Type::Ts, serde_json::Value::String(s)) => parse_timestamp(s).map_or(Val::Null, Val::Ts),
                    (_, serde_json::Value::String(s)) => Val::str(s),
                    (_, other) => Val::str(&other.to_string()),
                });
            }
            rows.push(row);
        }
        Some(QueryResult { columns, rows })
    }
}

fn json_val(v: &Val) -> serde_json::Value {
    match v {
        Val::Null => serde_json::Value::Null,
        Val::Bool(b) => (*b).into(),
        Val::Int(i) => (*i).into(),
        Val::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, serde_json::Value::Number),
        Val::Interval(i) => (*i).into(),
        other => other.to_string().into(),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn show_tables() -> QueryResult {
    QueryResult {
        columns: vec![("name".into(), Type::Str)],
        rows: vec![vec![Val::str("costs")], vec![Val::str("samples")]],
    }
}

pub fn describe(s: &plan::Schema) -> QueryResult {
    QueryResult {
        columns: vec![("column_name".into(), Type::Str), ("column_type".into(), Type::Str)],
        rows: s
            .columns
            .iter()
            .map(|(n, _, t)| vec![Val::str(n), Val::str(t.sql_name())])
            .collect(),
    }
}
