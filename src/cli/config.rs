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
    pub query_cache_points: Option<usize>,
    pub self_scrape_interval: Option<String>,
    // SQL (see docs/sql.md).
    pub sql_max_rows_scanned: Option<u64>,
    pub sql_max_memory: Option<ByteSize>,
    pub sql_timeout: Option<String>,
    pub tenant_tokens: Option<PathBuf>,
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
    /// Build 5m/1h rollups of partitions older than this (see README "Rollups").
    pub downsample_after: Option<String>,
    /// tenant → retention duration, overriding `retention`.
    #[serde(default)]
    pub tenant_retention: std::collections::BTreeMap<String, String>,
}

/// A size in the config file: a number of bytes or a string like `"512MiB"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ByteSize {
    Bytes(u64),
    Text(String),
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ByteSize::Bytes(n) => write!(f, "{n}"),
            ByteSize::Text(s) => f.write_str(s),
        }
    }
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

/// Parses sizes like `1048576`, `512MiB`, `1GB`, `64k` (K/M/G/T = 1000^n, KiB/MiB/GiB/TiB = 1024^n).
pub fn parse_bytes(what: &str, s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || anyhow::anyhow!("invalid size for {what}: {s:?} (examples: 1048576, 512MiB, 2GB)");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000u64.pow(2),
        "g" | "gb" => 1000u64.pow(3),
        "t" | "tb" => 1000u64.pow(4),
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let b = n.checked_mul(mult).ok_or_else(bad)?;
    if b == 0 {
        anyhow::bail!("{what} must be positive");
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("x", "1048576").unwrap(), 1 << 20);
        assert_eq!(parse_bytes("x", "512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("x", "2GB").unwrap(), 2_000_000_000);
        assert_eq!(parse_bytes("x", "64k").unwrap(), 64_000);
        assert!(parse_bytes("x", "12 parsecs").is_err());
        assert!(parse_bytes("x", "").is_err());
        assert!(parse_bytes("x", "0").is_err());
        assert!(parse_bytes("x", "99999999999TiB").is_err());
    }
}
