use std::time::Duration;

/// Where and when sealed partitions move to object storage.
#[derive(Debug, Clone)]
pub struct TierOptions {
    /// `file:///path` or `s3://bucket/prefix` (gs:// and az:// with the `gcp` / `azure`
    /// cargo features).
    pub url: String,
    /// Partitions that ended longer ago than this are uploaded and evicted locally.
    pub tier_after: Duration,
    /// Bytes of object pages kept in memory for queries (LRU).
    pub cache_bytes: u64,
    /// Cache and request granularity for reads of tiered segments.
    pub page_bytes: u64,
    /// Deadline for one object-store request, retries included.
    pub request_timeout: Duration,
    /// object_store configuration keys applied over the environment (e.g.
    /// `aws_endpoint`, `aws_access_key_id`), for embedders that do not use env vars.
    pub config: Vec<(String, String)>,
}

impl TierOptions {
    pub fn new(url: impl Into<String>) -> TierOptions {
        TierOptions {
            url: url.into(),
            tier_after: Duration::from_secs(2 * 86_400),
            cache_bytes: 512 << 20,
            page_bytes: 1 << 20,
            request_timeout: Duration::from_secs(15),
            config: Vec::new(),
        }
    }

    /// The URL with any `user:password@` part removed.
    pub fn display_url(&self) -> String {
        match (self.url.find("://"), self.url.find('@')) {
            (Some(s), Some(at)) if at > s => format!("{}{}", &self.url[..s + 3], &self.url[at + 1..]),
            _ => self.url.clone(),
        }
    }
}
