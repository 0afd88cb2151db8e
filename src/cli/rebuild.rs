//! `tally rebuild --from-object-store URL --data-dir DIR`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::config::parse_duration;
use crate::tier::rebuild::rebuild;
use crate::tier::TierOptions;

#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// The bucket the lost node tiered to: file:///path or s3://bucket/prefix (same URL and
    /// AWS_* environment as its `serve --object-store`).
    #[arg(long, value_name = "URL")]
    pub from_object_store: String,
    /// Empty (or missing) directory to restore into; then run `tally serve --data-dir DIR
    /// --object-store URL`. Default: ./data
    #[arg(long, value_name = "DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Deadline for one object-store request, retries included. Default: 15s
    #[arg(long, value_name = "DURATION", default_value = "15s")]
    pub object_store_timeout: String,
}

pub fn run(args: RebuildArgs) -> anyhow::Result<()> {
    let mut opts = TierOptions::new(args.from_object_store.clone());
    opts.request_timeout = parse_duration("--object-store-timeout", &args.object_store_timeout)?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} segments ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("restoring");
    let report = rebuild(&args.data_dir, &opts, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("rebuilding {} from {}", args.data_dir.display(), opts.display_url()))?;
    bar.finish_and_clear();
    println!("{}", serde_json::to_string(&report)?);
    eprintln!(
        "restored {} segments ({} samples) into {}; start it with: tally serve --data-dir {} --object-store {}",
        report.segments,
        report.samples,
        args.data_dir.display(),
        args.data_dir.display(),
        opts.display_url()
    );
    Ok(())
}
