//! `POST /api/v1/ingest` (NDJSON events) and `POST /api/v1/write` (Prometheus remote-write).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use crate::ingest::remote_write::{decode_snappy, decode_write_request};
use crate::ingest::Pipeline;
use crate::model::{Labels, Sample, SeriesKind, Value};
use crate::store::WriteBatch;

/// Largest accepted request body (NDJSON or compressed remote-write).
const MAX_BODY: usize = 64 << 20;
/// Largest decompressed remote-write request.
const MAX_DECOMPRESSED: usize = 256 << 20;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/ingest", post(ingest))
        .route("/api/v1/write", post(write))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

fn pipeline(st: &AppState) -> Result<Arc<Pipeline>, Box<Response>> {
    st.ingest.get().cloned().ok_or_else(|| {
        Box::new(
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "error", "error": "ingest is not ready"})),
            )
                .into_response(),
        )
    })
}

fn error(status: StatusCode, msg: String) -> Response {
    (status, Json(json!({"status": "error", "error": msg}))).into_response()
}

async fn ingest(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let p = match pipeline(&st) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let res = tokio::task::spawn_blocking(move || p.ingest_ndjson(&body)).await;
    match res {
        Ok(Ok(out)) => {
            let rejected: Vec<_> = out
                .rejected
                .iter()
                .map(|(line, r)| json!({"line": line, "code": r.code.as_str(), "reason": r.reason}))
                .collect();
            Json(json!({
                "status": "ok",
                "accepted": out.outcome.accepted,
                "duplicates": out.outcome.duplicates,
                "unpriced": out.outcome.unpriced,
                "rejected": rejected,
            }))
            .into_response()
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn write(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let p = match pipeline(&st) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let org = headers
        .get("X-Scope-OrgID")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let res = tokio::task::spawn_blocking(move || -> Result<u64, (StatusCode, String)> {
        let raw = decode_snappy(&body, MAX_DECOMPRESSED).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        let series = decode_write_request(&raw).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        let mut wb = WriteBatch::new();
        for s in series {
            let mut pairs = s.labels;
            if let Some(org) = &org {
                pairs.retain(|(n, _)| n != "tenant");
                pairs.push(("tenant".to_string(), org.clone()));
            }
            let labels = Labels::from_pairs(pairs, &p.limits.labels)
                .map_err(|e| (StatusCode::BAD_REQUEST, format!("invalid series: {e}")))?;
            if labels.metric_name().is_none() {
                return Err((StatusCode::BAD_REQUEST, "series without __name__".to_string()));
            }
            let samples: Vec<Sample> = s
                .samples
                .iter()
                .map(|(t, v)| Sample {
                    ts: t.saturating_mul(1_000_000),
                    value: Value::Float(*v),
                })
                .collect();
            if !samples.is_empty() {
                wb.add(labels, SeriesKind::GAUGE, samples);
            }
        }
        p.append_series(&wb)
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
    .await;
    match res {
        Ok(Ok(_)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err((code, msg))) => error(code, msg),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
