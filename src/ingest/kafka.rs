//! Kafka workers: a consumer group member that writes validated events exactly once.
//!
//! * **Offsets live in the store.** Every batch carries `("<topic>/<partition>", next
//!   offset)` positions, written into the WAL atomically with its samples. On each
//!   partition assignment the worker assigns with explicit offsets
//!   `max(store position, Kafka committed offset)`: the store position is authoritative
//!   for this data directory; the committed offset hands a partition over from another
//!   tally process. Each batch's offsets are committed synchronously (fenced by the group
//!   generation) *before* its append, so the committed offset is never behind any store;
//!   a crash between the two is repaired by the process itself on restart
//!   ([`super::handover`]).
//! * **Rebalance.** On revoke the batch being built is handed to the writer and the
//!   revoke waits until every in-flight batch is written (DLQ acknowledged, store append);
//!   then its offsets are committed synchronously before the partitions are released;
//!   when the assignment was *lost* (session expired) the batches not yet being written
//!   are discarded instead — whoever owns the partition now re-reads them.
//! * **Dead letters.** Invalid events go to `<topic>.dlq` (original bytes, headers
//!   `tally.reason`, `tally.reason_text`, `tally.source_topic`, `tally.source_partition`,
//!   `tally.source_offset`). A batch is appended only after every dead letter of it is
//!   acknowledged, so an offset is never stored past an event that is in neither place.
//!   A crash between the DLQ ack and the append re-dead-letters on restart: the DLQ is
//!   at-least-once, de-duplicable by its source coordinates.
//! * **Two threads.** The consumer thread polls, validates and prices into the open
//!   batch; the writer thread acknowledges dead letters and appends (fsync), so parsing
//!   overlaps the previous batch's I/O. A batch closes after `batch_linger` or at
//!   `batch_max_events` and is handed over when the writer has room (one written, one
//!   queued); otherwise it keeps growing, and once full the consumer waits for the
//!   writer, reading nothing (librdkafka stops fetching when its prefetch is full). Only
//!   when the writer stays behind for [`PAUSE_AFTER`] are the partitions paused
//!   (`rd_kafka_pause_partitions`) until it takes the batch: a pause makes librdkafka
//!   throw away everything it prefetched (up to `queued.max.messages.kbytes`) and fetch
//!   it again on resume, so pausing on every fsync-long lag cost a refetch and an idle
//!   core each time. Memory: three batches plus librdkafka's bounded prefetch. A failing
//!   append is retried with exponential backoff and jitter; after ~30 s the batch — and
//!   everything read after it — is discarded and the partitions are rewound to their
//!   stored positions.
//! * **Outage.** librdkafka reconnects with exponential backoff (`reconnect.backoff.ms`,
//!   `reconnect.backoff.max.ms`); a monitor thread probes the broker every second
//!   (watermarks → `tally_ingest_consumer_lag`) and flips `/healthz` to `degraded`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::event::Reject;
use super::inbox::{Forwarder, Inbox, Received};
use super::pipeline::{Batch, Pipeline, GROUP};
use super::Source;
use crate::store::now_ns;

#[derive(Debug, thiserror::Error)]
pub enum KafkaIngestError {
    #[error("kafka client: {0}")]
    Kafka(#[from] KafkaError),
    #[error("kafka ingest: {0}")]
    Other(String),
}

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topics: Vec<String>,
    pub group: String,
    /// Append once a batch holds this many events...
    pub batch_max_events: usize,
    /// ...or once its first event is this old.
    pub batch_linger: Duration,
    pub session_timeout: Duration,
    /// Extra librdkafka properties for the consumer (`key=value`).
    pub extra: Vec<(String, String)>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topics: vec!["cost.compute".into(), "cost.storage".into(), "cost.network".into()],
            group: "tally".into(),
            batch_max_events: 20_000,
            batch_linger: Duration::from_millis(10),
            session_timeout: Duration::from_secs(10),
            extra: Vec::new(),
        }
    }
}

type Tp = (String, i32);

/// A dead letter of a batch, kept until acknowledged.
struct DlqMsg {
    /// Delivery opaque: a per-process sequence number (monotonic across batches).
    seq: u64,
    topic: String,
    payload: Vec<u8>,
    key: Option<Vec<u8>>,
    reject: Reject,
    src_topic: String,
    partition: i32,
    offset: i64,
}

#[derive(Default)]
struct DlqCtx {
    /// Sequence numbers sent and not yet reported by a delivery callback.
    outstanding: Mutex<BTreeSet<u64>>,
    /// Sequence numbers of failed deliveries (re-sent by the writer).
    failed: Mutex<Vec<u64>>,
}

impl ClientContext for DlqCtx {}

impl ProducerContext for DlqCtx {
    type DeliveryOpaque = usize;
    fn delivery(&self, r: &DeliveryResult<'_>, seq: usize) {
        let seq = seq as u64;
        if let Err((e, _)) = r {
            tracing::warn!(error = %e, "dead-letter delivery failed; will retry");
            self.failed.lock().push(seq);
        }
        self.outstanding.lock().remove(&seq);
    }
}

type DlqProducer = BaseProducer<DlqCtx>;

fn send_dlq(producer: &DlqProducer, m: &DlqMsg) -> Result<(), KafkaError> {
    let part = m.partition.to_string();
    let off = m.offset.to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "tally.reason",
            value: Some(m.reject.code.as_str()),
        })
        .insert(Header {
            key: "tally.reason_text",
            value: Some(m.reject.reason.as_str()),
        })
        .insert(Header {
            key: "tally.source_topic",
            value: Some(m.src_topic.as_str()),
        })
        .insert(Header {
            key: "tally.source_partition",
            value: Some(part.as_str()),
        })
        .insert(Header {
            key: "tally.source_offset",
            value: Some(off.as_str()),
        });
    let mut rec: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(&m.topic, m.seq as usize)
        .payload(&m.payload[..])
        .headers(headers);
    if let Some(k) = &m.key {
        rec = rec.key(&k[..]);
    }
    producer.context().outstanding.lock().insert(m.seq);
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                rec = r;
                producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => {
                producer.context().outstanding.lock().remove(&m.seq);
                return Err(e);
            }
        }
    }
}

