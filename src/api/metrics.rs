//! `/healthz`, `/readyz` and `/metrics` (Prometheus text exposition format 0.0.4).

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use super::AppState;
use crate::store::metrics::{Counter, Histogram};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let stats = st.store.stats();
    let ingest_degraded = st.ingest.get().is_some_and(|p| p.metrics.degraded());
    let status = if stats.quarantined_segments > 0 || ingest_degraded {
        "degraded"
    } else {
        "ok"
    };
    Json(serde_json::json!({
        "status": status,
        "kafka": if ingest_degraded { "unreachable" } else { "ok" },
        "uptime_seconds": st.started.elapsed().as_secs_f64(),
        "quarantined_segments": stats.quarantined_segments,
    }))
}

async fn readyz(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    if st.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, Json(serde_json::json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "not ready"})),
        )
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let body = render(&st);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
}

fn counter(out: &mut String, name: &str, help: &str, c: &Counter) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", c.get());
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let (buckets, sum, count) = h.snapshot();
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (le, c) in buckets {
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {c}");
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
    );
}

pub fn render(st: &AppState) -> String {
    let m = st.store.metrics();
    let s = st.store.stats();
    let mut out = String::with_capacity(4096);
    counter(
        &mut out,
        "tally_samples_appended_total",
        "Samples acknowledged by the store.",
        &m.samples_appended,
    );
    counter(
        &mut out,
        "tally_series_created_total",
        "Series created.",
        &m.series_created,
    );
    counter(
        &mut out,
        "tally_duplicate_samples_replaced_total",
        "Samples that replaced a conflicting value at the same timestamp (Replace series).",
        &m.duplicates_replaced,
    );
    counter(
        &mut out,
        "tally_head_flushes_total",
        "Head flushes to segments.",
        &m.flushes,
    );
    counter(
        &mut out,
        "tally_compactions_total",
        "Partition compactions.",
        &m.compactions,
    );
    counter(
        &mut out,
        "tally_partitions_dropped_total",
        "Partitions dropped by retention.",
        &m.partitions_dropped,
    );
    counter(
        &mut out,
        "tally_wal_trimmed_bytes_total",
        "Bytes cut from torn or corrupt WAL tails at open.",
        &m.wal_trimmed_bytes,
    );
    histogram(
        &mut out,
        "tally_wal_fsync_seconds",
        "WAL fsync latency.",
        &m.wal_fsync_seconds,
    );
    histogram(
        &mut out,
        "tally_wal_append_seconds",
        "WAL append latency (write + fsync per policy).",
        &m.wal_append_seconds,
    );
    histogram(
        &mut out,
        "tally_flush_seconds",
        "Head flush duration.",
        &m.flush_seconds,
    );
    counter(
        &mut out,
        "tally_rollup_windows_stored_total",
        "Rollup windows served to queries from stored rollup segments.",
        &m.rollup_windows_stored,
    );
    counter(
        &mut out,
        "tally_rollup_windows_computed_total",
        "Rollup windows computed from raw samples for queries (no valid stored rollup).",
        &m.rollup_windows_computed,
    );
    gauge(&mut out, "tally_series", "Series in the index.", s.series as f64);
    gauge(
        &mut out,
        "tally_head_series",
        "Series with samples in the head.",
        s.head_series as f64,
    );
    gauge(
        &mut out,
        "tally_head_samples",
        "Samples in the head.",
        s.head_samples as f64,
    );
    gauge(
        &mut out,
        "tally_head_bytes",
        "Approximate bytes held by head samples.",
        s.head_bytes as f64,
    );
    gauge(&mut out, "tally_segments", "Live segment files.", s.segments as f64);
    gauge(
        &mut out,
        "tally_segment_bytes",
        "Bytes in live segment files.",
        s.segment_bytes as f64,
    );
    gauge(
        &mut out,
        "tally_quarantined_segments",
        "Segments that failed verification.",
        s.quarantined_segments as f64,
    );
    gauge(
        &mut out,
        "tally_uptime_seconds",
        "Seconds since start.",
        st.started.elapsed().as_secs_f64(),
    );
    if let Some(t) = st.store.object_tier() {
        render_tier(&mut out, t);
    }
    render_query_cache(&mut out, &st.query_cache);
    if let Some(p) = st.ingest.get() {
        p.metrics.render(&mut out);
    }
    out
}

fn render_query_cache(out: &mut String, cache: &crate::query::promql::ResultCache) {
    let s = &cache.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let name = "tally_query_cache_requests_total";
    let _ = writeln!(
        out,
        "# HELP {name} Range queries by what the result cache could reuse: hit (every step), partial (some), \
         miss (none), uncacheable (@ modifier or not a matrix).\n# TYPE {name} counter"
    );
    for (result, v) in [
        ("hit", &s.hits),
        ("partial", &s.partial),
        ("miss", &s.misses),
        ("uncacheable", &s.uncacheable),
    ] {
        let _ = writeln!(out, "{name}{{result=\"{result}\"}} {}", load(v));
    }
    let name = "tally_query_cache_steps_total";
    let _ = writeln!(
        out,
        "# HELP {name} Range-query steps answered from the result cache (reused) or evaluated.\n# TYPE {name} counter"
    );
    for (kind, v) in [("reused", &s.steps_reused), ("evaluated", &s.steps_evaluated)] {
        let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {}", load(v));
    }
    gauge(
        out,
        "tally_query_cache_points",
        "Result points held by the range-query cache.",
        cache.points() as f64,
    );
}

fn render_tier(out: &mut String, t: &crate::tier::ObjectTier) {
    let m = &t.metrics;
    counter(
        out,
        "tally_tier_bytes_uploaded_total",
        "Bytes of segments uploaded to the object store and verified.",
        &m.bytes_tiered,
    );
    counter(
        out,
        "tally_tier_segments_uploaded_total",
        "Segments tiered to the object store.",
        &m.segments_tiered,
    );
    gauge(
        out,
        "tally_tier_pending_uploads",
        "Segments due for tiering and not uploaded yet.",
        m.pending_uploads.load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    counter(
        out,
        "tally_tier_upload_errors_total",
        "Failed tiering passes (retried with backoff; local data kept).",
        &m.upload_errors,
    );
    counter(
        out,
        "tally_tier_cache_hits_total",
        "Tiered-segment pages served from the local cache.",
        &m.cache_hits,
    );
    counter(
        out,
        "tally_tier_cache_misses_total",
        "Tiered-segment pages fetched from the object store.",
        &m.cache_misses,
    );
    gauge(
        out,
        "tally_tier_cache_bytes",
        "Bytes held by the tiered-segment page cache.",
        t.cache().bytes() as f64,
    );
    counter(
        out,
        "tally_tier_fetched_bytes_total",
        "Bytes read from the object store by queries.",
        &m.bytes_fetched,
    );
    counter(
        out,
        "tally_object_store_requests_total",
        "Object store requests.",
        &m.requests,
    );
    counter(
        out,
        "tally_object_store_request_errors_total",
        "Object store requests that failed or timed out.",
        &m.request_errors,
    );
    histogram(
        out,
        "tally_object_store_request_seconds",
        "Object store request latency.",
        &m.request_seconds,
    );
    counter(
        out,
        "tally_tier_objects_deleted_total",
        "Objects deleted (retention, compaction).",
        &m.objects_deleted,
    );
}
