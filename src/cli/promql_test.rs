//! `tally promql-test FILE...`: runs Prometheus PromQL test files (2.42 format) against
//! a fresh real [`Store`] per loaded data set, printing per file and in total a line
//! `N passed, N failed` and every failure. Exits non-zero when anything failed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use crate::index::Matcher;
use crate::model::{Sample, SeriesKind, Value};
use crate::query::promql::testfile::{run_file, FileReport, TestData};
use crate::store::{ReadError, SelectRequest, SeriesSource, SeriesStream, Snapshot, Store, StoreOptions, WriteBatch};
use crate::wal::FsyncPolicy;

#[derive(Debug, Args)]
pub struct PromqlTestArgs {
    /// Test files (`*.test`); a directory stands for the `*.test` files in it.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Where the temporary stores go (default: the system temp directory).
    #[arg(long, value_name = "DIR")]
    pub tmp_dir: Option<PathBuf>,
}

/// A store in a temporary directory, closed and deleted on drop.
struct TempStore {
    store: Option<Store>,
    snap: Snapshot,
    dir: PathBuf,
}

impl SeriesSource for TempStore {
    fn select<'a>(&'a self, req: &SelectRequest<'a>) -> Result<SeriesStream<'a>, ReadError> {
        self.snap.select(req)
    }

    fn label_names(
        &self,
        tenant: Option<&str>,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, ReadError> {
        self.snap.label_names(tenant, matchers, start, end)
    }

    fn label_values(
        &self,
        tenant: Option<&str>,
        name: &str,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, ReadError> {
        self.snap.label_values(tenant, name, matchers, start, end)
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        if let Some(store) = self.store.take() {
            if let Err(e) = store.close() {
                tracing::warn!(error = %e, "closing a test store");
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(error = %e, dir = %self.dir.display(), "removing a test store");
        }
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// Loads test data (ms timestamps) into a fresh store: ns, float gauges, NaN bits kept.
fn load_store(base: &Path, data: TestData) -> Result<TempStore, String> {
    let dir = base.join(format!(
        "tally-promql-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let opts = StoreOptions {
        background: false,
        fsync: FsyncPolicy::Interval(Duration::from_secs(60)),
        flush_on_close: false,
        ..StoreOptions::default()
    };
    let store = Store::open(&dir, opts).map_err(|e| format!("opening store in {}: {e}", dir.display()))?;
    let mut batch = WriteBatch::new();
    for (labels, samples) in data {
        let samples: Vec<Sample> = samples
            .into_iter()
            .map(|(ms, v)| Sample {
                ts: ms.saturating_mul(1_000_000),
                value: Value::Float(v),
            })
            .collect();
        if !samples.is_empty() {
            batch.add(labels, SeriesKind::GAUGE, samples);
        }
    }
    let mut ts = TempStore {
        snap: store.snapshot(),
        store: Some(store),
        dir,
    };
    if let Some(store) = &ts.store {
        store.append(&batch).map_err(|e| format!("appending test data: {e}"))?;
        ts.snap = store.snapshot();
    }
    Ok(ts)
}

fn expand(files: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for f in files {
        if f.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(f)
                .with_context(|| format!("reading directory {}", f.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "test"))
                .collect();
            v.sort();
            if v.is_empty() {
                bail!("no *.test files in {}", f.display());
            }
            out.extend(v);
        } else {
            out.push(f.clone());
        }
    }
    Ok(out)
}

/// Runs the files; returns the total report.
pub fn run_files(files: &[PathBuf], tmp: &Path) -> anyhow::Result<FileReport> {
    let mut total = FileReport::default();
    let mut loader = |data: TestData| -> Result<Box<dyn SeriesSource>, String> {
        load_store(tmp, data).map(|s| Box::new(s) as Box<dyn SeriesSource>)
    };
    for path in expand(files)? {
        let r = run_file(&path, &mut loader);
        println!("== {}", path.display());
        for f in &r.failures {
            println!("FAIL {f}");
        }
        println!("{}", r.summary());
        total.passed += r.passed;
        total.failed += r.failed;
        total.failures.extend(r.failures);
    }
    println!("== total");
    for f in &total.failures {
        println!("FAIL {f}");
    }
    println!("{}", total.summary());
    Ok(total)
}

pub fn run(args: PromqlTestArgs) -> anyhow::Result<()> {
    let tmp = args.tmp_dir.unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let total = run_files(&args.files, &tmp)?;
    if total.failed > 0 {
        bail!("{} PromQL test evaluation(s) failed", total.failed);
    }
    Ok(())
}
