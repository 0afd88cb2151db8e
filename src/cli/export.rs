//! `tally export ledger --month 2026-10 --format parquet|arrow --out FILE`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use super::sql::{error_text, http_request, open_local, scope_headers};
use crate::export::{self, Format};

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub what: ExportWhat,
}

#[derive(Debug, Subcommand)]
pub enum ExportWhat {
    /// The monthly cost ledger (FOCUS 1.2 column names, exact Decimal128(38, 9) money).
    Ledger(LedgerArgs),
}

#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// Month to export, YYYY-MM (UTC).
    #[arg(long)]
    pub month: String,
    /// File format: Parquet (zstd, column statistics) or Arrow IPC file (.arrow).
    #[arg(long, default_value = "parquet", value_parser = ["parquet", "arrow"])]
    pub format: String,
    /// Output file; with --partitioned, a directory receiving month=…/tenant=…/ledger.<ext>.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Charge period of a row.
    #[arg(long, default_value = "day", value_parser = ["hour", "day"])]
    pub grain: String,
    /// Round BilledCost (and the other cost columns) to the currency's minor unit by largest
    /// remainder, so rounded rows sum exactly to the rounded tenant and grand totals; the exact
    /// amount stays in x_UnroundedCost.
    #[arg(long, value_parser = ["minor-units"])]
    pub round: Option<String>,
    /// Hive-style output: one file per tenant, --out/month=YYYY-MM/tenant=T/ledger.<ext>. With
    /// --server the whole ledger is downloaded (as Arrow) and split locally, so the files hold
    /// exactly the rows (and rounding) of the single-file export.
    #[arg(long)]
    pub partitioned: bool,
    /// Export only this tenant (X-Scope-OrgID for a server).
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// Export from a running server, e.g. http://127.0.0.1:9201
    #[arg(long, value_name = "URL", conflicts_with = "data_dir")]
    pub server: Option<String>,
    /// Export directly from a data directory (fails while a server holds it).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Bearer token for a server started with --tenant-tokens (sent as `Authorization: Bearer`).
    #[arg(long, value_name = "TOKEN", env = "TALLY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(a: ExportArgs) -> anyhow::Result<()> {
    match a.what {
        ExportWhat::Ledger(l) => ledger(l),
    }
}

fn bar(quiet: bool, msg: &'static str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb
}

fn ledger(a: LedgerArgs) -> anyhow::Result<()> {
    let format = Format::parse(&a.format)?;
    match (&a.server, &a.data_dir) {
        (Some(url), _) => {
            // Partitioned output is split here from the server's Arrow file.
            let wire = if a.partitioned { "arrow" } else { a.format.as_str() };
            let mut path = format!(
                "/api/v1/export/ledger?month={}&format={wire}&grain={}",
                urlencode(&a.month),
                a.grain
            );
            if let Some(r) = &a.round {
                path.push_str(&format!("&round={r}"));
            }
            let headers = scope_headers(a.tenant.as_deref(), a.token.as_deref());
            let pb = if a.quiet {
                ProgressBar::hidden()
            } else {
                let pb = ProgressBar::new_spinner();
                pb.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {bytes} ({elapsed})")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                // Ticks while the server builds the ledger, before the first byte arrives.
                pb.enable_steady_tick(std::time::Duration::from_millis(200));
                pb
            };
            pb.set_message("downloading ledger");
            let resp = http_request(url, "GET", &path, &headers, &[], &mut |n| pb.set_position(n))?;
            pb.finish_and_clear();
            if resp.status != 200 {
                bail!("server answered {}: {}", resp.status, error_text(&resp.body));
            }
            if a.partitioned {
                let batches = export::read_arrow_ledger(&resp.body)?;
                let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                let files = export::write_partitioned_batches(&a.month, &batches, format, &a.out)?;
                eprintln!("wrote {rows} rows in {} files under {}", files.len(), a.out.display());
            } else {
                std::fs::write(&a.out, &resp.body).with_context(|| format!("writing {}", a.out.display()))?;
                eprintln!("wrote {} ({} bytes)", a.out.display(), resp.body.len());
            }
        }
        (None, Some(dir)) => {
            let store = open_local(dir)?;
            let opts =
                crate::api::sql::ledger_options(&store, &a.month, &a.grain, a.round.as_deref(), a.tenant.clone())
                    .map_err(anyhow::Error::msg)?;
            let pb = bar(a.quiet, "reading cost series");
            let snap = store.snapshot();
            let l = export::build_ledger(&snap, &opts, &mut |done, total| {
                pb.set_length(total);
                pb.set_position(done);
            })?;
            pb.finish_and_clear();
            if a.partitioned {
                let files = export::write_partitioned(&l, format, &a.out)?;
                eprintln!(
                    "wrote {} rows in {} files under {} ({} samples)",
                    l.rows.len(),
                    files.len(),
                    a.out.display(),
                    l.samples
                );
            } else {
                let tmp = a.out.with_extension("tmp");
                let f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
                let w = export::write_ledger(&l, format, std::io::BufWriter::new(f))?;
                w.into_inner()
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?
                    .sync_all()?;
                std::fs::rename(&tmp, &a.out).with_context(|| format!("writing {}", a.out.display()))?;
                eprintln!(
                    "wrote {} rows to {} ({} samples)",
                    l.rows.len(),
                    a.out.display(),
                    l.samples
                );
            }
        }
        (None, None) => bail!("give --server URL (a running tally) or --data-dir DIR"),
    }
    Ok(())
}

/// Percent-encodes a query-string value (RFC 3986 unreserved characters kept).
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