/// Dead letters outside the consumer loop (hand-over recovery): send, then wait until
/// every one is acknowledged.
pub(crate) struct DeadLetters {
    producer: DlqProducer,
    pending: Vec<DlqMsg>,
    seq: u64,
}

impl DeadLetters {
    pub(crate) fn open(brokers: &str) -> Result<DeadLetters, KafkaIngestError> {
        Ok(DeadLetters {
            producer: client_config(brokers)
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .create_with_context(DlqCtx::default())?,
            pending: Vec::new(),
            seq: 0,
        })
    }

    pub(crate) fn send(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        payload: &[u8],
        key: Option<&[u8]>,
        reject: Reject,
    ) -> Result<(), KafkaIngestError> {
        self.seq += 1;
        let m = DlqMsg {
            seq: self.seq,
            topic: format!("{topic}.dlq"),
            payload: payload.to_vec(),
            key: key.map(<[u8]>::to_vec),
            reject,
            src_topic: topic.to_string(),
            partition,
            offset,
        };
        send_dlq(&self.producer, &m)?;
        self.pending.push(m);
        Ok(())
    }

    /// Waits for every acknowledgement, re-sending failures; an error if some dead letter
    /// is still not acknowledged at `timeout`.
    pub(crate) fn ack_all(&mut self, timeout: Duration) -> Result<(), KafkaIngestError> {
        let end = Instant::now() + timeout;
        loop {
            self.producer.poll(Duration::from_millis(10));
            let failed: Vec<u64> = std::mem::take(&mut *self.producer.context().failed.lock());
            for s in &failed {
                if let Some(m) = self.pending.iter().find(|m| m.seq == *s) {
                    send_dlq(&self.producer, m)?;
                }
            }
            if failed.is_empty() && self.producer.context().outstanding.lock().is_empty() {
                self.pending.clear();
                return Ok(());
            }
            if Instant::now() > end {
                return Err(KafkaIngestError::Other("dead letters not acknowledged".into()));
            }
        }
    }
}

/// A closed batch on its way to the writer thread.
struct Job {
    batch: Batch,
    dlq: Vec<DlqMsg>,
    /// Fewer retries (revoke / shutdown: the partition is about to move).
    quick: bool,
}

/// What the writer did with a job.
struct Done {
    ok: bool,
    /// The job's batch (cleared, for reuse) — its positions are in `positions`.
    batch: Batch,
    positions: Vec<(String, i64)>,
    dlq_topics: Vec<String>,
}

#[derive(Default)]
struct Slot {
    /// At most one job waits while another is written.
    queued: Option<Job>,
    busy: bool,
    done: Vec<Done>,
    /// Set by the writer after a failed job (it then takes no job) until the consumer
    /// thread has rewound its partitions.
    halted: bool,
    stop: bool,
}

/// The writer thread's mailbox.
struct Writer {
    slot: Mutex<Slot>,
    cv: Condvar,
    /// Mirrors `slot.queued.is_some()` for a lock-free look from the consumer's hot loop.
    full: AtomicBool,
    /// The group member, for the synchronous commit that precedes every append (set once
    /// the consumer exists, taken at shutdown to break the reference cycle).
    consumer: Mutex<Option<Arc<BaseConsumer<Ctx>>>>,
}

struct State {
    pipeline: Option<Arc<Pipeline>>,
    batch: Batch,
    dlq: Vec<DlqMsg>,
    batch_started: Option<Instant>,
    /// Owned partitions → next offset to process.
    /// Keyed by source key `topic/partition`.
    /// Looked up once per message: a fast hasher (the default SipHash showed in profiles).
    next: HashMap<String, i64, foldhash::fast::RandomState>,
    /// Owned partitions → offset of the last durable position (rewind target).
    base: HashMap<Tp, i64>,
    /// Owned partitions are paused (the writer is behind and the batch is full).
    paused: bool,
    /// Since when the batch is full and the writer has no room for it.
    behind_since: Option<Instant>,
    dlq_seq: u64,
    /// Cleared batches for reuse (their buffers keep their capacity).
    spare: Vec<Batch>,
}

impl Default for Writer {
    fn default() -> Self {
        Writer {
            slot: Mutex::new(Slot::default()),
            cv: Condvar::new(),
            full: AtomicBool::new(false),
            consumer: Mutex::new(None),
        }
    }
}

struct Ctx {
    /// Takeover records are written here before a partition is consumed.
    handover: Arc<super::handover::HandoverLog>,
    state: Arc<Mutex<State>>,
    producer: Arc<DlqProducer>,
    writer: Arc<Writer>,
    /// Owned partitions and their durable next offsets, for the lag monitor.
    owned: Arc<Mutex<BTreeMap<Tp, i64>>>,
    /// Assigned partitions forward their messages to the worker's inbox.
    inbox: Forwarder,
}

impl ClientContext for Ctx {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka client error");
    }
}

pub(crate) fn source_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

pub(crate) fn parse_source_key(s: &str) -> Option<Tp> {
    let (t, p) = s.rsplit_once('/')?;
    Some((t.to_string(), p.parse().ok()?))
}

