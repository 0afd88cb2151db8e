//! Blocking access to the object store for the storage engine's threads.
//!
//! The engine (maintenance thread, query threads inside `spawn_blocking`) is
//! synchronous; `object_store` is async. [`ObjectTier`] owns a small private tokio
//! runtime, runs each request there and waits on a channel with a deadline, so a dead
//! or hanging object store turns into a [`TierError::Timeout`] instead of a stuck query.
//! Reads go through a page cache ([`PageCache`]) and fetch only the missing pages.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::cache::PageCache;
use super::metrics::TierMetrics;
use super::options::TierOptions;
use super::url::connect;

#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error("object store {url}: {op} {key} failed: {reason}")]
    Request {
        url: String,
        op: &'static str,
        key: String,
        reason: String,
    },
    #[error("object store {url}: {op} {key} timed out after {secs:.1} s")]
    Timeout {
        url: String,
        op: &'static str,
        key: String,
        secs: f64,
    },
    #[error("object store {url}: {key} not found")]
    NotFound { url: String, key: String },
    #[error("invalid object store configuration: {0}")]
    Config(String),
    #[error("local file {path}: {source}")]
    Local {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Objects larger than this are uploaded in parts.
const MULTIPART_THRESHOLD: usize = 32 << 20;
const MULTIPART_CHUNK: usize = 16 << 20;

pub struct ObjectTier {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// The URL without credentials, for messages.
    url: String,
    runtime: Option<tokio::runtime::Runtime>,
    cache: PageCache,
    page_bytes: u64,
    timeout: Duration,
    pub metrics: TierMetrics,
}

impl std::fmt::Debug for ObjectTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectTier")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl ObjectTier {
    pub fn connect(opts: &TierOptions) -> Result<Arc<ObjectTier>, TierError> {
        let (store, prefix) = connect(opts)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tally-tier")
            .enable_all()
            .build()
            .map_err(|e| TierError::Config(format!("cannot start the object store runtime: {e}")))?;
        Ok(Arc::new(ObjectTier {
            store,
            prefix,
            url: opts.display_url(),
            runtime: Some(runtime),
            cache: PageCache::new(opts.cache_bytes),
            page_bytes: opts.page_bytes.max(4096),
            timeout: opts.request_timeout,
            metrics: TierMetrics::default(),
        }))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn cache(&self) -> &PageCache {
        &self.cache
    }

    fn path(&self, key: &str) -> ObjectPath {
        let mut parts: Vec<object_store::path::PathPart<'static>> =
            self.prefix.parts().map(|p| p.as_ref().to_string().into()).collect();
        parts.extend(key.split('/').filter(|s| !s.is_empty()).map(|s| s.to_string().into()));
        ObjectPath::from_iter(parts)
    }

    /// Runs one request on the tier runtime and waits for it, at most the configured
    /// timeout (object_store's own retries happen inside that budget).
    fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        key: &str,
        fut: impl std::future::Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> Result<T, TierError> {
        let Some(rt) = &self.runtime else {
            return Err(TierError::Config("object store runtime already shut down".into()));
        };
        let started = Instant::now();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        self.metrics.requests.add(1);
        let res = rx.recv_timeout(self.timeout);
        self.metrics.request_seconds.observe(started.elapsed().as_secs_f64());
        match res {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(object_store::Error::NotFound { .. })) => Err(TierError::NotFound {
                url: self.url.clone(),
                key: key.to_string(),
            }),
            Ok(Err(e)) => {
                self.metrics.request_errors.add(1);
                Err(TierError::Request {
                    url: self.url.clone(),
                    op,
                    key: key.to_string(),
                    reason: e.to_string(),
                })
            }
            Err(_) => {
                self.metrics.request_errors.add(1);
                Err(TierError::Timeout {
                    url: self.url.clone(),
                    op,
                    key: key.to_string(),
                    secs: self.timeout.as_secs_f64(),
                })
            }
        }
    }

    pub fn put(&self, key: &str, bytes: Bytes) -> Result<(), TierError> {
        let (store, path) = (self.store.clone(), self.path(key));
        if bytes.len() <= MULTIPART_THRESHOLD {
            return self.run("put", key, async move {
                store.put(&path, PutPayload::from(bytes)).await.map(|_| ())
            });
        }
        self.run("multipart put", key, async move {
            let upload = store.put_multipart(&path).await?;
            let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, MULTIPART_CHUNK);
            w.put(bytes);
            w.finish().await.map(|_| ())
        })
    }

    pub fn size(&self, key: &str) -> Result<u64, TierError> {
        let (store, path) = (self.store.clone(), self.path(key));
        self.run("head", key, async move { store.head(&path).await.map(|m| m.size) })
    }

    pub fn get(&self, key: &str) -> Result<Bytes, TierError> {
        let (store, path) = (self.store.clone(), self.path(key));
        self.run("get", key, async move { store.get(&path).await?.bytes().await })
    }

    /// Fetches `range` of an object directly (no cache); used for verification and rebuild.
    pub fn get_range_uncached(&self, key: &str, range: Range<u64>) -> Result<Bytes, TierError> {
        let (store, path) = (self.store.clone(), self.path(key));
        self.run("range get", key, async move { store.get_range(&path, range).await })
    }

    /// Deletes an object; a missing object counts as deleted.
    pub fn delete(&self, key: &str) -> Result<(), TierError> {
        let (store, path) = (self.store.clone(), self.path(key));
        match self.run("delete", key, async move { store.delete(&path).await }) {
            Ok(()) | Err(TierError::NotFound { .. }) => {
                self.cache.forget(key);
                self.metrics.objects_deleted.add(1);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Reads `range` of an immutable object of `size` bytes through the page cache,
    /// fetching only missing pages (adjacent missing pages in one request).
    pub fn read_range(&self, key: &Arc<str>, size: u64, range: Range<u64>) -> Result<Bytes, TierError> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        if range.end > size {
            return Err(TierError::Request {
                url: self.url.clone(),
                op: "range get",
                key: key.to_string(),
                reason: format!("range {range:?} beyond the object size {size}"),
            });
        }
        let pb = self.page_bytes;
        let (first, last) = (range.start / pb, (range.end - 1) / pb);
        let mut pages: Vec<Option<Bytes>> = (first..=last).map(|p| self.cache.get(key, p)).collect();
        let hits = pages.iter().filter(|p| p.is_some()).count() as u64;
        self.metrics.cache_hits.add(hits);
        self.metrics.cache_misses.add(pages.len() as u64 - hits);
        // Runs of consecutive missing pages → one ranged request each.
        let mut runs: Vec<Range<u64>> = Vec::new();
        for (i, p) in pages.iter().enumerate() {
            if p.is_none() {
                let page = first + i as u64;
                match runs.last_mut() {
                    Some(r) if r.end == page => r.end = page + 1,
                    _ => runs.push(page..page + 1),
                }
            }
        }
        if !runs.is_empty() {
            let byte_ranges: Vec<Range<u64>> = runs.iter().map(|r| r.start * pb..(r.end * pb).min(size)).collect();
            let (store, path) = (self.store.clone(), self.path(key));
            let want = byte_ranges.clone();
            let fetched = self.run("range get", key, async move { store.get_ranges(&path, &want).await })?;
            for ((run, bytes), br) in runs.iter().zip(fetched).zip(&byte_ranges) {
                if bytes.len() as u64 != br.end - br.start {
                    return Err(TierError::Request {
                        url: self.url.clone(),
                        op: "range get",
                        key: key.to_string(),
                        reason: format!("asked for {} bytes, got {}", br.end - br.start, bytes.len()),
                    });
                }
                self.metrics.bytes_fetched.add(bytes.len() as u64);
                for page in run.clone() {
                    let lo = ((page - run.start) * pb) as usize;
                    let hi = (lo + pb as usize).min(bytes.len());
                    let b = bytes.slice(lo..hi);
                    self.cache.insert(key, page, b.clone());
                    pages[(page - first) as usize] = Some(b);
                }
            }
        }
        let start_in_first = (range.start - first * pb) as usize;
        let len = (range.end - range.start) as usize;
        let missing = || TierError::Request {
            url: self.url.clone(),
            op: "range get",
            key: key.to_string(),
            reason: "a page was neither cached nor fetched".into(),
        };
        if pages.len() == 1 {
            // One page: hand out a slice of it without copying.
            let p = pages[0].take().ok_or_else(missing)?;
            if start_in_first + len > p.len() {
                return Err(missing());
            }
            return Ok(p.slice(start_in_first..start_in_first + len));
        }
        let mut out = BytesMut::with_capacity(len);
        for (i, p) in pages.into_iter().enumerate() {
            let p = p.ok_or_else(missing)?;
            let lo = if i == 0 { start_in_first } else { 0 };
            let hi = (len - out.len() + lo).min(p.len());
            out.extend_from_slice(p.get(lo..hi).ok_or_else(missing)?);
        }
        Ok(out.freeze())
    }
}

impl Drop for ObjectTier {
    fn drop(&mut self) {
        // May run on an async thread (the last Arc dropped by the server): shutting down
        // in the background is the form tokio allows there.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
