//! Synthetic cost events for `tally gen`: realistic usage of a few SKUs per tenant, with a
//! configurable share of malformed, duplicated, late and unpriced events, and an exact
//! report of what was sent (so tests and humans can reconcile against the store).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use serde::Serialize;

use super::event::format_rfc3339_ns;
use super::kafka::{ensure_topics, KafkaIngestError};
use super::pricing::PriceBook;
use crate::model::{Money, MoneySum};
use crate::store::now_ns;

/// The generator's catalogue; `tally gen --print-price-book` writes it as a price book.
pub const PRICE_BOOK: &str = r#"# tally gen's built-in price book (valid from 2000 on, no end)
[[price]]
sku = "compute.m5.large"
unit = "hour"
unit_price = "0.096"
currency = "USD"
valid_from = "2000-01-01T00:00:00Z"

[[price]]
sku = "compute.r6g.xlarge"
unit = "hour"
unit_price = "0.2016"
currency = "USD"
valid_from = "2000-01-01T00:00:00Z"

[[price]]
sku = "storage.ssd.gp3"
unit = "gb_hour"
unit_price = "0.000109589"
currency = "USD"
valid_from = "2000-01-01T00:00:00Z"

[[price]]
sku = "network.egress.internet"
unit = "gb"
unit_price = "0.09"
currency = "USD"
valid_from = "2000-01-01T00:00:00Z"
"#;

const SKUS: &[(&str, &str, &str)] = &[
    ("compute_instance_hours", "compute.m5.large", "hour"),
    ("compute_instance_hours", "compute.r6g.xlarge", "hour"),
    ("storage_gb_hours", "storage.ssd.gp3", "gb_hour"),
    ("network_egress_gb", "network.egress.internet", "gb"),
];
const REGIONS: &[&str] = &["us-east-1", "eu-west-1", "ap-south-1"];

/// Malformed kinds the generator produces, with the reject code tally must give them.
pub const MALFORMED: &[&str] = &[
    "invalid_json",
    "missing_field",
    "invalid_metric_name",
    "invalid_type",
    "unknown_currency",
    "too_late",
];

#[derive(Debug, Clone)]
pub struct GenConfig {
    pub brokers: String,
    pub topic: String,
    /// Events per second (0: as fast as possible).
    pub rate: u64,
    /// Messages to send.
    pub count: u64,
    pub tenants: usize,
    pub malformed_share: f64,
    pub duplicate_share: f64,
    /// Valid but late (1–40 h old) events.
    pub late_share: f64,
    pub unpriced_share: f64,
    /// Events carrying their own `cost` instead of being priced from the book.
    pub explicit_cost_share: f64,
    pub seed: u64,
    /// Partitions when the topic has to be created.
    pub partitions: i32,
    /// Distinct event_id prefix (so several runs into one topic do not collide).
    pub run_id: String,
    pub report_offsets: bool,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: "cost.compute".into(),
            rate: 1000,
            count: 10_000,
            tenants: 5,
            malformed_share: 0.01,
            duplicate_share: 0.01,
            late_share: 0.01,
            unpriced_share: 0.01,
            explicit_cost_share: 0.2,
            seed: 1,
            partitions: 4,
            run_id: "gen".into(),
            report_offsets: true,
        }
    }
}

#[derive(Debug, Default, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TenantReport {
    /// Distinct valid events (each counted once, duplicates excluded).
    pub events: u64,
    /// Events that carry a cost (explicit or priced from the book).
    pub priced_events: u64,
    /// Sum of the usage values, in thousandths (values have 3 decimals): exact.
    pub usage_thousandths: u64,
    /// Exact total cost (decimal, USD).
    pub cost: String,
    pub cost_nanos: String,
}