impl ConsumerContext for Ctx {
    fn rebalance(&self, c: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let Some(pipeline) = self.state.lock().pipeline.clone() else {
            let _ = c.unassign();
            return;
        };
        pipeline.metrics.rebalances.fetch_add(1, Ordering::Relaxed);
        // Whatever the worker read ahead belongs to the old assignment.
        self.inbox.invalidate();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // The committed offset is where the previous owner's data ends: starting
                // without it could re-read what another store holds. Retry, and if it
                // cannot be read, do not consume until the next rebalance.
                let mut committed = c.committed_offsets(tpl.clone(), Duration::from_secs(10));
                for attempt in 1..=5 {
                    let Err(e) = &committed else { break };
                    tracing::warn!(error = %e, attempt, "cannot read committed offsets; retrying");
                    std::thread::sleep(backoff(attempt));
                    committed = c.committed_offsets(tpl.clone(), Duration::from_secs(10));
                }
                if let Err(e) = &committed {
                    tracing::error!(error = %e, "cannot read committed offsets; not consuming the assigned partitions");
                    let _ = c.unassign();
                    return;
                }
                let parts: Vec<Tp> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                let mut st = self.state.lock();
                let mut owned = self.owned.lock();
                for (t, p) in parts {
                    let stored = pipeline.store.source_position(&source_key(&t, p));
                    let comm = committed
                        .as_ref()
                        .ok()
                        .and_then(|l| l.find_partition(&t, p))
                        .and_then(|e| match e.offset() {
                            Offset::Offset(n) => Some(n),
                            _ => None,
                        });
                    let start = match (stored, comm) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                    let off = start.map_or(Offset::Beginning, Offset::Offset);
                    if let Err(e) = tpl.set_partition_offset(&t, p, off) {
                        tracing::error!(error = %e, topic = %t, partition = p, "cannot set start offset");
                    }
                    tracing::info!(topic = %t, partition = p, ?stored, committed = ?comm, ?start, "partition assigned");
                    st.next.insert(source_key(&t, p), start.unwrap_or(0));
                    st.base.insert((t.clone(), p), start.unwrap_or(0));
                    owned.insert((t, p), start.unwrap_or(0));
                }
                st.paused = false;
                let starts: Vec<(Tp, i64)> = owned
                    .iter()
                    .filter(|(tp, _)| tpl.find_partition(&tp.0, tp.1).is_some())
                    .map(|(tp, o)| (tp.clone(), *o))
                    .collect();
                drop(owned);
                drop(st);
                // Durable before the first message is consumed (see `handover`); a broker
                // that cannot take it cannot serve the partitions either: keep trying.
                let mut attempt = 0;
                while let Err(e) = self.handover.record(&starts, Duration::from_secs(10)) {
                    attempt += 1;
                    if attempt > 12 {
                        // Consuming without the record could double count after a crash:
                        // leave the partitions unconsumed until the next rebalance.
                        tracing::error!(error = %e, "cannot record the partition takeover; not consuming the assigned partitions");
                        let mut st = self.state.lock();
                        st.next.clear();
                        st.base.clear();
                        self.owned.lock().clear();
                        drop(st);
                        let _ = c.unassign();
                        return;
                    }
                    tracing::warn!(error = %e, attempt, "cannot record the partition takeover; retrying");
                    std::thread::sleep(backoff(attempt));
                }
                for e in tpl.elements() {
                    if !self.inbox.forward(c, e.topic(), e.partition()) {
                        tracing::debug!(
                            topic = e.topic(),
                            partition = e.partition(),
                            "partition read from the consumer queue"
                        );
                    }
                }
                if let Err(e) = c.assign(tpl) {
                    tracing::error!(error = %e, "assign failed");
                }
                // A partition paused before a revoke must not stay paused when it comes back.
                let _ = c.resume(tpl);
            }
            _ => {
                let lost = c.assignment_lost();
                let mut st = self.state.lock();
                if lost || err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    tracing::warn!(lost, ?err, "partitions lost: discarding unstored batches");
                    self.cancel_pending(&mut st);
                    let _ = self.wait_idle(&mut st, None);
                    self.drain_done(c, &pipeline, &mut st, true);
                } else {
                    tracing::info!(
                        partitions = tpl.count(),
                        "partitions revoked: writing the in-flight batches"
                    );
                    self.flush_all(c, &pipeline, &mut st, true);
                    self.commit_positions(c, &pipeline, tpl, CommitMode::Sync);
                }
                // Drop the local view of what librdkafka may still hold for these partitions.
                self.writer.slot.lock().halted = false;
                if st.paused {
                    let _ = c.resume(tpl);
                }
                st.batch.clear();
                st.dlq.clear();
                st.batch_started = None;
                st.next.clear();
                st.base.clear();
                st.paused = false;
                self.owned.lock().clear();
                pipeline.metrics.lag.lock().clear();
                pipeline.metrics.stored_offsets.lock().clear();
                drop(st);
                let _ = c.unassign();
            }
        }
    }
}

impl Ctx {
    /// Commits the store positions of `tpl`'s partitions to Kafka (for lag tooling and
    /// hand-over to another process).
    fn commit_positions(&self, c: &BaseConsumer<Self>, p: &Pipeline, parts: &TopicPartitionList, mode: CommitMode) {
        let mut l = TopicPartitionList::new();
        for e in parts.elements() {
            if let Some(pos) = p.store.source_position(&source_key(e.topic(), e.partition())) {
                let _ = l.add_partition_offset(e.topic(), e.partition(), Offset::Offset(pos));
            }
        }
        if l.count() > 0 {
            if let Err(e) = c.commit(&l, mode) {
                tracing::warn!(error = %e, "offset commit failed (positions are safe in the store)");
            }
        }
    }

    /// Hands the batch being built to the writer if it has room. True when the batch is
    /// now empty (handed over or nothing to hand over).
    fn submit(&self, st: &mut State, quick: bool) -> bool {
        if st.batch.is_empty() {
            return true;
        }
        let mut slot = self.writer.slot.lock();
        if slot.queued.is_some() || slot.halted {
            return false;
        }
        let fresh = st.spare.pop().unwrap_or_default();
        slot.queued = Some(Job {
            batch: std::mem::replace(&mut st.batch, fresh),
            dlq: std::mem::take(&mut st.dlq),
            quick,
        });
        self.writer.full.store(true, Ordering::Relaxed);
        self.writer.cv.notify_all();
        st.batch_started = None;
        true
    }

