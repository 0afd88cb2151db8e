//! The HTTP server: one axum router; each concern adds its routes in its own file.

pub mod auth;
pub mod ingest;
mod metrics;
pub mod prometheus;
pub mod self_scrape;
pub mod sql;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;

use crate::query::promql::{EngineOptions, ResultCache};
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
    /// Limits of one SQL query (`--sql-max-rows-scanned`, `--sql-max-memory`, `--sql-timeout`).
    pub sql_limits: crate::query::sql::Limits,
    /// Tenant-scoped bearer tokens (`--tenant-tokens`); see [`auth`].
    pub tenant_tokens: Option<Arc<auth::TenantTokens>>,
    /// Range-query results kept for refreshing dashboards (`--query-cache-points`).
    pub query_cache: ResultCache,
}

/// Result points the range-query cache holds by default (about 16 bytes each, plus
/// label sets shared with the index): room for hundreds of live panels.
pub const DEFAULT_QUERY_CACHE_POINTS: usize = 4_000_000;

/// Settings of the SQL / ledger endpoints.
#[derive(Debug, Clone, Default)]
pub struct SqlSettings {
    pub limits: crate::query::sql::Limits,
    pub tenant_tokens: Option<Arc<auth::TenantTokens>>,
}

impl AppState {
    pub fn new(store: Arc<Store>) -> Arc<AppState> {
        AppState::with_engine(store, EngineOptions::default())
    }

    pub fn with_engine(store: Arc<Store>, engine: EngineOptions) -> Arc<AppState> {
        AppState::with_settings(store, engine, SqlSettings::default(), DEFAULT_QUERY_CACHE_POINTS)
    }

    /// `query_cache_points`: see [`ResultCache::new`] (0 disables the cache).
    pub fn with_settings(
        store: Arc<Store>,
        engine: EngineOptions,
        sql: SqlSettings,
        query_cache_points: usize,
    ) -> Arc<AppState> {
        Arc::new(AppState {
            store,
            started: Instant::now(),
            ready: AtomicBool::new(false),
            engine,
            ingest: OnceLock::new(),
            sql_limits: sql.limits,
            tenant_tokens: sql.tenant_tokens,
            query_cache: ResultCache::new(query_cache_points),
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
