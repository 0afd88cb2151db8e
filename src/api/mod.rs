//! The HTTP server: one axum router; each concern adds its routes in its own file.

mod metrics;
pub mod sql;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;

use crate::store::Store;

/// Shared state of every handler.
pub struct AppState {
    pub store: Arc<Store>,
    pub started: Instant,
    /// False while starting or shutting down; `/readyz` reports it.
    pub ready: AtomicBool,
}

impl AppState {
    pub fn new(store: Arc<Store>) -> Arc<AppState> {
        Arc::new(AppState {
            store,
            started: Instant::now(),
            ready: AtomicBool::new(false),
        })
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(metrics::routes())
        .merge(sql::routes())
        .with_state(state)
}
