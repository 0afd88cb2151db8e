//! `POST /api/v1/sql` and `GET /api/v1/export/ledger`.
//!
//! With `X-Scope-OrgID` or a tenant-scoped bearer token ([`auth`]), every query
//! (including `SHOW TABLES` / `DESCRIBE`) and every export is restricted to that tenant,
//! whatever the SQL says.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{auth, AppState};
use crate::export::{self, Format, Grain, LedgerOptions};
use crate::query::sql::{self, QueryOptions, SqlError};
use crate::store::Store;

pub const SCOPE_HEADER: &str = auth::SCOPE_HEADER;
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/sql", post(sql_query))
        .route("/api/v1/export/ledger", get(ledger))
}

fn error(status: StatusCode, kind: &str, msg: String) -> Response {
    (
        status,
        Json(serde_json::json!({"status": "error", "errorType": kind, "error": msg})),
    )
        .into_response()
}

/// The tenant this request is restricted to (`X-Scope-OrgID`, tenant-scoped token).
fn scope(st: &AppState, headers: &HeaderMap) -> Result<Option<String>, Box<Response>> {
    auth::request_tenant(headers, st.tenant_tokens.as_deref()).map_err(|e| {
        let mut r = error(e.status(), e.kind(), e.to_string());
        if e.status() == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        Box::new(r)
    })
}

/// The query text: the body itself, or `{"query": "..."}` when sent as JSON.
fn query_text(headers: &HeaderMap, body: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the query must be UTF-8 text".to_string())?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if is_json {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON body: {e}"))?;
        return v
            .get("query")
            .and_then(|q| q.as_str())
            .map(str::to_string)
            .ok_or_else(|| "JSON body needs a string field \"query\"".to_string());
    }
    if text.trim().is_empty() {
        return Err("empty query: send the SQL as the request body".into());
    }
    Ok(text.to_string())
}

pub fn query_options(store: &Store, tenant_scope: Option<String>, limits: sql::Limits) -> QueryOptions {
    QueryOptions {
        tenant_scope,
        default_tenant: store.options().default_tenant.clone(),
        limits,
        ..QueryOptions::default()
    }
}

async fn sql_query(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let tenant = match scope(&st, &headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let text = match query_text(&headers, &body) {
        Ok(t) => t,
        Err(m) => return error(StatusCode::BAD_REQUEST, "bad_data", m),
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let store = st.store.clone();
    let limits = st.sql_limits;
    let res = tokio::task::spawn_blocking(move || {
        let opts = query_options(&store, tenant, limits);
        let snap = store.snapshot();
        sql::execute(&snap, &text, &opts)
    })
    .await;
    let result = match res {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let (status, kind) = match &e {
                SqlError::Limit(_) => (StatusCode::UNPROCESSABLE_ENTITY, "limit"),
                SqlError::Read(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
                _ if e.is_client_error() => (StatusCode::BAD_REQUEST, "bad_data"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            };
            return error(status, kind, e.to_string());
        }
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("query task failed: {e}"),
            )
        }
    };
    if accept.contains(ARROW_STREAM) {
        match result.to_arrow_stream() {
            Ok(b) => ([(header::CONTENT_TYPE, ARROW_STREAM)], b).into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }
    } else if accept.contains("text/csv") {
        ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], result.to_csv()).into_response()
    } else {
        Json(result.to_json()).into_response()
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct LedgerParams {
    pub month: Option<String>,
    pub format: Option<String>,
    pub grain: Option<String>,
    pub round: Option<String>,
    pub partitioned: Option<String>,
}

/// Validates export parameters shared by the HTTP API and the CLI.
pub fn ledger_options(
    store: &Store,
    month: &str,
    grain: &str,
    round: Option<&str>,
    tenant_scope: Option<String>,
) -> Result<LedgerOptions, String> {
    let grain = Grain::parse(grain).map_err(|e| e.to_string())?;
    let round_minor_units = match round {
        None | Some("none") | Some("") => false,
        Some("minor-units") => true,
        Some(o) => return Err(format!("round {o:?}: expected `minor-units`")),
    };
    let watermark = serde_json::to_string(&store.source_positions()).unwrap_or_else(|_| "{}".into());
    let now = crate::store::now_ns();
    Ok(LedgerOptions {
        month: month.to_string(),
        grain,
        round_minor_units,
        tenant_scope,
        default_tenant: store.options().default_tenant.clone(),
        run_id: format!("lr-{}-{now:x}", month.replace('-', "")),
        watermark,
    })
}

async fn ledger(State(st): State<Arc<AppState>>, headers: HeaderMap, Query(p): Query<LedgerParams>) -> Response {
    let tenant = match scope(&st, &headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    if p.partitioned.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "partitioned output is a directory tree (month=…/tenant=…/) and this endpoint returns one file: \
             use `tally export ledger --server URL --partitioned --out DIR`, which splits this endpoint's \
             ledger into one file per tenant, or request one tenant at a time with X-Scope-OrgID"
                .into(),
        );
    }
    let Some(month) = p.month else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "missing parameter month=YYYY-MM".into(),
        );
    };
    let format = match Format::parse(p.format.as_deref().unwrap_or("parquet")) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_data", e.to_string()),
    };
    let opts = match ledger_options(
        &st.store,
        &month,
        p.grain.as_deref().unwrap_or("day"),
        p.round.as_deref(),
        tenant,
    ) {
        Ok(o) => o,
        Err(m) => return error(StatusCode::BAD_REQUEST, "bad_data", m),
    };
    let store = st.store.clone();
    let res = tokio::task::spawn_blocking(move || {
        let snap = store.snapshot();
        let l = export::build_ledger(&snap, &opts, &mut |_, _| {})?;
        export::write_ledger(&l, format, Vec::new())
    })
    .await;
    match res {
        Ok(Ok(bytes)) => {
            let name = format!("ledger-{month}.{}", format.extension());
            (
                [
                    (header::CONTENT_TYPE, format.content_type().to_string()),
                    (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
                ],
                bytes,
            )
                .into_response()
        }
        Ok(Err(export::ExportError::Invalid(m))) => error(StatusCode::BAD_REQUEST, "bad_data", m),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("export task failed: {e}"),
        ),
    }
}
