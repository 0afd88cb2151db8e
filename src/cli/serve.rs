//! `tally serve`: open the store, serve HTTP, shut down cleanly on SIGTERM / Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;

use super::config::{parse_bytes, parse_duration, FileConfig};
use crate::api::{self, AppState};
use crate::ingest::kafka::{KafkaConfig, KafkaIngest};
use crate::ingest::pipeline::PipelineConfig;
use crate::ingest::{IngestMetrics, Pipeline, PriceBook};
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
    /// Range-query result points kept so refreshing dashboards only evaluate the steps
    /// new data reaches (about 16 bytes a point); 0 = no cache. Config key:
    /// query_cache_points. Default: 4000000
    #[arg(long, value_name = "N")]
    pub query_cache_points: Option<usize>,
    /// Write tally's own /metrics into its store this often (series labelled job="tally",
    /// instance=<listen address>), so dashboards/tally-ingest-health.json works with tally
    /// as the only data source; `0s` = off. Config key: self_scrape_interval. Default: off
    #[arg(long, value_name = "DURATION")]
    pub self_scrape_interval: Option<String>,
    /// Most rows (samples) one SQL query may scan before failing with "query limit exceeded: … rows
    /// scanned" (HTTP 422). Config key: sql_max_rows_scanned. Default: 2000000000
    #[arg(long, value_name = "N")]
    pub sql_max_rows_scanned: Option<u64>,
    /// Most memory one SQL query may hold in result rows and GROUP BY state, e.g. 512MiB or
    /// 1GB (plain numbers are bytes); exceeding it fails with "query limit exceeded: … memory"
    /// (HTTP 422). Config key: sql_max_memory. Default: 1GiB
    #[arg(long, value_name = "BYTES")]
    pub sql_max_memory: Option<String>,
    /// Wall-clock limit per SQL query, e.g. 30s; exceeding it fails
    /// with "query limit exceeded: … timeout" (HTTP 422); `0s` = unlimited. Config key:
    /// sql_timeout. Default: 5m
    #[arg(long, value_name = "DURATION")]
    pub sql_timeout: Option<String>,
    /// File mapping bearer tokens to tenants (TOML `[tokens]` table of "token" = "tenant", or
    /// CSV `token,tenant` lines if the name ends in .csv; tenant `*` = all tenants). When set,
    /// POST /api/v1/sql and GET /api/v1/export/ledger require `Authorization: Bearer <token>`
    /// (401 if missing or unknown) and are restricted to the token's tenant; an X-Scope-OrgID
    /// naming another tenant is refused with 403. Config key: tenant_tokens.
    #[arg(long, value_name = "FILE")]
    pub tenant_tokens: Option<PathBuf>,
    /// Kafka bootstrap servers (HOST:PORT[,HOST:PORT]); enables the Kafka ingest workers.
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka_brokers: Option<String>,
    /// Comma-separated topics to consume. Default: cost.compute,cost.storage,cost.network
    #[arg(long, value_name = "TOPICS", value_delimiter = ',')]
    pub topics: Option<Vec<String>>,
    /// Kafka consumer group; tally processes in one group split the partitions. Default: tally
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Price book (TOML, see docs/ingest.md) used to price events that carry a sku but no cost.
    #[arg(long, value_name = "FILE")]
    pub price_book: Option<PathBuf>,
    /// Events older than this are rejected (`too_late`, dead-lettered). Default: 48h
    #[arg(long, value_name = "DURATION")]
    pub max_lateness: Option<String>,
    /// Events further in the future than this are rejected (`too_far_in_future`). Default: 10m
    #[arg(long, value_name = "DURATION")]
    pub max_future: Option<String>,
    /// event_id de-duplication window. Default: 24h
    #[arg(long, value_name = "DURATION")]
    pub dedup_window: Option<String>,
    /// Most event_ids remembered (memory bound, ~50 bytes each). Default: 10000000
    #[arg(long, value_name = "N")]
    pub dedup_max_keys: Option<usize>,
    /// Largest accepted event (Kafka message or NDJSON line), bytes. Default: 65536
    #[arg(long, value_name = "BYTES")]
    pub max_event_bytes: Option<usize>,
    /// Append a Kafka batch once it holds this many events. Default: 20000
    #[arg(long, value_name = "N")]
    pub batch_max_events: Option<usize>,
    /// Append a Kafka batch at least this often. Default: 10ms
    #[arg(long, value_name = "DURATION")]
    pub batch_linger: Option<String>,
    /// Kafka consumer session timeout. Default: 10s
    #[arg(long, value_name = "DURATION")]
    pub kafka_session_timeout: Option<String>,
    #[command(flatten)]
    pub tier: super::tier_flags::TierFlags,
}

