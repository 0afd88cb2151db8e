//! Crash-safe hand-over of Kafka partitions between tally processes (separate data dirs).
//!
//! The rule that makes it work: **a batch's offsets are committed to Kafka (synchronously,
//! fenced by the group generation) before the batch is appended to the store.** So the
//! committed offset is never behind any store, and a process that takes a partition over
//! (starting at `max(own store position, committed)`) never re-reads what another process
//! stored. The price is the window between the commit and the append: a process killed
//! there has committed offsets whose events are in no store. Nobody else will read them,
//! so the process that committed them must ingest them itself when it comes back.
//!
//! To know which offsets are its own, every process appends a [`Takeover`] record to the
//! single-partition topic [`HANDOVER_TOPIC`] on every partition assignment, *before* it
//! consumes: (group, member, topic, partition, start offset). Commits are fenced, so
//! between a member's takeover of a partition and the next takeover by someone else
//! every commit of that partition was the member's. On start, before joining the group,
//! a member computes for each partition it has stored
//! `[max(stored position, its last takeover start), upper)` where `upper` is the start of
//! the next member's takeover after its own, or the committed offset if nobody took over
//! since; that range was committed by it and never appended ([`orphaned_ranges`]). It
//! re-reads the range from Kafka and appends it with the same validation, pricing, dedup
//! and dead-lettering ([`recover`]). Re-running is harmless: the append moves the store
//! position to `upper`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::kafka::{KafkaConfig, KafkaIngestError};
use super::pipeline::{Batch, Pipeline};
use super::Source;

/// One topic for every group; records carry their group.
pub const HANDOVER_TOPIC: &str = "tally.handover";

/// "`member` consumes `topic`/`partition` of `group` from `start` on."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Takeover {
    pub group: String,
    pub member: String,
    pub topic: String,
    pub partition: i32,
    pub start: i64,
}

/// Offsets `[from, to)` of a partition that this member committed and never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

type Tp = (String, i32);

/// The ranges `member` must ingest itself; `log` is in topic order, `stored` the store's
/// positions, `committed` the group's committed offsets (absent: none).
pub fn orphaned_ranges(
    log: &[Takeover],
    group: &str,
    member: &str,
    stored: &BTreeMap<Tp, i64>,
    committed: &BTreeMap<Tp, i64>,
) -> Vec<Orphan> {
    let mut by_part: BTreeMap<Tp, Vec<&Takeover>> = BTreeMap::new();
    for t in log.iter().filter(|t| t.group == group) {
        by_part.entry((t.topic.clone(), t.partition)).or_default().push(t);
    }
    let mut out = Vec::new();
    for (tp, recs) in by_part {
        let Some(mine) = recs.iter().rposition(|t| t.member == member) else {
            continue;
        };
        let from = stored.get(&tp).copied().unwrap_or(i64::MIN).max(recs[mine].start);
        let upper = match recs[mine + 1..].iter().find(|t| t.member != member) {
            Some(next) => next.start,
            None => match committed.get(&tp) {
                Some(&c) => c,
                None => continue,
            },
        };
        if upper > from {
            out.push(Orphan {
                topic: tp.0,
                partition: tp.1,
                from,
                to: upper,
            });
        }
    }
    out
}

/// This data directory's member id (`<data>/ingest/member-id`, created once).
pub fn member_id(store_dir: &Path) -> std::io::Result<String> {
    let path = store_dir.join("ingest").join("member-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let id = format!("{:032x}", fastrand::u128(..));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

/// Delivery reports of the hand-over producer: the offset of the last acknowledged
/// record (the fence [`HandoverLog::read_all`] reads up to) and whether one failed.
#[derive(Default)]
struct Deliveries {
    last_offset: Mutex<Option<i64>>,
    failed: Mutex<u64>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(m) => *self.last_offset.lock() = Some(m.offset()),
            Err((e, _)) => {
                tracing::warn!(error = %e, "hand-over record not delivered");
                *self.failed.lock() += 1;
            }
        }
    }
}

/// Writer and reader of [`HANDOVER_TOPIC`].
pub struct HandoverLog {
    brokers: String,
    group: String,
    member: String,
    producer: BaseProducer<Deliveries>,
    /// One writer at a time: the delivery report state is per call.
    writing: Mutex<()>,
}

impl HandoverLog {
    /// Creates the client (no broker round trip; see [`recover`] for the topic).
    pub fn open(brokers: &str, group: &str, member: &str) -> Result<HandoverLog, KafkaIngestError> {
        let producer: BaseProducer<Deliveries> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("log_level", "4")
            .create_with_context(Deliveries::default())?;
        Ok(HandoverLog {
            brokers: brokers.to_string(),
            group: group.to_string(),
            member: member.to_string(),
            producer,
            writing: Mutex::new(()),
        })
    }