    /// True when the writer has no job (neither queued nor being written).
    fn writer_idle(&self) -> bool {
        if self.writer.full.load(Ordering::Relaxed) {
            return false;
        }
        let slot = self.writer.slot.lock();
        slot.queued.is_none() && !slot.busy && !slot.halted
    }

    /// Waits until the writer can take a job (or until `deadline`).
    fn wait_room(&self, deadline: Instant) {
        let mut slot = self.writer.slot.lock();
        while slot.queued.is_some() && !slot.halted {
            if self.writer.cv.wait_until(&mut slot, deadline).timed_out() {
                return;
            }
        }
    }

    /// Drops the queued (not yet started) job: its partitions are rewound or lost.
    fn cancel_pending(&self, st: &mut State) {
        let mut slot = self.writer.slot.lock();
        self.writer.full.store(false, Ordering::Relaxed);
        if let Some(mut j) = slot.queued.take() {
            j.batch.clear();
            st.spare.push(j.batch);
        }
    }

    /// Waits until the writer has no job (or until `deadline`). True when idle.
    fn wait_idle(&self, _st: &mut State, deadline: Option<Instant>) -> bool {
        let mut slot = self.writer.slot.lock();
        while slot.busy || (slot.queued.is_some() && !slot.halted) {
            let wait = deadline.map_or(Duration::from_millis(100), |d| {
                d.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100))
            });
            if wait.is_zero() {
                return false;
            }
            self.writer.cv.wait_for(&mut slot, wait);
        }
        true
    }

    /// Hands over the batch being built, waits until everything is written and applies
    /// the results (revoke, shutdown).
    fn flush_all(&self, c: &BaseConsumer<Self>, pipeline: &Pipeline, st: &mut State, revoking: bool) {
        loop {
            self.drain_done(c, pipeline, st, revoking);
            if self.submit(st, true) {
                break;
            }
            if self.writer.slot.lock().halted {
                // A job failed: drain_done rewound; nothing to hand over any more.
                continue;
            }
            self.wait_idle(st, None);
        }
        self.wait_idle(st, None);
        self.drain_done(c, pipeline, st, revoking);
    }

    /// Applies the writer's results: durable positions (→ Kafka commit, lag), DLQ metrics;
    /// after a failure rewinds every owned partition to its durable position.
    fn drain_done(&self, c: &BaseConsumer<Self>, pipeline: &Pipeline, st: &mut State, revoking: bool) {
        let (done, halted) = {
            let mut slot = self.writer.slot.lock();
            if slot.done.is_empty() {
                return;
            }
            (std::mem::take(&mut slot.done), slot.halted)
        };
        let mut failed = false;
        for mut d in done {
            if d.ok {
                let mut dl = pipeline.metrics.dlq_writes.lock();
                for t in d.dlq_topics.drain(..) {
                    *dl.entry(t).or_default() += 1;
                }
                drop(dl);
                let mut owned = self.owned.lock();
                for (src, pos) in &d.positions {
                    if let Some(tp) = parse_source_key(src) {
                        if let Some(b) = st.base.get_mut(&tp) {
                            *b = *pos;
                        }
                        if let Some(o) = owned.get_mut(&tp) {
                            *o = *pos;
                        }
                    }
                }
            } else {
                failed = true;
            }
            d.batch.clear();
            if st.spare.len() < 2 {
                st.spare.push(d.batch);
            }
        }
        // No commit here: the writer committed each batch before its append. A second,
        // asynchronous commit could land after a newer one and move the committed offset
        // back (Kafka keeps the last commit, not the highest), and a new owner would then
        // re-read what this store holds.
        if failed || halted {
            // Not stored: rewind so the events are read again (never lost). Everything
            // after the failed batch (queued job, batch being built) is dropped too.
            tracing::error!("discarding unstored batches and rewinding to the stored positions");
            self.inbox.invalidate();
            self.cancel_pending(st);
            st.batch.clear();
            st.dlq.clear();
            st.batch_started = None;
            let base: Vec<(Tp, i64)> = st.base.iter().map(|(k, v)| (k.clone(), *v)).collect();
            if st.paused {
                if let Ok(a) = c.assignment() {
                    let _ = c.resume(&a);
                }
                st.paused = false;
            }
            for (tp, pos) in base {
                st.next.insert(source_key(&tp.0, tp.1), pos);
                if !revoking {
                    if let Err(e) = c.seek(&tp.0, tp.1, Offset::Offset(pos), Duration::from_secs(10)) {
                        tracing::error!(error = %e, "rewind failed");
                    }
                }
            }
            self.writer.slot.lock().halted = false;
        }
    }

    /// Pauses (or resumes) fetching for every owned partition.
    fn set_paused(&self, c: &BaseConsumer<Self>, st: &mut State, pause: bool) {
        if st.paused == pause {
            return;
        }
        match c.assignment() {
            Ok(a) => {
                let r = if pause { c.pause(&a) } else { c.resume(&a) };
                if let Err(e) = r {
                    tracing::warn!(error = %e, pause, "cannot pause/resume partitions");
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read assignment");
                return;
            }
        }
        st.paused = pause;
        if let Some(p) = &st.pipeline {
            if pause {
                p.metrics.pauses.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The writer thread: acknowledges each job's dead letters, then appends it (dedup + one
/// atomic store append with its positions), retrying with backoff.
fn run_writer(writer: Arc<Writer>, pipeline: Arc<Pipeline>, producer: Arc<DlqProducer>, stop: Arc<AtomicBool>) {
    loop {
        let job = {
            let mut slot = writer.slot.lock();
            loop {
                if !slot.halted {
                    if let Some(j) = slot.queued.take() {
                        writer.full.store(false, Ordering::Relaxed);
                        slot.busy = true;
                        // The consumer may be waiting for room (`Ctx::wait_room`).
                        writer.cv.notify_all();
                        break j;
                    }
                }
                if slot.stop {
                    return;
                }
                writer.cv.wait(&mut slot);
            }
        };
        let ok = write_job(&job, &writer, &pipeline, &producer, &stop);
        let done = Done {
            ok,
            positions: job.batch.positions.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            dlq_topics: if ok {
                job.dlq.iter().map(|m| m.topic.clone()).collect()
            } else {
                Vec::new()
            },
            batch: job.batch,
        };
        let mut slot = writer.slot.lock();
        slot.busy = false;
        if !ok {
            slot.halted = true;
        }
        slot.done.push(done);
        writer.cv.notify_all();
    }
}

fn write_job(job: &Job, writer: &Writer, pipeline: &Pipeline, producer: &DlqProducer, stop: &AtomicBool) -> bool {
    if !job.dlq.is_empty() && !ack_dlq(job, pipeline, producer, stop) {
        return false;
    }
    if !commit_before_append(job, writer, pipeline, stop) {
        return false;
    }
    super::failpoint::hit("kafka.after_commit");
    if super::failpoint::fails("kafka.append_gives_up") {
        // As if the append had failed past its retries: the batch is discarded and the
        // partitions are rewound (the path a long store outage takes).
        return false;
    }
    let mut attempt = 0u32;
    loop {
        match pipeline.commit(&job.batch, Source::Kafka) {
            Ok(_) => return true,
            Err(e) => {
                attempt += 1;
                tracing::error!(error = %e, attempt, "store append failed; retrying");
                if attempt > if job.quick { 3 } else { 20 } || stop.load(Ordering::Relaxed) {
                    return false;
                }
                std::thread::sleep(backoff(attempt));
            }
        }
    }
}

/// Commits the job's offsets to Kafka, synchronously, before its append (see `handover`):
/// the group generation fences the commit, so a process that lost its partitions cannot
/// store what their new owner will read. False when the commit is refused (partitions
/// lost) or keeps failing: the batch is dropped and the partitions are rewound, and
/// if a failed commit did land, the events are re-read from the rewound position.
fn commit_before_append(job: &Job, writer: &Writer, pipeline: &Pipeline, stop: &AtomicBool) -> bool {
    let Some(consumer) = writer.consumer.lock().clone() else {
        return false;
    };
    let mut tpl = TopicPartitionList::new();
    for (src, pos) in &job.batch.positions {
        if let Some((t, p)) = parse_source_key(src) {
            if tpl.add_partition_offset(&t, p, Offset::Offset(*pos)).is_err() {
                return false;
            }
        }
    }
    if tpl.count() == 0 {
        return true;
    }
    let mut attempt = 0u32;
    loop {
        let t = Instant::now();
        let r = consumer.commit(&tpl, CommitMode::Sync);
        pipeline.metrics.offset_commit.observe(t.elapsed().as_secs_f64());
        match r {
            Ok(()) => return true,
            Err(e) => {
                let fenced = matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::IllegalGeneration
                            | RDKafkaErrorCode::UnknownMemberId
                            | RDKafkaErrorCode::RebalanceInProgress
                            | RDKafkaErrorCode::FencedInstanceId
                            | RDKafkaErrorCode::AssignmentLost
                    )
                );
                attempt += 1;
                tracing::warn!(error = %e, attempt, fenced, "offset commit before append failed");
                if fenced || attempt > if job.quick { 3 } else { 20 } || stop.load(Ordering::Relaxed) {
                    return false;
                }
                std::thread::sleep(backoff(attempt));
            }
        }
    }
}

/// How long the writer may stay behind a full batch before the partitions are paused.
/// Longer than any ordinary append (tens of milliseconds): waiting costs nothing, while a
/// pause discards librdkafka's prefetch, which must then be fetched again.
const PAUSE_AFTER: Duration = Duration::from_millis(500);

/// How long the writer sleeps between looks for dead-letter acknowledgements (a broker
/// round trip takes a millisecond or more).
const DLQ_ACK_NAP: Duration = Duration::from_micros(200);

/// Waits until every dead letter of the job is acknowledged (re-sending failures). Dead
/// letters of later batches may be in flight meanwhile: only this job's are waited for.
fn ack_dlq(job: &Job, pipeline: &Pipeline, producer: &DlqProducer, stop: &AtomicBool) -> bool {
    let first = job.dlq.first().map_or(0, |m| m.seq);
    let end = job.dlq.last().map_or(0, |m| m.seq + 1);
    let ctx = producer.context();
    let mut attempt = 0u32;
    loop {
        let t0 = Instant::now();
        loop {
            producer.poll(Duration::ZERO);
            if ctx.outstanding.lock().range(..end).next().is_none() || t0.elapsed() >= Duration::from_secs(30) {
                break;
            }
            // Not `poll(1 ms)`: rdkafka's `BaseProducer::poll` keeps polling until its
            // deadline, and once less than a millisecond is left it polls with a zero
            // timeout in a loop: a busy spin reading the clock (13 % of the writer thread,
            // which acknowledges dead letters for nearly every batch). A non-blocking poll
            // and a short sleep cost at most that sleep in latency (usually the reports
            // are in before the batch reaches the writer, and it does not sleep at all).
            std::thread::sleep(DLQ_ACK_NAP);
        }
        let failed: Vec<u64> = {
            let mut f = ctx.failed.lock();
            let (mine, rest): (Vec<u64>, Vec<u64>) = f.iter().partition(|s| **s < end);
            *f = rest;
            mine
        };
        let waiting = ctx.outstanding.lock().range(..end).next().is_some();
        if failed.is_empty() && !waiting {
            return true;
        }
        if waiting {
            tracing::warn!("dead-letter acknowledgements are slow");
        }
        pipeline
            .metrics
            .dlq_errors
            .fetch_add(failed.len() as u64, Ordering::Relaxed);
        attempt += 1;
        if (job.quick && attempt > 3) || attempt > 20 || stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(backoff(attempt));
        for s in failed {
            let Some(m) = s.checked_sub(first).and_then(|i| job.dlq.get(i as usize)) else {
                continue;
            };
            if let Err(e) = send_dlq(producer, m) {
                tracing::warn!(error = %e, "dead-letter send failed");
                ctx.failed.lock().push(s);
            }
        }
    }
}

use rdkafka::error::RDKafkaErrorCode;

/// Exponential backoff with jitter, capped at 5 s.
pub fn backoff(attempt: u32) -> Duration {
    let base = 50u64.saturating_mul(1 << attempt.min(7)).min(5_000);
    Duration::from_millis(base / 2 + fastrand::u64(0..=base / 2))
}

/// A running Kafka ingest: worker + monitor threads.
pub struct KafkaIngest {
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
    monitor: Option<JoinHandle<()>>,
}

fn client_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "5000")
        .set("socket.timeout.ms", "10000")
        .set("log_level", "4");
    c
}