#[derive(Debug, Default, Clone, Serialize, serde::Deserialize)]
pub struct GenReport {
    pub topic: String,
    pub sent: u64,
    pub valid: u64,
    pub duplicates: u64,
    pub late: u64,
    pub unpriced: u64,
    pub malformed: BTreeMap<String, u64>,
    pub tenants: BTreeMap<String, TenantReport>,
    pub delivery_errors: u64,
    pub elapsed_seconds: f64,
    /// `[partition, offset, reason]` of every malformed message.
    pub rejected: Vec<(i32, i64, String)>,
    /// Partition → one past the highest offset acknowledged by the broker: where a
    /// consumer that has read everything sent stands (taken from the delivery reports,
    /// not from the broker's watermarks).
    #[serde(default)]
    pub end_offsets: BTreeMap<i32, i64>,
    /// Broker acknowledgements that came more than 250 ms after the message was created,
    /// and the slowest one (ms): the producer + broker share of any freshness tail.
    #[serde(default)]
    pub slow_acks: u64,
    #[serde(default)]
    pub max_ack_ms: i64,
}

#[derive(Default)]
struct GenCtx {
    rejected: Mutex<Vec<(i32, i64, usize)>>,
    ends: Mutex<BTreeMap<i32, i64>>,
    errors: Mutex<u64>,
    /// (acks slower than 250 ms, slowest ack in ms).
    acks: Mutex<(u64, i64)>,
    /// The idempotent producer's state from librdkafka's statistics ("Assigned" once it
    /// holds a producer id and can send).
    idemp_state: Mutex<String>,
}

impl ClientContext for GenCtx {
    fn stats(&self, s: rdkafka::Statistics) {
        if let Some(eos) = s.eos {
            *self.idemp_state.lock() = eos.idemp_state;
        }
    }
}

impl ProducerContext for GenCtx {
    type DeliveryOpaque = usize;
    fn delivery(&self, r: &DeliveryResult<'_>, reason: usize) {
        match r {
            Ok(m) => {
                if let Some(created) = m.timestamp().to_millis() {
                    let ms = now_ns() / 1_000_000 - created;
                    let mut a = self.acks.lock();
                    a.0 += (ms > 250) as u64;
                    a.1 = a.1.max(ms);
                }
                let mut ends = self.ends.lock();
                let end = ends.entry(m.partition()).or_default();
                *end = (*end).max(m.offset() + 1);
                drop(ends);
                if reason != usize::MAX {
                    self.rejected.lock().push((m.partition(), m.offset(), reason));
                }
            }
            Err((e, _)) => {
                tracing::error!(error = %e, "delivery failed");
                *self.errors.lock() += 1;
            }
        }
    }
}

struct Valid {
    json: String,
    tenant: usize,
    qty_thousandths: u64,
}

/// Builds one valid event (and its exact cost, if any).
fn valid_event(
    rng: &mut fastrand::Rng,
    cfg: &GenConfig,
    book: &PriceBook,
    seq: u64,
    now: i64,
    late: bool,
    unpriced: bool,
) -> (Valid, Option<Money>) {
    let tenant = rng.usize(0..cfg.tenants.max(1));
    let (metric, sku, unit) = SKUS[rng.usize(0..SKUS.len())];
    let sku = if unpriced { "unknown.sku.v2" } else { sku };
    let qty_thousandths = rng.u64(1..5_000);
    let qty = format!("{}.{:03}", qty_thousandths / 1000, qty_thousandths % 1000);
    let ts = if late {
        now - rng.i64(3_600..40 * 3_600) * 1_000_000_000
    } else {
        now
    };
    let ts_field = if rng.bool() {
        format!("\"{}\"", format_rfc3339_ns(ts))
    } else {
        ts.to_string()
    };
    let region = REGIONS[rng.usize(0..REGIONS.len())];
    let instance = format!("i-{:04x}", rng.u16(0..64));
    let cc = format!("cc-{}", tenant % 3);
    let explicit = !unpriced && rng.f64() < cfg.explicit_cost_share;
    let (cost_field, cost) = if explicit {
        let cents = rng.u64(1..100_000);
        let c = format!("{}.{:02}", cents / 100, cents % 100);
        let m: Option<Money> = c.parse().ok();
        (format!(",\"cost\":\"{c}\",\"currency\":\"USD\""), m)
    } else if unpriced {
        (String::new(), None)
    } else {
        let q = qty.parse::<Money>().ok().map(|m| m.nanos());
        (
            String::new(),
            book.price(sku, ts, Some(unit), None, q).ok().map(|(m, _)| m),
        )
    };
    let json = format!(
        "{{\"event_id\":\"{}-{seq}\",\"ts\":{ts_field},\"tenant\":\"tenant-{tenant:03}\",\"metric\":\"{metric}\",\
\"value\":{qty},\"unit\":\"{unit}\",\"sku\":\"{sku}\"{cost_field},\"labels\":{{\"region\":\"{region}\",\
\"instance\":\"{instance}\",\"cost_center\":\"{cc}\"}}}}",
        cfg.run_id
    );
    (
        Valid {
            json,
            tenant,
            qty_thousandths,
        },
        cost,
    )
}