    pub fn member(&self) -> &str {
        &self.member
    }

    /// Appends one takeover record per partition and waits until the broker has them all
    /// (a partition must not be consumed before its record is durable).
    pub fn record(&self, parts: &[(Tp, i64)], timeout: Duration) -> Result<(), KafkaIngestError> {
        self.write(parts, timeout).map(|_| ())
    }

    /// Appends the records (none: a fence record of partition -1) and returns the offset
    /// of the last one once the broker has acknowledged them all.
    fn write(&self, parts: &[(Tp, i64)], timeout: Duration) -> Result<i64, KafkaIngestError> {
        let fence = [((String::new(), -1), -1)];
        let parts = if parts.is_empty() { &fence[..] } else { parts };
        let _one = self.writing.lock();
        *self.producer.context().failed.lock() = 0;
        *self.producer.context().last_offset.lock() = None;
        for ((topic, partition), start) in parts {
            let rec = Takeover {
                group: self.group.clone(),
                member: self.member.clone(),
                topic: topic.clone(),
                partition: *partition,
                start: *start,
            };
            let json = serde_json::to_vec(&rec).map_err(|e| KafkaIngestError::Other(e.to_string()))?;
            let key = format!("{}/{topic}/{partition}", self.group);
            self.producer
                .send(BaseRecord::to(HANDOVER_TOPIC).payload(&json[..]).key(key.as_bytes()))
                .map_err(|(e, _)| e)?;
        }
        self.producer.flush(timeout)?;
        let ctx = self.producer.context();
        if self.producer.in_flight_count() > 0 || *ctx.failed.lock() > 0 {
            return Err(KafkaIngestError::Other("hand-over records not acknowledged".into()));
        }
        let last = *ctx.last_offset.lock();
        last.ok_or_else(|| KafkaIngestError::Other("hand-over records: no delivery report".into()))
    }

    /// Every takeover record of the topic, in order. First appends a fence record and
    /// then reads up to it: every record acknowledged before the call is seen, whatever
    /// the broker reports as its high watermark (tansu's can trail the last record).
    pub fn read_all(&self, timeout: Duration) -> Result<Vec<Takeover>, KafkaIngestError> {
        let fence = self.write(&[], timeout)?;
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("{}-handover-reader", self.group))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("log_level", "4")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(HANDOVER_TOPIC, 0, Offset::Beginning)?;
        c.assign(&tpl)?;
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut next = 0i64;
        while next <= fence {
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    next = m.offset() + 1;
                    match m.payload().map(serde_json::from_slice::<Takeover>) {
                        Some(Ok(t)) if t.partition >= 0 => out.push(t),
                        Some(Ok(_)) => {} // a fence
                        _ => tracing::warn!(offset = m.offset(), "skipping a malformed hand-over record"),
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "reading the hand-over log"),
                None => {}
            }
            if Instant::now() > deadline {
                return Err(KafkaIngestError::Other(format!(
                    "reading {HANDOVER_TOPIC}: timed out at offset {next}, before the fence at {fence}"
                )));
            }
        }
        Ok(out)
    }
}

/// Committed offsets of `group` for `parts` (absent: nothing committed).
fn committed(cfg: &KafkaConfig, parts: &[Tp], timeout: Duration) -> Result<BTreeMap<Tp, i64>, KafkaIngestError> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("group.id", &cfg.group)
        .set("enable.auto.commit", "false")
        .set("log_level", "4")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for (t, p) in parts {
        tpl.add_partition(t, *p);
    }
    let got = c.committed_offsets(tpl, timeout)?;
    Ok(got
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect())
}

