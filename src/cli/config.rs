//! `--config FILE`: a TOML file holding any of `tally serve`'s settings. A flag given
//! on the command line wins over the file; the file wins over built-in defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

/// Every key is optional; unknown keys are an error (typos should not be silently ignored).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub retention: Option<String>,
    pub partition_width: Option<String>,
    pub fsync: Option<String>,
    pub fsync_interval: Option<String>,
    pub head_max_samples: Option<usize>,
    pub flush_interval: Option<String>,
    pub compact_min_segments: Option<usize>,
    pub default_tenant: Option<String>,
    pub query_max_samples: Option<usize>,
    pub query_timeout: Option<String>,
    pub query_lookback_delta: Option<String>,
    // Ingest (see docs/ingest.md).
    pub kafka_brokers: Option<String>,
    pub topics: Option<Vec<String>>,
    pub group: Option<String>,
    pub price_book: Option<PathBuf>,
    pub max_lateness: Option<String>,
    pub max_future: Option<String>,
    pub dedup_window: Option<String>,
    pub dedup_max_keys: Option<usize>,
    pub max_event_bytes: Option<usize>,
    pub batch_max_events: Option<usize>,
    pub batch_linger: Option<String>,
    pub kafka_session_timeout: Option<String>,
    // Tiering (see README "Object storage").
    pub object_store: Option<String>,
    pub tier_after: Option<String>,
    pub tier_cache_size: Option<String>,
    pub object_store_timeout: Option<String>,
    /// tenant → retention duration, overriding `retention`.
    #[serde(default)]
    pub tenant_retention: std::collections::BTreeMap<String, String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }
}

/// Parses durations like `15s`, `2h`, `400d`, `1h 30m`.
pub fn parse_duration(what: &str, s: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(s.trim())
        .with_context(|| format!("invalid duration for {what}: {s:?} (examples: 15s, 2h, 400d)"))
}
