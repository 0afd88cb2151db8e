//! `/api/v1/query`, `/api/v1/query_range`, `/api/v1/query_exemplars`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;

use super::{
    blocking, json_ok, parse_duration, render_success, success, tenant, time_param, ApiError, ApiResult, Params,
    MAX_TIME_MS, MIN_TIME_MS,
};
use crate::api::AppState;
use crate::query::promql::{self, EngineOptions};

fn now_ms() -> i64 {
    crate::store::now_ns() / 1_000_000
}

/// Engine options for one request: the server's, with a shorter `timeout` if asked.
fn request_opts(st: &AppState, p: &Params) -> Result<EngineOptions, ApiError> {
    let mut opts = st.engine.clone();
    if let Some(s) = p.opt("timeout").filter(|s| !s.is_empty()) {
        let ms = parse_duration(s).map_err(|e| ApiError::invalid_param("timeout", e))?;
        let d = Duration::from_millis(ms.max(0) as u64);
        opts.timeout = Some(match opts.timeout {
            Some(max) => max.min(d),
            None => d,
        });
    }
    Ok(opts)
}

/// Parses the query up front so syntax errors read `invalid parameter "query": ...`.
fn check_query(q: &str) -> Result<(), ApiError> {
    promql::parse(q)
        .map(|_| ())
        .map_err(|e| ApiError::invalid_param("query", e))
}

pub async fn instant(State(st): State<Arc<AppState>>, headers: HeaderMap, p: Params) -> ApiResult {
    let tenant = tenant(&headers)?;
    let time = time_param(&p, "time", now_ms())?;
    let opts = request_opts(&st, &p)?;
    let query = p.get("query").to_string();
    check_query(&query)?;
    let store = st.store.clone();
    let body = blocking(move || {
        let snap = store.snapshot();
        let v = promql::instant_query(&snap, tenant.as_deref(), &query, time, &opts)?;
        Ok(render_success(&v))
    })
    .await?;
    Ok(json_ok(body))
}

pub async fn range(State(st): State<Arc<AppState>>, headers: HeaderMap, p: Params) -> ApiResult {
    let tenant = tenant(&headers)?;
    let start = super::parse_time(p.get("start")).map_err(|e| ApiError::invalid_param("start", e))?;
    let end = super::parse_time(p.get("end")).map_err(|e| ApiError::invalid_param("end", e))?;
    if end < start {
        return Err(ApiError::bad_data("end timestamp must not be before start time"));
    }
    let step = parse_duration(p.get("step")).map_err(|e| ApiError::invalid_param("step", e))?;
    if step <= 0 {
        return Err(ApiError::bad_data(
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (i128::from(end) - i128::from(start)) / i128::from(step) > 11_000 {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let opts = request_opts(&st, &p)?;
    let query = p.get("query").to_string();
    check_query(&query)?;
    // `nocache=1` (as in VictoriaMetrics) evaluates every step, e.g. to measure the engine.
    let nocache = matches!(p.opt("nocache"), Some("1" | "true"));
    let store = st.store.clone();
    let body = blocking(move || {
        let tenant = tenant.as_deref();
        let v = if nocache {
            promql::range_query(&store.snapshot(), tenant, &query, start, end, step, &opts)?
        } else {
            st.query_cache
                .range_query(&store, tenant, &query, start, end, step, &opts)?
        };
        Ok(render_success(&v))
    })
    .await?;
    Ok(json_ok(body))
}

/// Exemplars are not stored: validates like Prometheus, answers an empty list.
pub async fn exemplars(headers: HeaderMap, p: Params) -> ApiResult {
    tenant(&headers)?;
    let start = time_param(&p, "start", MIN_TIME_MS)?;
    let end = time_param(&p, "end", MAX_TIME_MS)?;
    if end < start {
        return Err(ApiError::bad_data("end timestamp must not be before start time"));
    }
    check_query(p.get("query"))?;
    Ok(success(serde_json::json!([])))
}