/// Creates `topics` that do not exist yet (errors other than "already exists" are logged).
pub fn ensure_topics(brokers: &str, topics: &[String], partitions: i32) -> Result<(), KafkaIngestError> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| KafkaIngestError::Other(e.to_string()))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let res = rt.block_on(admin.create_topics(&new, &opts))?;
    for r in res {
        if let Err((t, e)) = r {
            if e != RDKafkaErrorCode::TopicAlreadyExists {
                tracing::warn!(topic = %t, error = %e, "cannot create topic");
            }
        }
    }
    Ok(())
}

impl KafkaIngest {
    pub fn start(pipeline: Arc<Pipeline>, cfg: KafkaConfig) -> Result<KafkaIngest, KafkaIngestError> {
        let metrics = pipeline.metrics.clone();
        metrics.kafka_enabled.store(true, Ordering::Relaxed);
        let dlq_topics: Vec<String> = cfg.topics.iter().map(|t| format!("{t}.dlq")).collect();
        if let Err(e) = ensure_topics(&cfg.brokers, &dlq_topics, 1) {
            tracing::warn!(error = %e, "cannot ensure dead-letter topics exist");
        }
        let producer: Arc<DlqProducer> = Arc::new(
            client_config(&cfg.brokers)
                .set("enable.idempotence", "true")
                .set("acks", "all")
                // A batch waits for its dead letters' acks, so they may not linger long;
                // but with no linger at all every dead letter woke librdkafka's broker
                // thread (a futex wake-up and a context switch each: 3 % of the Kafka
                // consumer thread with 2 % malformed events). 2 ms batches them.
                .set("linger.ms", "2")
                .create_with_context(DlqCtx::default())?,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let owned = Arc::new(Mutex::new(BTreeMap::new()));
        let state = Arc::new(Mutex::new(State {
            pipeline: Some(pipeline.clone()),
            batch: Batch::new(),
            dlq: Vec::new(),
            batch_started: None,
            next: HashMap::default(),
            base: HashMap::new(),
            paused: false,
            behind_since: None,
            dlq_seq: 0,
            spare: Vec::new(),
        }));
        let writer = Arc::new(Writer::default());
        let writer_thread = {
            let (w, p, pr, s) = (writer.clone(), pipeline.clone(), producer.clone(), stop.clone());
            std::thread::Builder::new()
                .name("tally-kafka-writer".into())
                .spawn(move || run_writer(w, p, pr, s))
                .map_err(|e| KafkaIngestError::Other(e.to_string()))?
        };
        let member = super::handover::member_id(pipeline.store.dir())
            .map_err(|e| KafkaIngestError::Other(format!("member id in {}: {e}", pipeline.store.dir().display())))?;
        let handover = Arc::new(super::handover::HandoverLog::open(&cfg.brokers, &cfg.group, &member)?);
        let ctx = Ctx {
            handover: handover.clone(),
            state: state.clone(),
            producer,
            writer,
            owned: owned.clone(),
            inbox: Forwarder::default(),
        };
        let mut cc = client_config(&cfg.brokers);
        cc.set("group.id", &cfg.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", cfg.session_timeout.as_millis().to_string())
            .set(
                "heartbeat.interval.ms",
                (cfg.session_timeout.as_millis() / 5).max(100).to_string(),
            )
            // Prefetch by bytes, not by message count: librdkafka's defaults (100k messages
            // a partition, then a 1 s fetch back-off) idled the consumer for most of each
            // second when draining a backlog of small events (wall 122k/s at 42 % of a core
            // from a pre-filled topic; 242k/s with these, see docs/ingest.md). Memory stays
            // bounded by the kbytes limit.
            .set("queued.max.messages.kbytes", "16384")
            .set("queued.min.messages", "1000000")
            .set("fetch.queue.backoff.ms", "10")
            // Low fetch wait: freshness (some brokers hold a fetch for the full wait).
            .set("fetch.wait.max.ms", "10")
            .set("enable.partition.eof", "false");
        for (k, v) in &cfg.extra {
            cc.set(k, v);
        }
        let consumer: Arc<BaseConsumer<Ctx>> = Arc::new(cc.create_with_context(ctx)?);
        *consumer.context().writer.consumer.lock() = Some(consumer.clone());
        let w_stop = stop.clone();
        let w_cfg = cfg.clone();
        let worker = std::thread::Builder::new()
            .name("tally-kafka".into())
            .spawn(move || run_worker(consumer, state, w_stop, w_cfg))
            .map_err(|e| KafkaIngestError::Other(e.to_string()))?;
        let m_stop = stop.clone();
        let monitor_client: BaseConsumer = client_config(&cfg.brokers)
            .set("group.id", format!("{}-monitor", cfg.group))
            .create()?;
        let monitor = std::thread::Builder::new()
            .name("tally-kafka-monitor".into())
            .spawn(move || run_monitor(monitor_client, owned, metrics, m_stop))
            .map_err(|e| KafkaIngestError::Other(e.to_string()))?;
        Ok(KafkaIngest {
            stop,
            worker: Some(worker),
            writer: Some(writer_thread),
            monitor: Some(monitor),
        })
    }

    /// Stops consuming: flushes the in-flight batch, commits, closes the clients (with a
    /// timeout: a librdkafka close that hangs is abandoned, the data is already safe).
    pub fn shutdown(mut self, timeout: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        for h in [self.worker.take(), self.writer.take(), self.monitor.take()]
            .into_iter()
            .flatten()
        {
            join_with_timeout(h, timeout);
        }
    }
}

impl Drop for KafkaIngest {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn join_with_timeout(h: JoinHandle<()>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !h.is_finished() {
        if Instant::now() > deadline {
            tracing::warn!("kafka thread did not stop in time; abandoning it");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = h.join();
}

fn run_worker(consumer: Arc<BaseConsumer<Ctx>>, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>, cfg: KafkaConfig) {
    let Some(pipeline) = state.lock().pipeline.clone() else {
        return;
    };
    let ctx = consumer.context();
    // Before joining the group: store what this process committed and did not store
    // before a crash (nobody else will read it). Retried until the broker answers.
    let mut attempt = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            ctx.writer.consumer.lock().take();
            return;
        }
        match super::handover::recover(&pipeline, &cfg, &ctx.handover) {
            Ok(n) => {
                tracing::info!(messages = n, "hand-over recovery done");
                break;
            }
            Err(e) => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "hand-over recovery failed; retrying");
                std::thread::sleep(backoff(attempt));
            }
        }
    }
    let mut inbox = match Inbox::new(&consumer, ctx.inbox.clone()) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the consumer's inbox queue");
            ctx.writer.consumer.lock().take();
            return;
        }
    };
    let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
    if let Err(e) = consumer.subscribe(&topics) {
        tracing::error!(error = %e, "cannot subscribe to the topics");
        ctx.writer.consumer.lock().take();
        return;
    }
    let max_events = cfg.batch_max_events.max(1);
    // (topic, partition, source key) of the last message: no allocation per message.
    let mut cur: (String, i32, String) = (String::new(), -1, String::new());
    // Producer-to-consumer delays of a burst, added to the shared histogram once per burst.
    let mut kafka_delay = super::HistogramBatch::default();
    // Reused for every group (messages, then each one's outcome).
    let mut group: Vec<Received<'_>> = Vec::with_capacity(GROUP);
    let mut outcomes: [Result<(), Reject>; GROUP] = std::array::from_fn(|_| Ok(()));
    while !stop.load(Ordering::Relaxed) {
        let wait = {
            let st = state.lock();
            match st.batch_started {
                // Due but the writer has no room yet (or paused): look again soon; never
                // spin on a zero timeout while the writer fsyncs.
                // (Also while a non-empty batch waits for the writer to become idle: it
                // closes as soon as the writer can take it.)
                Some(t) => match cfg.batch_linger.saturating_sub(t.elapsed()) {
                    d if d.is_zero() || st.paused => Duration::from_millis(1),
                    d => d.min(Duration::from_millis(1)),
                },
                None => Duration::from_millis(100),
            }
        };
        // A burst of messages per lock of the state; rebalance callbacks run inside
        // `poll`, so the state lock is never held across it.
        let mut first = inbox.next(&consumer, wait);
        let mut st = state.lock();
        let mut n = 0;
        // True once a zero-timeout poll found librdkafka's local queue empty.
        let mut drained = first.is_none();
        // Clock reads once per 64 messages of a burst (two per message were ~3% of the
        // CPU): event-time checks and delays are off by at most that many messages' work.
        let (mut now, mut instant) = (now_ns(), Instant::now());
        let mut clock_at = 64;
        while let Some(r) = first.take() {
            if n >= clock_at {
                (now, instant, clock_at) = (now_ns(), Instant::now(), n + 64);
            }
            // A group of messages prepared together (`Pipeline::prepare_group`): the first,
            // then what the inbox holds already, up to the batch's room.
            match r {
                Ok(received) => group.push(received),
                Err(e) => tracing::warn!(error = %e, "kafka consume error"),
            }
            let room = max_events.saturating_sub(st.batch.events() + st.dlq.len());
            while group.len() < GROUP.min(room) {
                match inbox.take_ready() {
                    Some(m) => group.push(Received::Inbox(m)),
                    None => break,
                }
            }
            n += group.len().max(1);
            {
                let st = &mut *st;
                // Which messages are new (not re-fetched after a rewind), in order; each one's
                // partition is noted for the second pass.
                let mut payloads: [&[u8]; GROUP] = [&[]; GROUP];
                let mut tps: [Option<(&str, i32)>; GROUP] = [None; GROUP];
                let mut fresh = 0;
                for (received, tp) in group.iter().zip(&mut tps) {
                    let m = received.get();
                    let topic = m.topic();
                    if cur.1 != m.partition() || cur.0 != topic {
                        cur = (topic.to_string(), m.partition(), source_key(topic, m.partition()));
                    }
                    let Some(next) = st.next.get_mut(cur.2.as_str()) else {
                        continue;
                    };
                    if let Some(ms) = m.timestamp_ms() {
                        kafka_delay.observe((now / 1_000_000 - ms) as f64 / 1e3);
                    }
                    if m.offset() < *next {
                        // Re-fetched after a rewind: already handled.
                        continue;
                    }
                    *next = m.offset() + 1;
                    *tp = Some((topic, m.partition()));
                    payloads[fresh] = m.payload();
                    fresh += 1;
                }
                pipeline.prepare_group(&mut st.batch, &payloads[..fresh], now, &mut outcomes[..fresh]);
                let mut outcome = outcomes[..fresh].iter_mut();
                for (received, tp) in group.iter().zip(&tps) {
                    let Some((topic, partition)) = tp else {
                        continue;
                    };
                    let Some(done) = outcome.next() else {
                        break;
                    };
                    let m = received.get();
                    if cur.1 != *partition || cur.0 != *topic {
                        cur = (topic.to_string(), *partition, source_key(topic, *partition));
                    }
                    if let Err(r) = std::mem::replace(done, Ok(())) {
                        pipeline.metrics.add_rejected(Source::Kafka, r.code, 1);
                        st.dlq_seq += 1;
                        let msg = DlqMsg {
                            seq: st.dlq_seq,
                            topic: format!("{}.dlq", cur.0),
                            payload: m.payload().to_vec(),
                            key: m.key().map(<[u8]>::to_vec),
                            reject: r,
                            src_topic: cur.0.clone(),
                            partition: cur.1,
                            offset: m.offset(),
                        };
                        if let Err(e) = send_dlq(&ctx.producer, &msg) {
                            tracing::warn!(error = %e, "dead-letter send failed; will retry");
                            ctx.producer.context().failed.lock().push(msg.seq);
                        }
                        st.dlq.push(msg);
                    }
                    st.batch.set_position(&cur.2, m.offset() + 1);
                    if st.batch_started.is_none() {
                        st.batch_started = Some(instant);
                    }
                }
            }
            group.clear();
            // Keep draining librdkafka's local queue without waiting while the batch
            // has room and is not due (or is due but the writer cannot take it yet).
            let room = st.batch.events() + st.dlq.len() < max_events;
            let young = st
                .batch_started
                .is_some_and(|t| instant.saturating_duration_since(t) < cfg.batch_linger);
            if n < 4096 && room && (young || ctx.writer.full.load(Ordering::Relaxed)) {
                drop(st);
                first = inbox.next(&consumer, Duration::ZERO);
                drained = first.is_none();
                st = state.lock();
            }
        }
        let mut st_guard = st;
        let st = &mut *st_guard;
        pipeline.metrics.kafka_delay.add(&mut kafka_delay);
        ctx.drain_done(&consumer, &pipeline, st, false);
        let full = st.batch.events() + st.dlq.len() >= max_events;
        // Close the batch when it is full, when it is `batch_linger` old, or as soon as
        // everything librdkafka holds is in it and the writer is idle (group commit: while
        // the writer is busy the batch keeps growing, so batches adapt to the fsync time and
        // an idle pipeline adds no linger to freshness).
        let due = !st.batch.is_empty()
            && (full
                || st.batch_started.is_some_and(|t| t.elapsed() >= cfg.batch_linger)
                || (drained && ctx.writer_idle()));
        let mut wait_room = None;
        if due {
            if ctx.submit(st, false) {
                st.behind_since = None;
                ctx.set_paused(&consumer, st, false);
            } else if full {
                // The writer is behind: wait for it, reading nothing (what librdkafka
                // holds meanwhile is bounded by queued.max.messages.kbytes); pause only
                // when it stays behind.
                let since = *st.behind_since.get_or_insert_with(Instant::now);
                match PAUSE_AFTER.checked_sub(since.elapsed()) {
                    Some(left) if !st.paused => wait_room = Some(left),
                    _ => ctx.set_paused(&consumer, st, true),
                }
            }
        } else if st.batch.is_empty() {
            st.behind_since = None;
            ctx.set_paused(&consumer, st, false);
        }
        if let Some(left) = wait_room {
            drop(st_guard);
            // At most 100 ms at a time: rebalance callbacks run only inside `poll`.
            ctx.wait_room(Instant::now() + left.min(Duration::from_millis(100)));
        }
    }
    // Shutdown: make the in-flight batches durable, commit, then close the client.
    {
        let mut st = state.lock();
        stop.store(false, Ordering::Relaxed); // let the final writes retry a little
        ctx.flush_all(&consumer, &pipeline, &mut st, true);
        stop.store(true, Ordering::Relaxed);
        if let Ok(a) = consumer.assignment() {
            ctx.commit_positions(&consumer, &pipeline, &a, CommitMode::Sync);
        }
        {
            let mut slot = ctx.writer.slot.lock();
            slot.stop = true;
            ctx.writer.cv.notify_all();
        }
        let _ = ctx.producer.flush(Duration::from_secs(5));
        st.pipeline = None;
    }
    drop(pipeline);
    // Before the client closes: the inbox queue must not outlive it.
    drop(inbox);
    ctx.writer.consumer.lock().take();
    let (tx, rx) = std::sync::mpsc::channel();
    let closer = std::thread::spawn(move || {
        consumer.unsubscribe();
        drop(consumer);
        let _ = tx.send(());
    });
    if rx.recv_timeout(Duration::from_secs(10)).is_ok() {
        let _ = closer.join();
    } else {
        tracing::warn!("kafka consumer close timed out; abandoning it");
    }
}

