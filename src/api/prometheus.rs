//! Prometheus HTTP API (`/api/v1/...`), shaped exactly like Prometheus 2.42's answers
//! so Grafana's stock Prometheus data source works against tally.
//!
//! * Success: `{"status":"success","data":...}`; errors:
//!   `{"status":"error","errorType":"bad_data","error":"..."}` with Prometheus's HTTP
//!   codes (400 bad_data, 422 execution, 503 timeout, 500 internal).
//! * Parameters come from the URL and, for POST, from a form-encoded body (body first,
//!   as Go's `FormValue`); `match[]` may repeat.
//! * **Tenants**: a request carrying `X-Scope-OrgID: <tenant>` (the Cortex/Mimir
//!   convention) only reads that tenant's series, on every endpoint (queries, series,
//!   labels, label values). Without the header a request sees **all tenants** — put an
//!   authenticating proxy that always sets the header in front of tally when tenants
//!   must not see each other. An empty header is rejected.
//! * Query evaluation and index reads run on `spawn_blocking`, never on the async
//!   I/O threads.

mod query;
mod render;
mod series;
mod status;

pub use render::{format_value, render_query_value, render_success, write_labels, write_str, write_ts};

use std::sync::Arc;

use axum::extract::{FromRequest, Query, Request};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};

use super::AppState;
use crate::query::promql::PromError;

/// Header selecting the tenant whose series a request may read.
pub const TENANT_HEADER: &str = "x-scope-orgid";

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/query", get(query::instant).post(query::instant))
        .route("/api/v1/query_range", get(query::range).post(query::range))
        .route("/api/v1/query_exemplars", get(query::exemplars).post(query::exemplars))
        .route("/api/v1/series", get(series::series).post(series::series))
        .route("/api/v1/labels", get(series::labels).post(series::labels))
        .route("/api/v1/label/{name}/values", get(series::label_values))
        .route("/api/v1/metadata", get(status::metadata))
        .route("/api/v1/status/buildinfo", get(status::buildinfo))
        .route("/api/v1/status/flags", get(status::flags))
        .route("/api/v1/rules", get(status::rules))
        .route("/api/v1/alerts", get(status::alerts))
}

/// Prometheus's `errorType`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    BadData,
    Execution,
    Timeout,
    Internal,
}

impl ErrorType {
    fn name(self) -> &'static str {
        match self {
            ErrorType::BadData => "bad_data",
            ErrorType::Execution => "execution",
            ErrorType::Timeout => "timeout",
            ErrorType::Internal => "internal",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            ErrorType::BadData => StatusCode::BAD_REQUEST,
            ErrorType::Execution => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An API error in Prometheus's shape.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{msg}")]
pub struct ApiError {
    pub kind: ErrorType,
    pub msg: String,
}

impl ApiError {
    pub fn bad_data(msg: impl Into<String>) -> ApiError {
        ApiError {
            kind: ErrorType::BadData,
            msg: msg.into(),
        }
    }

    pub fn internal(msg: impl Into<String>) -> ApiError {
        ApiError {
            kind: ErrorType::Internal,
            msg: msg.into(),
        }
    }

    /// `invalid parameter "name": err`, as Prometheus words parameter errors.
    pub fn invalid_param(name: &str, err: impl std::fmt::Display) -> ApiError {
        ApiError::bad_data(format!("invalid parameter {name:?}: {err}"))
    }
}

impl From<PromError> for ApiError {
    fn from(e: PromError) -> ApiError {
        let kind = match e {
            PromError::BadData(_) => ErrorType::BadData,
            PromError::Execution(_) => ErrorType::Execution,
            PromError::Timeout => ErrorType::Timeout,
            PromError::Storage(_) => ErrorType::Internal,
        };
        ApiError {
            kind,
            msg: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "status": "error",
            "errorType": self.kind.name(),
            "error": self.msg,
        });
        json_response(self.kind.status(), body.to_string())
    }
}

pub type ApiResult = Result<Response, ApiError>;

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `{"status":"success","data":<data>}` around already-rendered JSON.
pub fn success_raw(data: &str) -> Response {
    let mut s = String::with_capacity(data.len() + 32);
    s.push_str(r#"{"status":"success","data":"#);
    s.push_str(data);
    s.push('}');
    json_response(StatusCode::OK, s)
}

/// A complete success answer rendered by the caller (see [`render_success`]).
pub fn json_ok(body: String) -> Response {
    json_response(StatusCode::OK, body)
}

pub fn success(data: serde_json::Value) -> Response {
    success_raw(&data.to_string())
}

/// Like [`success`] plus Prometheus's `warnings` list when non-empty.
pub fn success_with_warnings(data: serde_json::Value, warnings: &[String]) -> Response {
    if warnings.is_empty() {
        return success(data);
    }
    let body = serde_json::json!({"status": "success", "data": data, "warnings": warnings});
    json_response(StatusCode::OK, body.to_string())
}

/// Request parameters: form body (POST, form-encoded) first, then the URL query.
#[derive(Debug, Default, Clone)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// The first value of `name` (Go's `FormValue`), `""` when absent.
    pub fn get(&self, name: &str) -> &str {
        self.opt(name).unwrap_or("")
    }

    pub fn opt(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Params, ApiError> {
        let url: Vec<(String, String)> = match Query::<Vec<(String, String)>>::try_from_uri(req.uri()) {
            Ok(Query(v)) => v,
            Err(e) => return Err(ApiError::bad_data(format!("error parsing query parameters: {e}"))),
        };
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        let mut out = Vec::new();
        if req.method() == Method::POST && is_form {
            match Form::<Vec<(String, String)>>::from_request(req, state).await {
                Ok(Form(body)) => out = body,
                Err(e) => {
                    return Err(ApiError::bad_data(format!(
                        "error parsing form values: {}",
                        e.body_text()
                    )))
                }
            }
        }
        out.extend(url);
        Ok(Params(out))
    }
}

/// The tenant a request is restricted to (`None` = all tenants).
pub fn tenant(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get(TENANT_HEADER) {
        None => Ok(None),
        Some(v) => {
            let t = v
                .to_str()
                .map_err(|_| ApiError::bad_data("X-Scope-OrgID is not valid text"))?
                .trim();
            if t.is_empty() {
                return Err(ApiError::bad_data("empty X-Scope-OrgID header"));
            }
            Ok(Some(t.to_string()))
        }
    }
}

/// Runs blocking work (query evaluation, index reads) off the async I/O threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("query task failed: {e}")))?
}

// ---- parameters -------------------------------------------------------------

/// Smallest / largest timestamps (ms) accepted, as Prometheus's minTime / maxTime.
pub const MIN_TIME_MS: i64 = i64::MIN / 1_000_000;
pub const MAX_TIME_MS: i64 = i64::MAX / 1_000_000;

/// Parses a time as float Unix seconds or RFC 3339, to milliseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let bad = || format!("cannot parse {s:?} to a valid timestamp");
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return Err(bad());
        }
        let ms = (f * 1000.0).round();
        return Ok(ms.clamp(MIN_TIME_MS as f64, MAX_TIME_MS as f64) as i64);
    }
    parse_rfc3339(s).ok_or_else(bad)
}

