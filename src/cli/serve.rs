//! `tally serve`: open the store, serve HTTP, shut down cleanly on SIGTERM / Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;

use super::config::{parse_duration, FileConfig};
use crate::api::{self, AppState};
use crate::query::promql::EngineOptions;
use crate::store::{Store, StoreOptions};
use crate::wal::FsyncPolicy;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys use snake_case: data_dir, listen, retention, ...).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (created if missing; locked while the server runs). Default: ./data
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address for the HTTP API. Default: 127.0.0.1:9201
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Drop whole partitions older than this (e.g. 400d). Default: keep everything.
    #[arg(long, value_name = "DURATION")]
    pub retention: Option<String>,
    /// Width of a time partition; fixed when the data directory is created. Default: 1d
    #[arg(long, value_name = "DURATION")]
    pub partition_width: Option<String>,
    /// When an append is acknowledged: `batch` (fsync every batch) or `interval` (fsync every --fsync-interval). Default: batch
    #[arg(long, value_name = "POLICY")]
    pub fsync: Option<String>,
    /// fsync period for `--fsync interval`. Default: 1s
    #[arg(long, value_name = "DURATION")]
    pub fsync_interval: Option<String>,
    /// Flush the in-memory head to segments once it holds this many samples. Default: 4000000
    #[arg(long, value_name = "N")]
    pub head_max_samples: Option<usize>,
    /// Flush the head at least this often. Default: 30m
    #[arg(long, value_name = "DURATION")]
    pub flush_interval: Option<String>,
    /// Compact a partition once it has this many segments. Default: 4
    #[arg(long, value_name = "N")]
    pub compact_min_segments: Option<usize>,
    /// Tenant that owns series without a `tenant` label. Default: default
    #[arg(long, value_name = "NAME")]
    pub default_tenant: Option<String>,
    /// Most samples one PromQL query may load before failing with errorType "execution". Default: 50000000
    #[arg(long, value_name = "N")]
    pub query_max_samples: Option<usize>,
    /// Wall-clock limit per PromQL query (errorType "timeout"); `0s` = unlimited. Default: 2m
    #[arg(long, value_name = "DURATION")]
    pub query_timeout: Option<String>,
    /// How far instant selectors look back for a sample. Default: 5m
    #[arg(long, value_name = "DURATION")]
    pub query_lookback_delta: Option<String>,
}

/// The effective settings after merging flags, config file and defaults.
#[derive(Debug)]
pub struct ServeSettings {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub store: StoreOptions,
    pub engine: EngineOptions,
}

impl ServeArgs {
    pub fn settings(self) -> anyhow::Result<ServeSettings> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let mut store = StoreOptions::default();
        let data_dir = self.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("data"));
        let listen_s = self
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:9201".to_string());
        let listen: SocketAddr = listen_s
            .parse()
            .with_context(|| format!("invalid --listen address {listen_s:?} (expected HOST:PORT)"))?;
        if let Some(r) = self.retention.or(file.retention) {
            store.retention = Some(parse_duration("--retention", &r)?);
        }
        if let Some(w) = self.partition_width.or(file.partition_width) {
            store.partition_width = parse_duration("--partition-width", &w)?;
            if store.partition_width.is_zero() {
                bail!("--partition-width must be positive");
            }
        }
        let interval = match self.fsync_interval.or(file.fsync_interval) {
            Some(s) => parse_duration("--fsync-interval", &s)?,
            None => std::time::Duration::from_secs(1),
        };
        store.fsync = match self.fsync.or(file.fsync).as_deref() {
            None | Some("batch") => FsyncPolicy::EveryBatch,
            Some("interval") => FsyncPolicy::Interval(interval),
            Some(other) => bail!("invalid --fsync {other:?}: expected `batch` or `interval`"),
        };
        if let Some(n) = self.head_max_samples.or(file.head_max_samples) {
            store.head_max_samples = n.max(1);
        }
        if let Some(f) = self.flush_interval.or(file.flush_interval) {
            store.flush_interval = parse_duration("--flush-interval", &f)?;
        }
        if let Some(n) = self.compact_min_segments.or(file.compact_min_segments) {
            store.compact_min_segments = n.max(2);
        }
        if let Some(t) = self.default_tenant.or(file.default_tenant) {
            store.default_tenant = t;
        }
        let mut engine = EngineOptions::default();
        if let Some(n) = self.query_max_samples.or(file.query_max_samples) {
            engine.max_samples = n.max(1);
        }
        if let Some(t) = self.query_timeout.or(file.query_timeout) {
            let d = parse_duration("--query-timeout", &t)?;
            engine.timeout = (!d.is_zero()).then_some(d);
        }
        if let Some(l) = self.query_lookback_delta.or(file.query_lookback_delta) {
            let d = parse_duration("--query-lookback-delta", &l)?;
            if d.is_zero() {
                bail!("--query-lookback-delta must be positive");
            }
            engine.lookback_ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        }
        Ok(ServeSettings {
            data_dir,
            listen,
            store,
            engine,
        })
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(settings))
}

async fn serve(settings: ServeSettings) -> anyhow::Result<()> {
    let dir = settings.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, settings.store))
        .await
        .context("store open task")?
        .with_context(|| format!("opening data directory {}", settings.data_dir.display()))?;
    let store = Arc::new(store);
    let state = AppState::with_engine(store.clone(), settings.engine);
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding HTTP listener on {}", settings.listen))?;
    tracing::info!(addr = %settings.listen, data_dir = %settings.data_dir.display(), "tally serving");
    state.ready.store(true, Ordering::Relaxed);
    let app = api::router(state.clone());
    let shutdown_state = state.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            shutdown_state.ready.store(false, Ordering::Relaxed);
            tracing::info!("shutting down: draining requests, then flushing the store");
        })
        .await
        .context("HTTP server")?;
    drop(state);
    tokio::task::spawn_blocking(move || store.close())
        .await
        .context("store close task")??;
    tracing::info!("store closed cleanly");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