fn run_monitor(
    client: BaseConsumer,
    owned: Arc<Mutex<BTreeMap<Tp, i64>>>,
    metrics: Arc<super::IngestMetrics>,
    stop: Arc<AtomicBool>,
) {
    let mut last = Instant::now() - Duration::from_secs(10);
    while !stop.load(Ordering::Relaxed) {
        if last.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        last = Instant::now();
        let parts: Vec<(Tp, i64)> = owned.lock().iter().map(|(k, v)| (k.clone(), *v)).collect();
        *metrics.stored_offsets.lock() = parts.iter().cloned().collect();
        let mut ok = true;
        if parts.is_empty() {
            ok = client.fetch_metadata(None, Duration::from_secs(2)).is_ok();
        }
        let mut lags = BTreeMap::new();
        for ((t, p), next) in parts {
            match client.fetch_watermarks(&t, p, Duration::from_secs(2)) {
                Ok((_, high)) => {
                    lags.insert((t, p), (high - next).max(0));
                }
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            *metrics.lag.lock() = lags;
        } else {
            metrics
                .kafka_last_error
                .store(now_ns() / 1_000_000_000, Ordering::Relaxed);
        }
        let was = metrics.kafka_up.swap(ok, Ordering::Relaxed);
        if was != ok {
            if ok {
                tracing::info!("kafka broker reachable again");
            } else {
                tracing::warn!("kafka broker unreachable: ingest degraded");
            }
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(client);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(5));
}
