//! `/api/v1/status/buildinfo`, `/api/v1/status/flags`, `/api/v1/metadata`,
//! `/api/v1/rules`, `/api/v1/alerts`.

use std::sync::Arc;

use axum::extract::State;

use super::{success, ApiResult};
use crate::api::AppState;

/// The Prometheus version whose PromQL and API tally reproduces. Grafana reads it to
/// pick its Prometheus feature set.
pub const PROMETHEUS_COMPAT_VERSION: &str = "2.42.0";

pub async fn buildinfo() -> ApiResult {
    Ok(success(serde_json::json!({
        "version": PROMETHEUS_COMPAT_VERSION,
        "revision": format!("tally-{}", env!("CARGO_PKG_VERSION")),
        "branch": "tally",
        "buildUser": "tally",
        "buildDate": "",
        "goVersion": "n/a (tally, Rust)",
    })))
}

fn dur(d: Option<std::time::Duration>) -> String {
    match d {
        None => "0s".into(),
        Some(d) => format!("{}s", d.as_secs_f64()),
    }
}

pub async fn flags(State(st): State<Arc<AppState>>) -> ApiResult {
    let o = &st.engine;
    let opts = st.store.options();
    Ok(success(serde_json::json!({
        "query.lookback-delta": format!("{}s", o.lookback_ms as f64 / 1000.0),
        "query.max-samples": o.max_samples.to_string(),
        "query.timeout": dur(o.timeout),
        "storage.tsdb.path": st.store.dir().display().to_string(),
        "storage.tsdb.retention.time": dur(opts.retention),
        "tally.default-tenant": opts.default_tenant,
    })))
}

/// Metric metadata (type/help/unit) is not stored: an empty object, like a Prometheus
/// with no scraped metadata.
pub async fn metadata() -> ApiResult {
    Ok(success(serde_json::json!({})))
}

pub async fn rules() -> ApiResult {
    Ok(success(serde_json::json!({"groups": []})))
}

pub async fn alerts() -> ApiResult {
    Ok(success(serde_json::json!({"alerts": []})))
}