/// The effective settings after merging flags, config file and defaults.
#[derive(Debug)]
pub struct ServeSettings {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub store: StoreOptions,
    pub engine: EngineOptions,
    /// Points of the range-query result cache (0 = off).
    pub query_cache_points: usize,
    /// SQL limits and tenant tokens.
    pub sql: api::SqlSettings,
    pub pipeline: PipelineConfig,
    pub price_book: Option<PathBuf>,
    /// Kafka ingest, when `--kafka-brokers` is given.
    pub kafka: Option<KafkaConfig>,
    /// `--self-scrape-interval`, when on.
    pub self_scrape: Option<std::time::Duration>,
}

impl ServeArgs {
    pub fn settings(self) -> anyhow::Result<ServeSettings> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let ingest_file = file.clone();
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
        self.tier.apply(&ingest_file, &mut store)?;
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
        let self_scrape = match self.self_scrape_interval.or(file.self_scrape_interval) {
            Some(s) => Some(parse_duration("--self-scrape-interval", &s)?).filter(|d| !d.is_zero()),
            None => None,
        };
        let mut sql = api::SqlSettings::default();
        if let Some(n) = self.sql_max_rows_scanned.or(file.sql_max_rows_scanned) {
            if n == 0 {
                bail!("--sql-max-rows-scanned must be positive");
            }
            sql.limits.max_rows_scanned = n;
        }
        if let Some(m) = self.sql_max_memory.or(file.sql_max_memory.map(|b| b.to_string())) {
            let b = parse_bytes("--sql-max-memory", &m)?;
            sql.limits.max_memory_bytes = usize::try_from(b).unwrap_or(usize::MAX);
        }
        if let Some(t) = self.sql_timeout.or(file.sql_timeout) {
            let d = parse_duration("--sql-timeout", &t)?;
            sql.limits.timeout = if d.is_zero() { std::time::Duration::MAX } else { d };
        }
        if let Some(p) = self.tenant_tokens.or(file.tenant_tokens) {
            let t = crate::api::auth::TenantTokens::load(&p)?;
            tracing::info!(tokens = t.len(), file = %p.display(), "tenant-scoped tokens loaded");
            sql.tenant_tokens = Some(Arc::new(t));
        }
        let (pipeline, price_book, kafka) = ingest_settings(
            IngestFlags {
                kafka_brokers: self.kafka_brokers,
                topics: self.topics,
                group: self.group,
                price_book: self.price_book,
                max_lateness: self.max_lateness,
                max_future: self.max_future,
                dedup_window: self.dedup_window,
                dedup_max_keys: self.dedup_max_keys,
                max_event_bytes: self.max_event_bytes,
                batch_max_events: self.batch_max_events,
                batch_linger: self.batch_linger,
                kafka_session_timeout: self.kafka_session_timeout,
            },
            &ingest_file,
            &store,
        )?;
        Ok(ServeSettings {
            data_dir,
            listen,
            store,
            engine,
            query_cache_points: self
                .query_cache_points
                .or(file.query_cache_points)
                .unwrap_or(api::DEFAULT_QUERY_CACHE_POINTS),
            sql,
            pipeline,
            price_book,
            kafka,
            self_scrape,
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
    let state = AppState::with_settings(
        store.clone(),
        settings.engine,
        settings.sql,
        settings.query_cache_points,
    );
    let kafka = start_ingest(
        &settings.pipeline,
        settings.price_book.as_deref(),
        settings.kafka.clone(),
        &store,
        &state,
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding HTTP listener on {}", settings.listen))?;
    tracing::info!(addr = %settings.listen, data_dir = %settings.data_dir.display(), "tally serving");
    state.ready.store(true, Ordering::Relaxed);
    if let Some(every) = settings.self_scrape {
        api::self_scrape::spawn(state.clone(), every, settings.listen.to_string());
    }
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
    if let Some(k) = kafka {
        tokio::task::spawn_blocking(move || k.shutdown(std::time::Duration::from_secs(30)))
            .await
            .context("kafka shutdown task")?;
    }
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

/// Ingest flags (kept apart so the merge logic stays in one place).
struct IngestFlags {
    kafka_brokers: Option<String>,
    topics: Option<Vec<String>>,
    group: Option<String>,
    price_book: Option<PathBuf>,
    max_lateness: Option<String>,
    max_future: Option<String>,
    dedup_window: Option<String>,
    dedup_max_keys: Option<usize>,
    max_event_bytes: Option<usize>,
    batch_max_events: Option<usize>,
    batch_linger: Option<String>,
    kafka_session_timeout: Option<String>,
}

fn duration_ns(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn ingest_settings(
    f: IngestFlags,
    file: &FileConfig,
    store: &StoreOptions,
) -> anyhow::Result<(PipelineConfig, Option<PathBuf>, Option<KafkaConfig>)> {
    let mut pipeline = PipelineConfig::default();
    pipeline.limits.labels = store.label_limits;
    if let Some(d) = f.max_lateness.or(file.max_lateness.clone()) {
        pipeline.limits.max_lateness_ns = duration_ns(parse_duration("--max-lateness", &d)?);
    }
    if let Some(d) = f.max_future.or(file.max_future.clone()) {
        pipeline.limits.max_future_ns = duration_ns(parse_duration("--max-future", &d)?);
    }
    if let Some(n) = f.max_event_bytes.or(file.max_event_bytes) {
        pipeline.limits.max_payload_bytes = n.max(1);
    }
    if let Some(d) = f.dedup_window.or(file.dedup_window.clone()) {
        pipeline.dedup.window = parse_duration("--dedup-window", &d)?;
    }
    if let Some(n) = f.dedup_max_keys.or(file.dedup_max_keys) {
        pipeline.dedup.max_keys = n.max(8);
    }
    pipeline.dedup.fsync = matches!(store.fsync, FsyncPolicy::EveryBatch);
    let price_book = f.price_book.or(file.price_book.clone());
    let kafka = match f.kafka_brokers.or(file.kafka_brokers.clone()) {
        None => None,
        Some(brokers) => {
            let mut k = KafkaConfig {
                brokers,
                ..KafkaConfig::default()
            };
            if let Some(t) = f.topics.or(file.topics.clone()) {
                k.topics = t
                    .into_iter()
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect();
                if k.topics.is_empty() {
                    bail!("--topics must name at least one topic");
                }
            }
            if let Some(g) = f.group.or(file.group.clone()) {
                k.group = g;
            }
            if let Some(n) = f.batch_max_events.or(file.batch_max_events) {
                k.batch_max_events = n.max(1);
            }
            if let Some(d) = f.batch_linger.or(file.batch_linger.clone()) {
                k.batch_linger = parse_duration("--batch-linger", &d)?;
            }
            if let Some(d) = f.kafka_session_timeout.or(file.kafka_session_timeout.clone()) {
                k.session_timeout = parse_duration("--kafka-session-timeout", &d)?;
            }
            Some(k)
        }
    };
    Ok((pipeline, price_book, kafka))
}

/// Opens the ingest pipeline (dedup state, price book), publishes it to the HTTP routes and
/// starts the Kafka workers when configured.
async fn start_ingest(
    pcfg: &PipelineConfig,
    price_book: Option<&std::path::Path>,
    kafka: Option<KafkaConfig>,
    store: &Arc<Store>,
    state: &Arc<AppState>,
) -> anyhow::Result<Option<KafkaIngest>> {
    let prices = match price_book {
        Some(p) => PriceBook::load(p)?,
        None => PriceBook::default(),
    };
    let metrics = Arc::new(IngestMetrics::default());
    let (st, pcfg) = (store.clone(), pcfg.clone());
    let pipeline = tokio::task::spawn_blocking(move || Pipeline::new(st, prices, pcfg, metrics))
        .await
        .context("ingest pipeline task")??;
    let pipeline = Arc::new(pipeline);
    let _ = state.ingest.set(pipeline.clone());
    match kafka {
        Some(k) => {
            tracing::info!(brokers = %k.brokers, topics = ?k.topics, group = %k.group, "starting Kafka ingest");
            let kafka = tokio::task::spawn_blocking(move || KafkaIngest::start(pipeline, k))
                .await
                .context("kafka start task")??;
            Ok(Some(kafka))
        }
        None => Ok(None),
    }
}
