//! `--object-store URL` → an `object_store` client plus the key prefix inside it.

use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

use super::object::TierError;
use super::options::TierOptions;

pub(crate) fn connect(opts: &TierOptions) -> Result<(Arc<dyn ObjectStore>, ObjectPath), TierError> {
    let url = opts.url.as_str();
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(TierError::Config(format!(
            "object store URL {:?} has no scheme; use file:///path or s3://bucket/prefix",
            opts.display_url()
        )));
    };
    match scheme {
        "file" => {
            if !rest.starts_with('/') {
                return Err(TierError::Config(format!(
                    "file URL {url:?} must be absolute (file:///path)"
                )));
            }
            std::fs::create_dir_all(rest).map_err(|source| TierError::Local {
                path: rest.to_string(),
                source,
            })?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(rest)
                .map_err(|e| TierError::Config(format!("{url}: {e}")))?;
            Ok((Arc::new(fs), ObjectPath::default()))
        }
        "s3" | "s3a" => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(TierError::Config(format!("S3 URL {url:?} names no bucket")));
            }
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry(opts))
                .with_client_options(
                    object_store::ClientOptions::new()
                        .with_timeout(opts.request_timeout)
                        .with_connect_timeout(opts.request_timeout.min(std::time::Duration::from_secs(5))),
                );
            let mut endpoint = std::env::var("AWS_ENDPOINT_URL")
                .or_else(|_| std::env::var("AWS_ENDPOINT"))
                .unwrap_or_default();
            for (k, v) in &opts.config {
                let key: object_store::aws::AmazonS3ConfigKey = k
                    .to_ascii_lowercase()
                    .parse()
                    .map_err(|_| TierError::Config(format!("unknown S3 option {k:?}")))?;
                if matches!(key, object_store::aws::AmazonS3ConfigKey::Endpoint) {
                    endpoint = v.clone();
                }
                b = b.with_config(key, v);
            }
            // A custom endpoint over plain HTTP (MinIO, s3s-fs, localstack) must be allowed explicitly.
            if endpoint.starts_with("http://") {
                b = b.with_allow_http(true);
            }
            if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
                b = b.with_region("us-east-1");
            }
            let s3 = b.build().map_err(|e| TierError::Config(format!("{}: {e}", opts.display_url())))?;
            Ok((Arc::new(s3), prefix_path(prefix)))
        }
        #[cfg(feature = "gcp")]
        "gs" => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let g = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry(opts))
                .build()
                .map_err(|e| TierError::Config(format!("{url}: {e}")))?;
            Ok((Arc::new(g), prefix_path(prefix)))
        }
        #[cfg(feature = "azure")]
        "az" | "azure" => {
            let (container, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let a = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(container)
                .with_retry(retry(opts))
                .build()
                .map_err(|e| TierError::Config(format!("{url}: {e}")))?;
            Ok((Arc::new(a), prefix_path(prefix)))
        }
        other => Err(TierError::Config(format!(
            "object store scheme {other:?} is not supported by this build; use file:// or s3:// \
             (gs:// and az:// need the `gcp` / `azure` cargo features)"
        ))),
    }
}

fn prefix_path(prefix: &str) -> ObjectPath {
    ObjectPath::from_iter(prefix.split('/').filter(|s| !s.is_empty()))
}

/// Retries stay well inside the request deadline so an outage surfaces as an error.
fn retry(opts: &TierOptions) -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig::default(),
        max_retries: 3,
        retry_timeout: opts.request_timeout.mul_f64(0.8),
    }
}