fn malformed_event(kind: usize, seq: u64, now: i64, run: &str) -> String {
    let base = |ts: i64, metric: &str, value: &str, extra: &str| {
        format!(
            "{{\"event_id\":\"{run}-bad-{seq}\",\"ts\":{ts},\"tenant\":\"tenant-000\",\"metric\":\"{metric}\",\"value\":{value}{extra}}}"
        )
    };
    match MALFORMED[kind] {
        "invalid_json" => format!("{{\"event_id\":\"{run}-bad-{seq}\",\"ts\":{now},\"tenant\":"),
        "missing_field" => format!("{{\"ts\":{now},\"tenant\":\"tenant-000\",\"metric\":\"m\",\"value\":1}}"),
        "invalid_metric_name" => base(now, "9-bad metric", "1", ""),
        "invalid_type" => base(now, "compute_instance_hours", "\"lots\"", ""),
        "unknown_currency" => base(
            now,
            "compute_instance_hours",
            "1",
            ",\"cost\":\"1.00\",\"currency\":\"ZZZ\"",
        ),
        _ => base(now - 72 * 3_600 * 1_000_000_000, "compute_instance_hours", "1", ""),
    }
}

/// `n` valid events as JSON (benchmarks): the same shape `run` produces.
pub fn sample_events(n: u64, tenants: usize, seed: u64) -> Vec<String> {
    let cfg = GenConfig {
        tenants,
        ..GenConfig::default()
    };
    let book = PriceBook::parse(PRICE_BOOK).unwrap_or_default();
    let mut rng = fastrand::Rng::with_seed(seed);
    let now = now_ns();
    (0..n)
        .map(|i| {
            valid_event(&mut rng, &cfg, &book, i, now + i as i64, false, false)
                .0
                .json
        })
        .collect()
}

/// Waits until the producer can send at once: connected, partition leaders known and
/// (idempotence) a producer id assigned. Until then librdkafka holds messages (its
/// producer-id request retries on a 500 ms timer if it ran before the first connection),
/// so without this the first events of a run would carry the producer's own start-up as
/// event-to-broker delay.
fn wait_until_ready(producer: &BaseProducer<GenCtx>, topic: &str) -> Result<(), KafkaIngestError> {
    producer.client().fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while producer.context().idemp_state.lock().as_str() != "Assigned" {
        if Instant::now() > deadline {
            return Err(KafkaIngestError::Other(format!(
                "the producer got no producer id from the broker within 30 s (state {:?})",
                producer.context().idemp_state.lock()
            )));
        }
        producer.poll(Duration::from_millis(20));
    }
    Ok(())
}

