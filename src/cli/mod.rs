//! Command-line interface: `tally <subcommand>`.

pub mod config;
pub mod export;
pub mod gen;
pub mod promql_test;
pub mod serve;
pub mod rebuild;
pub mod sql;
pub mod tier_flags;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tally",
    version,
    about = "Embedded time-series cost store with a Prometheus-compatible query server"
)]
pub struct Cli {
    /// Log filter (e.g. `info`, `tally=debug`); also read from RUST_LOG.
    #[arg(long, global = true, env = "TALLY_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size difference between subcommands does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: store + HTTP API on a local data directory.
    Serve(serve::ServeArgs),
    /// Run Prometheus PromQL test files (`*.test`, 2.42 format) against fresh stores.
    #[command(name = "promql-test")]
    PromqlTest(promql_test::PromqlTestArgs),
    /// Produce synthetic cost events to Kafka and print what was sent (JSON).
    Gen(gen::GenArgs),
    /// Run a SQL query (tables `samples` and `costs`) against a server or a data directory.
    Sql(sql::SqlArgs),
    /// Export data for finance tools (`tally export ledger --month YYYY-MM ...`).
    Export(export::ExportArgs),
    /// Restore a lost data directory from the object store (tiered partitions + manifest).
    Rebuild(rebuild::RebuildArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::PromqlTest(args) => promql_test::run(args),
        Command::Gen(args) => gen::run(args),
        Command::Sql(args) => sql::run(args),
        Command::Export(args) => export::run(args),
        Command::Rebuild(args) => rebuild::run(args),
    }
}
