//! The HTTP server: one axum router; each concern adds its routes in its own file.

pub mod ingest;
mod metrics;
pub mod prometheus;
pub mod sql;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;

use crate::query::promql::EngineOptions;
use crate::store::Store;

/// Shared state of every handler.
pub struct AppState {
    pub store: Arc<Store>,
    pub started: Instant,
    /// False while starting or shutting down; `/readyz` reports it.
    pub ready: AtomicBool,
    /// PromQL limits (max samples, timeout, lookback) for the Prometheus API.
    pub engine: EngineOptions,
    /// The ingest pipeline (HTTP push, remote-write); set once the server has opened it.
    pub ingest: OnceLock<Arc<crate::ingest::Pipeline>>,
}

impl AppState {
    pub fn new(store: Arc<Store>) -> Arc<AppState> {
        AppState::with_engine(store, EngineOptions::default())
    }

    pub fn with_engine(store: Arc<Store>, engine: EngineOptions) -> Arc<AppState> {
        Arc::new(AppState {
            store,
            started: Instant::now(),
            ready: AtomicBool::new(false),
            engine,
            ingest: OnceLock::new(),
        })
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(metrics::routes())
        .merge(prometheus::routes())
        .merge(ingest::routes())
        .merge(sql::routes())
        .with_state(state)
}