/// Produces the events and returns the exact report.
pub fn run(cfg: &GenConfig) -> Result<GenReport, KafkaIngestError> {
    ensure_topics(&cfg.brokers, std::slice::from_ref(&cfg.topic), cfg.partitions)?;
    let book = PriceBook::parse(PRICE_BOOK).map_err(|e| KafkaIngestError::Other(e.to_string()))?;
    let ctx = GenCtx::default();
    let producer: BaseProducer<GenCtx> = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .set("statistics.interval.ms", "50")
        .create_with_context(ctx)?;
    wait_until_ready(&producer, &cfg.topic)?;
    let producer = Arc::new(producer);
    let mut rng = fastrand::Rng::with_seed(cfg.seed);
    let mut report = GenReport {
        topic: cfg.topic.clone(),
        ..Default::default()
    };
    let mut sums: BTreeMap<usize, (u64, u64, MoneySum, u64)> = BTreeMap::new();
    let mut recent: Vec<(String, usize)> = Vec::new();
    let started = Instant::now();
    for seq in 0..cfg.count {
        if cfg.rate > 0 && seq % 100 == 0 {
            let due = Duration::from_secs_f64(seq as f64 / cfg.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let now = now_ns();
        let r = rng.f64();
        let (payload, key, reason) = if r < cfg.malformed_share {
            let kind = rng.usize(0..MALFORMED.len());
            *report.malformed.entry(MALFORMED[kind].to_string()).or_default() += 1;
            (
                malformed_event(kind, seq, now, &cfg.run_id),
                "tenant-000".to_string(),
                kind,
            )
        } else if r < cfg.malformed_share + cfg.duplicate_share && !recent.is_empty() {
            let (json, tenant) = recent[rng.usize(0..recent.len())].clone();
            report.duplicates += 1;
            (json, format!("tenant-{tenant:03}"), usize::MAX)
        } else {
            let late = rng.f64() < cfg.late_share;
            let unpriced = rng.f64() < cfg.unpriced_share;
            let (v, cost) = valid_event(&mut rng, cfg, &book, seq, now, late, unpriced);
            let e = sums.entry(v.tenant).or_default();
            e.0 += 1;
            e.3 += v.qty_thousandths;
            if let Some(c) = cost {
                e.1 += 1;
                e.2.add(c);
            }
            report.valid += 1;
            report.late += late as u64;
            report.unpriced += unpriced as u64;
            if recent.len() < 1000 {
                recent.push((v.json.clone(), v.tenant));
            } else {
                let i = rng.usize(0..1000);
                recent[i] = (v.json.clone(), v.tenant);
            }
            (v.json, format!("tenant-{:03}", v.tenant), usize::MAX)
        };
        let mut rec = BaseRecord::with_opaque_to(&cfg.topic, reason)
            .payload(payload.as_bytes())
            .key(key.as_bytes());
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        report.sent += 1;
        if seq % 100 == 0 {
            // Serve every pending delivery report (`poll(ZERO)` serves one event): a
            // backlog of unserved reports fills the producer queue and stalls sending.
            for _ in 0..64 {
                let before = producer.in_flight_count();
                producer.poll(Duration::ZERO);
                if producer.in_flight_count() >= before {
                    break;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    let ctx = producer.context();
    report.delivery_errors = *ctx.errors.lock();
    report.end_offsets = ctx.ends.lock().clone();
    (report.slow_acks, report.max_ack_ms) = *ctx.acks.lock();
    if cfg.report_offsets {
        let mut rej: Vec<(i32, i64, String)> = ctx
            .rejected
            .lock()
            .iter()
            .map(|(p, o, k)| (*p, *o, MALFORMED[*k].to_string()))
            .collect();
        rej.sort();
        report.rejected = rej;
    }
    for (t, (n, priced, sum, usage)) in sums {
        report.tenants.insert(
            format!("tenant-{t:03}"),
            TenantReport {
                events: n,
                priced_events: priced,
                usage_thousandths: usage,
                cost: sum.to_string(),
                cost_nanos: sum.nanos().to_string(),
            },
        );
    }
    Ok(report)
}