/// `name` parsed as a time, or `default` when absent/empty.
pub fn time_param(p: &Params, name: &str, default: i64) -> Result<i64, ApiError> {
    match p.opt(name) {
        None | Some("") => Ok(default),
        Some(s) => parse_time(s).map_err(|e| ApiError::invalid_param(name, e)),
    }
}

/// Parses a duration as float seconds or a Prometheus duration (`1m30s`), to ms.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        let ms = f * 1000.0;
        if !ms.is_finite() || ms > i64::MAX as f64 / 1e6 || ms < i64::MIN as f64 / 1e6 {
            return Err(format!("cannot parse {s:?} to a valid duration. It overflows int64"));
        }
        return Ok(ms.round() as i64);
    }
    crate::query::promql::testfile::parse_duration(s).map_err(|_| format!("cannot parse {s:?} to a valid duration"))
}

/// `limit` (0 = unlimited); must be a positive integer when given.
pub fn limit_param(p: &Params) -> Result<usize, ApiError> {
    match p.opt("limit") {
        None | Some("") => Ok(0),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n > 0 => Ok(n as usize),
            Ok(_) => Err(ApiError::invalid_param("limit", "limit must be positive")),
            Err(_) => Err(ApiError::invalid_param(
                "limit",
                format!("cannot parse {s:?} to a valid limit"),
            )),
        },
    }
}

/// RFC 3339 (`2006-01-02T15:04:05.999999999Z07:00`) to Unix milliseconds.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &s[start..i];
        if frac.is_empty() || frac.len() > 9 {
            return None;
        }
        nanos = frac.parse::<i64>().ok()? * 10i64.pow(9 - frac.len() as u32);
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = oh * 3600 + om * 60;
            if *c == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    Some(secs * 1000 + nanos / 1_000_000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_like_prometheus() {
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time("2015-07-01T20:10:51.781Z"), Ok(1_435_781_451_781));
        assert_eq!(parse_time("2015-07-01T22:10:51+02:00"), Ok(1_435_781_451_000));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("NaN").is_err());
        assert_eq!(parse_duration("15"), Ok(15_000));
        assert_eq!(parse_duration("0.5"), Ok(500));
        assert_eq!(parse_duration("1m30s"), Ok(90_000));
        assert!(parse_duration("x").is_err());
    }
}
