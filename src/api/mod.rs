//! The HTTP server: one axum router; each concern adds its routes in its own file.

pub mod ingest;
mod metrics;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;

use crate::store::Store;

/// Shared state of every handler.
pub struct AppState {
    pub store: Arc<Store>,
    pub started: Instant,
    /// False while starting or shutting down; `/readyz` reports it.
    pub ready: AtomicBool,
    /// The ingest pipeline (HTTP push, remote-write); set once the server has opened it.
    pub ingest: OnceLock<Arc<crate::ingest::Pipeline>>,
}

impl AppState {
    pub fn new(store: Arc<Store>) -> Arc<AppState> {
        Arc::new(AppState { store, started: Instant::now(), ready: AtomicBool::new(false), ingest: OnceLock::new() })
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new().merge(metrics::routes()).merge(ingest::routes()).with_state(state)
}
