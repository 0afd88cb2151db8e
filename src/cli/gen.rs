//! `tally gen`: synthetic cost events into a Kafka topic; prints a JSON report of what was
//! sent (per-tenant counts and exact cost totals, malformed events by expected reason).

use anyhow::Context;
use clap::Args;

use crate::ingest::generator::{self, GenConfig, PRICE_BOOK};

#[derive(Debug, Args)]
pub struct GenArgs {
    /// Kafka bootstrap servers (HOST:PORT[,HOST:PORT]).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Topic to produce to (created with --partitions if missing).
    #[arg(long, default_value = "cost.compute")]
    pub topic: String,
    /// Events per second (0: as fast as possible).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Number of messages to send.
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// Number of tenants (tenant-000, tenant-001, ...).
    #[arg(long, default_value_t = 5)]
    pub tenants: usize,
    /// Share of malformed messages (each kind maps to one dead-letter reason).
    #[arg(long, default_value_t = 0.01)]
    pub malformed_share: f64,
    /// Share of re-sent copies of earlier valid events (same event_id).
    #[arg(long, default_value_t = 0.01)]
    pub duplicate_share: f64,
    /// Share of valid events 1-40 h old (within the default 48 h lateness).
    #[arg(long, default_value_t = 0.01)]
    pub late_share: f64,
    /// Share of valid events with a SKU missing from the price book.
    #[arg(long, default_value_t = 0.01)]
    pub unpriced_share: f64,
    /// Share of priced events that carry their own `cost` field.
    #[arg(long, default_value_t = 0.2)]
    pub explicit_cost_share: f64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Partitions for a topic that has to be created.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Prefix of event_ids (use a different one per run into the same topic).
    #[arg(long, default_value = "gen")]
    pub run_id: String,
    /// Leave the offsets of malformed messages out of the report.
    #[arg(long)]
    pub no_offsets: bool,
    /// Print the generator's price book (TOML, for `tally serve --price-book`) and exit.
    #[arg(long)]
    pub print_price_book: bool,
}

pub fn run(a: GenArgs) -> anyhow::Result<()> {
    if a.print_price_book {
        print!("{PRICE_BOOK}");
        return Ok(());
    }
    for (name, v) in [
        ("--malformed-share", a.malformed_share),
        ("--duplicate-share", a.duplicate_share),
        ("--late-share", a.late_share),
        ("--unpriced-share", a.unpriced_share),
        ("--explicit-cost-share", a.explicit_cost_share),
    ] {
        anyhow::ensure!((0.0..=1.0).contains(&v), "{name} must be between 0 and 1");
    }
    let cfg = GenConfig {
        brokers: a.kafka_brokers,
        topic: a.topic,
        rate: a.rate,
        count: a.count,
        tenants: a.tenants.max(1),
        malformed_share: a.malformed_share,
        duplicate_share: a.duplicate_share,
        late_share: a.late_share,
        unpriced_share: a.unpriced_share,
        explicit_cost_share: a.explicit_cost_share,
        seed: a.seed,
        partitions: a.partitions.max(1),
        run_id: a.run_id,
        report_offsets: !a.no_offsets,
    };
    let report = generator::run(&cfg).context("producing events")?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
