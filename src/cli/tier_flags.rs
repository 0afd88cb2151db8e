//! `tally serve` flags for object-storage tiering, retention overrides and rollups.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use super::config::{parse_bytes, parse_duration, FileConfig};
use crate::store::StoreOptions;
use crate::tier::TierOptions;

#[derive(Debug, Clone, Default, Args)]
pub struct TierFlags {
    /// Object store for sealed partitions: file:///path or s3://bucket/prefix (credentials,
    /// region and a custom endpoint from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
    /// AWS_ENDPOINT_URL). Enables tiering. Default: off (everything stays local)
    #[arg(long, value_name = "URL")]
    pub object_store: Option<String>,
    /// Upload partitions that ended longer ago than this, then evict the local copy. Default: 2d
    #[arg(long, value_name = "DURATION")]
    pub tier_after: Option<String>,
    /// Memory for cached pages of tiered segments (LRU), e.g. 512MiB or 1GiB. Default: 512MiB
    #[arg(long, value_name = "BYTES")]
    pub tier_cache_size: Option<String>,
    /// Deadline for one object-store request, retries included; a query of tiered data fails
    /// with a clear error after it. Default: 15s
    #[arg(long, value_name = "DURATION")]
    pub object_store_timeout: Option<String>,
    /// Per-tenant retention overriding --retention, as TENANT=DURATION (repeatable or
    /// comma-separated, e.g. acme=30d,globex=7y).
    #[arg(long, value_name = "TENANT=DURATION", value_delimiter = ',')]
    pub tenant_retention: Vec<String>,
    /// Build 5m and 1h rollups (count, sum, min, max, last, counter) of partitions that ended
    /// longer ago than this; range queries with a step of 5m/1h multiples read them. Default: off
    #[arg(long, value_name = "DURATION")]
    pub downsample_after: Option<String>,
}

impl TierFlags {
    /// Applies the flags (over the config file) to the store options.
    pub fn apply(self, file: &FileConfig, store: &mut StoreOptions) -> anyhow::Result<()> {
        let url = self.object_store.or_else(|| file.object_store.clone());
        let tier_after = self.tier_after.or_else(|| file.tier_after.clone());
        let cache = self.tier_cache_size.or_else(|| file.tier_cache_size.clone());
        let timeout = self.object_store_timeout.or_else(|| file.object_store_timeout.clone());
        match url {
            Some(url) => {
                let mut t = TierOptions::new(url);
                if let Some(d) = tier_after {
                    t.tier_after = parse_duration("--tier-after", &d)?;
                }
                if let Some(c) = cache {
                    t.cache_bytes = parse_bytes("--tier-cache-size", &c)?;
                }
                if let Some(d) = timeout {
                    t.request_timeout = parse_duration("--object-store-timeout", &d)?;
                    if t.request_timeout.is_zero() {
                        bail!("--object-store-timeout must be positive");
                    }
                }
                store.tier = Some(t);
            }
            None => {
                if tier_after.is_some() || cache.is_some() || timeout.is_some() {
                    bail!("--tier-after, --tier-cache-size and --object-store-timeout need --object-store");
                }
            }
        }
        let mut overrides: BTreeMap<String, Duration> = BTreeMap::new();
        for (tenant, d) in &file.tenant_retention {
            overrides.insert(
                tenant.clone(),
                parse_duration(&format!("tenant_retention.{tenant}"), d)?,
            );
        }
        for spec in &self.tenant_retention {
            let (tenant, d) = spec
                .split_once('=')
                .with_context(|| format!("invalid --tenant-retention {spec:?}: expected TENANT=DURATION"))?;
            if tenant.is_empty() {
                bail!("invalid --tenant-retention {spec:?}: empty tenant");
            }
            overrides.insert(tenant.to_string(), parse_duration("--tenant-retention", d)?);
        }
        store.tenant_retention = overrides;
        if let Some(d) = self.downsample_after.or_else(|| file.downsample_after.clone()) {
            store.downsample_after = Some(parse_duration("--downsample-after", &d)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_retention_and_dependencies() {
        let mut o = StoreOptions::default();
        let f = TierFlags {
            tenant_retention: vec!["acme=30d".into(), "globex=2h".into()],
            ..Default::default()
        };
        f.apply(&FileConfig::default(), &mut o).unwrap();
        assert_eq!(o.tenant_retention["acme"], Duration::from_secs(30 * 86400));
        let bad = TierFlags {
            tier_after: Some("2d".into()),
            ..Default::default()
        };
        let e = bad.apply(&FileConfig::default(), &mut o).unwrap_err();
        assert!(e.to_string().contains("--object-store"), "{e}");
    }
}
