//! SQL over the store: a small analytic subset for chargeback ("who spent what").
//!
//! Pipeline: [`sqlparser`] parses the text; [`bind`] turns the AST into a typed
//! expression IR over the tables `samples` and `costs` (anything outside the subset is an
//! [`SqlError::Unsupported`] naming the construct and its position); [`plan`] pushes time,
//! tenant and label predicates into [`SelectRequest`](crate::store::SelectRequest)s; [`exec`]
//! evaluates expressions vectorised per series chunk (label columns are constants of a
//! chunk, so label filters and label group keys cost O(1) per series); [`agg`] holds the
//! exact accumulators (DECIMAL sums in `i128` nano-units — never through f64); [`output`]
//! renders results as Arrow, JSON, CSV or an aligned table.

pub mod agg;
pub mod bind;
pub mod bind_expr;
pub mod exec;
pub mod expr;
pub mod output;
pub mod plan;
pub mod value;

use std::time::Duration;

use crate::store::{ReadError, SeriesSource};

pub use output::QueryResult;
pub use value::{Type, Val};

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("SQL syntax error: {0}")]
    Parse(String),
    #[error("unsupported SQL: {construct}{pos}")]
    Unsupported { construct: String, pos: String },
    #[error("{msg}{pos}")]
    Bind { msg: String, pos: String },
    #[error("query error: {0}")]
    Exec(String),
    #[error("query limit exceeded: {0}")]
    Limit(String),
    #[error("storage error: {0}")]
    Read(#[from] ReadError),
}

impl SqlError {
    /// True when the client sent something wrong (HTTP 400), as opposed to a limit (422)
    /// or a storage failure (500).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            SqlError::Parse(_) | SqlError::Unsupported { .. } | SqlError::Bind { .. } | SqlError::Exec(_)
        )
    }
}

/// Resource limits of one query.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rows_scanned: u64,
    /// Approximate bytes of materialised result rows and group state.
    pub max_memory_bytes: usize,
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rows_scanned: 2_000_000_000,
            max_memory_bytes: 1 << 30,
            timeout: Duration::from_secs(300),
        }
    }
}

/// Per-query context.
#[derive(Debug, Clone)]
pub struct QueryOptions {
    /// With `Some`, every read is restricted to this tenant, whatever the SQL says.
    pub tenant_scope: Option<String>,
    /// Tenant of series without a `tenant` label.
    pub default_tenant: String,
    /// What `now()` means (UTC ns).
    pub now_ns: i64,
    pub limits: Limits,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            tenant_scope: None,
            default_tenant: "default".to_string(),
            now_ns: crate::store::now_ns(),
            limits: Limits::default(),
        }
    }
}

/// Statistics of one execution (for benchmarks, tests and logs).
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecStats {
    pub selects: usize,
    pub series: u64,
    pub rows_scanned: u64,
}

/// Parses, plans and runs one statement.
pub fn execute(src: &dyn SeriesSource, sql: &str, opts: &QueryOptions) -> Result<QueryResult, SqlError> {
    execute_with_stats(src, sql, opts).map(|(r, _)| r)
}

pub fn execute_with_stats(
    src: &dyn SeriesSource,
    sql: &str,
    opts: &QueryOptions,
) -> Result<(QueryResult, ExecStats), SqlError> {
    let stmt = bind::parse(sql)?;
    match stmt {
        bind::Statement::ShowTables => Ok((output::show_tables(), ExecStats::default())),
        bind::Statement::Describe(table) => {
            let schema = plan::discover_schema(src, table, opts)?;
            Ok((output::describe(&schema), ExecStats::default()))
        }
        bind::Statement::Query(q) => {
            let schema = plan::discover_schema(src, q.table, opts)?;
            let query = bind::bind_query(&q, &schema, opts)?;
            let plan = plan::plan(&query, opts)?;
            exec::run(src, &query, &plan, opts)
        }
    }
}