/// Ingests the ranges this member committed and never stored (see the module docs).
/// Returns the number of messages read. Called before the consumer joins the group.
pub fn recover(pipeline: &Pipeline, cfg: &KafkaConfig, log: &HandoverLog) -> Result<u64, KafkaIngestError> {
    let timeout = Duration::from_secs(30);
    super::kafka::ensure_topics(&cfg.brokers, &[HANDOVER_TOPIC.to_string()], 1)?;
    let stored: BTreeMap<Tp, i64> = pipeline
        .store
        .source_positions()
        .into_iter()
        .filter_map(|(k, v)| super::kafka::parse_source_key(&k).map(|tp| (tp, v)))
        .filter(|((t, _), _)| cfg.topics.contains(t))
        .collect();
    let records = log.read_all(timeout)?;
    let mine: Vec<Tp> = records
        .iter()
        .filter(|r| r.group == cfg.group && r.member == log.member() && cfg.topics.contains(&r.topic))
        .map(|r| (r.topic.clone(), r.partition))
        .collect();
    if mine.is_empty() {
        return Ok(0);
    }
    let committed = committed(cfg, &mine, timeout)?;
    let orphans = orphaned_ranges(&records, &cfg.group, log.member(), &stored, &committed);
    tracing::info!(
        records = records.len(),
        ?stored,
        ?committed,
        orphans = orphans.len(),
        "hand-over check: committed offsets of partitions this member owned vs its store"
    );
    let mut total = 0;
    for o in orphans {
        tracing::warn!(
            topic = %o.topic, partition = o.partition, from = o.from, to = o.to,
            "committed but not stored before a crash: ingesting the range now"
        );
        total += ingest_range(pipeline, cfg, &o)?;
    }
    if total > 0 {
        pipeline
            .metrics
            .handover_recovered
            .fetch_add(total, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(total)
}

/// Reads `[from, to)` of one partition and appends it (dead letters acknowledged first).
fn ingest_range(pipeline: &Pipeline, cfg: &KafkaConfig, o: &Orphan) -> Result<u64, KafkaIngestError> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("group.id", format!("{}-recovery", cfg.group))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("log_level", "4")
        .create()?;
    let dlq = super::kafka::DeadLetters::open(&cfg.brokers)?;
    let key = super::kafka::source_key(&o.topic, o.partition);
    let mut batch = Batch::new();
    // Retention may have deleted part or all of the range: what is gone cannot be read
    // by anyone; say so, and move the position past it instead of waiting forever.
    let (low, _) = c.fetch_watermarks(&o.topic, o.partition, Duration::from_secs(30))?;
    if low > o.from {
        tracing::error!(
            topic = %o.topic, partition = o.partition, from = o.from, to = o.to, log_start = low,
            "part of the committed-but-unstored range is no longer in Kafka (retention): those events are lost"
        );
    }
    if low >= o.to {
        batch.set_position(&key, o.to);
        pipeline
            .commit(&batch, Source::Kafka)
            .map_err(|e| KafkaIngestError::Other(e.to_string()))?;
        return Ok(0);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.from.max(low)))?;
    c.assign(&tpl)?;
    let mut n = 0u64;
    let mut last = Instant::now();
    let mut next = o.from.max(low);
    let flush = |batch: &mut Batch, dlq: &mut super::kafka::DeadLetters| -> Result<(), KafkaIngestError> {
        dlq.ack_all(Duration::from_secs(60))?;
        pipeline
            .commit(batch, Source::Kafka)
            .map_err(|e| KafkaIngestError::Other(e.to_string()))?;
        batch.clear();
        Ok(())
    };
    let mut dlq = dlq;
    while next < o.to {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last = Instant::now();
                if m.offset() < next {
                    continue;
                }
                let end = (m.offset() + 1).min(o.to);
                if m.offset() < o.to {
                    n += 1;
                    let payload = m.payload().unwrap_or(&[]);
                    if let Err(r) = pipeline.prepare(&mut batch, payload, crate::store::now_ns()) {
                        pipeline.metrics.add_rejected(Source::Kafka, r.code, 1);
                        dlq.send(&o.topic, o.partition, m.offset(), payload, m.key(), r)?;
                    }
                }
                next = m.offset() + 1;
                batch.set_position(&key, end);
                if batch.events() >= cfg.batch_max_events.max(1) {
                    flush(&mut batch, &mut dlq)?;
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "recovery read"),
            None => {
                if last.elapsed() > Duration::from_secs(30) {
                    return Err(KafkaIngestError::Other(format!(
                        "recovering {key} [{}, {}): no message at offset {next} for 30 s",
                        o.from, o.to
                    )));
                }
            }
        }
    }
    batch.set_position(&key, o.to);
    flush(&mut batch, &mut dlq)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(member: &str, p: i32, start: i64) -> Takeover {
        Takeover {
            group: "g".into(),
            member: member.into(),
            topic: "x".into(),
            partition: p,
            start,
        }
    }

    fn tp(p: i32) -> Tp {
        ("x".to_string(), p)
    }

    #[test]
    fn nobody_took_over_the_committed_tail_is_mine() {
        let log = [t("a", 0, 0)];
        let stored = BTreeMap::from([(tp(0), 100)]);
        let committed = BTreeMap::from([(tp(0), 150)]);
        let got = orphaned_ranges(&log, "g", "a", &stored, &committed);
        assert_eq!(
            got,
            vec![Orphan {
                topic: "x".into(),
                partition: 0,
                from: 100,
                to: 150
            }]
        );
        // Stored up to the commit: nothing to do.
        let stored = BTreeMap::from([(tp(0), 150)]);
        assert!(orphaned_ranges(&log, "g", "a", &stored, &committed).is_empty());
    }

    #[test]
    fn the_next_takeover_bounds_my_range_not_the_later_commits() {
        // a committed up to 150 and crashed with 100 stored; b took over at 150 and went on.
        let log = [t("a", 0, 0), t("b", 0, 150), t("c", 0, 400)];
        let stored = BTreeMap::from([(tp(0), 100)]);
        let committed = BTreeMap::from([(tp(0), 900)]);
        let got = orphaned_ranges(&log, "g", "a", &stored, &committed);
        assert_eq!((got[0].from, got[0].to), (100, 150));
        // a's commit never landed: b started where a's store ends.
        let log = [t("a", 0, 0), t("b", 0, 100)];
        assert!(orphaned_ranges(&log, "g", "a", &stored, &committed).is_empty());
    }

    #[test]
    fn only_my_latest_ownership_counts_and_other_groups_are_ignored() {
        let mut other = t("a", 0, 0);
        other.group = "h".into();
        let log = [t("a", 0, 0), t("b", 0, 50), t("a", 0, 120), other];
        let stored = BTreeMap::from([(tp(0), 130)]);
        let committed = BTreeMap::from([(tp(0), 200)]);
        let got = orphaned_ranges(&log, "g", "a", &stored, &committed);
        assert_eq!((got[0].from, got[0].to), (130, 200));
        // Never stored anything: from the takeover start.
        let got = orphaned_ranges(&log, "g", "a", &BTreeMap::new(), &committed);
        assert_eq!((got[0].from, got[0].to), (120, 200));
        // Never took the partition: nothing, whatever is committed.
        assert!(orphaned_ranges(&log, "g", "z", &stored, &committed).is_empty());
    }

    /// Recovery of member `m` as it runs on restart.
    fn recover_model(log: &[Takeover], m: &str, stored: &mut Vec<(i64, i64)>, committed: i64) {
        let st = stored
            .last()
            .map(|r| BTreeMap::from([(tp(0), r.1)]))
            .unwrap_or_default();
        for o in orphaned_ranges(log, "g", m, &st, &BTreeMap::from([(tp(0), committed)])) {
            stored.push((o.from, o.to));
        }
    }

    proptest::proptest! {
        /// A model of members consuming one partition with commit-before-append, killed
        /// between the two at random and restarted (recovering) at random later points,
        /// while others take the partition over: in the end every committed offset is
        /// stored exactly once across all members.
        #[test]
        fn every_offset_stored_once(
            steps in proptest::collection::vec((0usize..3, 1i64..20, proptest::bool::ANY, proptest::bool::ANY), 1..60)
        ) {
            let members = ["a", "b", "c"];
            let mut log: Vec<Takeover> = Vec::new();
            let mut stored: [Vec<(i64, i64)>; 3] = Default::default();
            let mut down = [false; 3];
            let mut committed = 0i64;
            let mut owner: Option<usize> = None;
            for (m, len, crash, restart_all) in steps {
                if restart_all {
                    for (i, name) in members.iter().enumerate() {
                        if down[i] {
                            recover_model(&log, name, &mut stored[i], committed);
                            down[i] = false;
                        }
                    }
                }
                if down[m] {
                    // A member recovers before it joins the group again.
                    recover_model(&log, members[m], &mut stored[m], committed);
                    down[m] = false;
                }
                let pos = stored[m].last().map_or(0, |r| r.1);
                if owner != Some(m) {
                    log.push(t(members[m], 0, pos.max(committed)));
                    owner = Some(m);
                }
                let from = pos.max(committed);
                committed = from + len;
                if crash {
                    owner = None;
                    down[m] = true;
                } else {
                    stored[m].push((from, from + len));
                }
            }
            for (i, name) in members.iter().enumerate() {
                if down[i] {
                    recover_model(&log, name, &mut stored[i], committed);
                }
            }
            let mut all: Vec<(i64, i64)> = stored.iter().flatten().copied().collect();
            all.sort();
            let mut at = 0;
            for (f, e) in all {
                proptest::prop_assert_eq!(f, at, "gap or overlap at {}", at);
                at = e;
            }
            proptest::prop_assert_eq!(at, committed);
        }
    }
}
