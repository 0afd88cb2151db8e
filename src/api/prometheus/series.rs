//! `/api/v1/series`, `/api/v1/labels`, `/api/v1/label/<name>/values`.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;

use super::{
    blocking, limit_param, success_with_warnings, tenant, time_param, write_labels, ApiError, ApiResult, Params,
    MAX_TIME_MS, MIN_TIME_MS,
};
use crate::api::AppState;
use crate::index::Matcher;
use crate::model::Labels;
use crate::query::promql;
use crate::store::{SelectRequest, SeriesSource};

const TRUNCATED: &str = "results truncated due to limit";

fn ms_to_ns(ms: i64) -> i64 {
    ms.saturating_mul(1_000_000)
}

/// The `match[]` selectors, each parsed to matchers.
fn matcher_sets(p: &Params) -> Result<Vec<Vec<Matcher>>, ApiError> {
    p.all("match[]")
        .into_iter()
        .map(|s| promql::parse_selector(s).map_err(|e| ApiError::bad_data(e.to_string())))
        .collect()
}

/// Common `start`/`end` handling (ns, closed range).
fn range_ns(p: &Params) -> Result<(i64, i64), ApiError> {
    let start = time_param(p, "start", MIN_TIME_MS)?;
    // Like Prometheus 2.42, `end` before `start` is not an error here: nothing matches.
    let end = time_param(p, "end", MAX_TIME_MS)?;
    let start_ns = if start <= MIN_TIME_MS {
        i64::MIN
    } else {
        ms_to_ns(start)
    };
    let end_ns = if end >= MAX_TIME_MS {
        i64::MAX
    } else {
        // The whole last millisecond.
        ms_to_ns(end).saturating_add(999_999)
    };
    Ok((start_ns, end_ns))
}

fn storage_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e.to_string())
}

fn truncate<T>(v: &mut Vec<T>, limit: usize) -> Vec<String> {
    if limit > 0 && v.len() > limit {
        v.truncate(limit);
        vec![TRUNCATED.to_string()]
    } else {
        Vec::new()
    }
}

pub async fn series(State(st): State<Arc<AppState>>, headers: HeaderMap, p: Params) -> ApiResult {
    let tenant = tenant(&headers)?;
    if p.all("match[]").is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let (start, end) = range_ns(&p)?;
    let sets = matcher_sets(&p)?;
    let limit = limit_param(&p)?;
    let store = st.store.clone();
    let (body, warnings) = blocking(move || {
        let snap = store.snapshot();
        let mut found: BTreeSet<Labels> = BTreeSet::new();
        for ms in &sets {
            let req = SelectRequest {
                tenant: tenant.as_deref(),
                matchers: ms,
                start,
                end,
            };
            found.extend(snap.series_labels(&req).map_err(storage_err)?);
        }
        let mut all: Vec<Labels> = found.into_iter().collect();
        let warnings = truncate(&mut all, limit);
        let mut out = String::from("[");
        for (i, l) in all.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_labels(&mut out, l);
        }
        out.push(']');
        Ok((out, warnings))
    })
    .await?;
    let data: serde_json::Value = serde_json::from_str(&body).map_err(storage_err)?;
    Ok(success_with_warnings(data, &warnings))
}

pub async fn labels(State(st): State<Arc<AppState>>, headers: HeaderMap, p: Params) -> ApiResult {
    let tenant = tenant(&headers)?;
    let (start, end) = range_ns(&p)?;
    let sets = matcher_sets(&p)?;
    let limit = limit_param(&p)?;
    let store = st.store.clone();
    let (names, warnings) = blocking(move || {
        let snap = store.snapshot();
        let mut names: BTreeSet<String> = BTreeSet::new();
        if sets.is_empty() {
            names.extend(
                snap.label_names(tenant.as_deref(), &[], start, end)
                    .map_err(storage_err)?,
            );
        }
        for ms in &sets {
            names.extend(
                snap.label_names(tenant.as_deref(), ms, start, end)
                    .map_err(storage_err)?,
            );
        }
        let mut v: Vec<String> = names.into_iter().collect();
        let w = truncate(&mut v, limit);
        Ok((v, w))
    })
    .await?;
    Ok(success_with_warnings(serde_json::json!(names), &warnings))
}

pub async fn label_values(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    p: Params,
) -> ApiResult {
    let tenant = tenant(&headers)?;
    if !crate::model::is_label_name_syntax(&name) {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    let (start, end) = range_ns(&p)?;
    let sets = matcher_sets(&p)?;
    let limit = limit_param(&p)?;
    let store = st.store.clone();
    let (values, warnings) = blocking(move || {
        let snap = store.snapshot();
        let mut vals: BTreeSet<String> = BTreeSet::new();
        if sets.is_empty() {
            vals.extend(
                snap.label_values(tenant.as_deref(), &name, &[], start, end)
                    .map_err(storage_err)?,
            );
        }
        for ms in &sets {
            vals.extend(
                snap.label_values(tenant.as_deref(), &name, ms, start, end)
                    .map_err(storage_err)?,
            );
        }
        let mut v: Vec<String> = vals.into_iter().collect();
        let w = truncate(&mut v, limit);
        Ok((v, w))
    })
    .await?;
    Ok(success_with_warnings(serde_json::json!(values), &warnings))
}
