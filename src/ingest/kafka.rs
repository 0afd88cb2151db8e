//! Kafka workers: a consumer group member that writes validated events exactly once.
//!
//! * **Offsets live in the store.** Every batch carries `("<topic>/<partition>", next
//!   offset)` positions, written into the WAL atomically with its samples. On each
//!   partition assignment the worker assigns with explicit offsets
//!   `max(store position, Kafka committed offset)`: the store position is authoritative
//!   for this data directory; the committed offset hands a partition over from another
//!   tally process (committed is never ahead of what some store holds, because we commit
//!   only after a successful append). Kafka commits are otherwise only for lag tooling.
//! * **Rebalance.** On revoke the in-flight batch is flushed (DLQ acknowledged, store
//!   append) and its offsets are committed synchronously before the partitions are
//!   released; when the assignment was *lost* (session expired) the batch is discarded
//!   instead — it was not stored, and whoever owns the partition now re-reads it.
//! * **Dead letters.** Invalid events go to `<topic>.dlq` (original bytes, headers
//!   `tally.reason`, `tally.reason_text`, `tally.source_topic`, `tally.source_partition`,
//!   `tally.source_offset`). A batch is appended only after every dead letter of it is
//!   acknowledged, so an offset is never stored past an event that is in neither place.
//!   A crash between the DLQ ack and the append re-dead-letters on restart: the DLQ is
//!   at-least-once, de-duplicable by its source coordinates.
//! * **Backpressure.** One thread consumes, validates and appends; while it appends it does
//!   not poll, and librdkafka's prefetch queue is bounded (`queued.max.messages.kbytes`),
//!   so memory stays bounded at any input rate. A failing append is retried with
//!   exponential backoff and jitter; after ~30 s the batch is discarded and the
//!   partitions are rewound to their stored positions.
//! * **Outage.** librdkafka reconnects with exponential backoff (`reconnect.backoff.ms`,
//!   `reconnect.backoff.max.ms`); a monitor thread probes the broker every second
//!   (watermarks → `tally_ingest_consumer_lag`) and flips `/healthz` to `degraded`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::event::Reject;
use super::pipeline::{Batch, Pipeline};
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
            batch_linger: Duration::from_millis(50),
            session_timeout: Duration::from_secs(10),
            extra: Vec::new(),
        }
    }
}

type Tp = (String, i32);

/// Dead letters of the in-flight batch, kept until acknowledged.
struct DlqMsg {
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
    failed: Mutex<Vec<usize>>,
}

impl ClientContext for DlqCtx {}

impl ProducerContext for DlqCtx {
    type DeliveryOpaque = usize;
    fn delivery(&self, r: &DeliveryResult<'_>, idx: usize) {
        if let Err((e, _)) = r {
            tracing::warn!(error = %e, "dead-letter delivery failed; will retry");
            self.failed.lock().push(idx);
        }
    }
}

struct State {
    pipeline: Option<Arc<Pipeline>>,
    batch: Batch,
    dlq: Vec<DlqMsg>,
    batch_started: Option<Instant>,
    /// Owned partitions → next offset to process.
    /// Keyed by source key `topic/partition`.
    next: HashMap<String, i64>,
    /// Owned partitions → offset of the last durable position (rewind target).
    base: HashMap<Tp, i64>,
}

struct Ctx {
    state: Arc<Mutex<State>>,
    producer: BaseProducer<DlqCtx>,
    stop: Arc<AtomicBool>,
    /// Owned partitions and their durable next offsets, for the lag monitor.
    owned: Arc<Mutex<BTreeMap<Tp, i64>>>,
}

impl ClientContext for Ctx {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka client error");
    }
}

fn source_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

fn parse_source_key(s: &str) -> Option<Tp> {
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
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let committed = c.committed_offsets(tpl.clone(), Duration::from_secs(10));
                if let Err(e) = &committed {
                    tracing::warn!(error = %e, "cannot read committed offsets; using stored positions only");
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
                drop(owned);
                drop(st);
                if let Err(e) = c.assign(tpl) {
                    tracing::error!(error = %e, "assign failed");
                }
            }
            _ => {
                let lost = c.assignment_lost();
                let mut st = self.state.lock();
                if lost || err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    tracing::warn!(lost, ?err, "partitions lost: discarding the unstored in-flight batch");
                    st.batch.clear();
                    st.dlq.clear();
                    st.batch_started = None;
                } else {
                    tracing::info!(partitions = tpl.count(), "partitions revoked: flushing in-flight batch");
                    self.flush(c, &pipeline, &mut st, true);
                    self.commit_positions(c, &pipeline, tpl, CommitMode::Sync);
                }
                st.next.clear();
                st.base.clear();
                self.owned.lock().clear();
                pipeline.metrics.lag.lock().clear();
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

    fn send_dlq(&self, m: &DlqMsg, idx: usize) -> Result<(), KafkaError> {
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
        let mut rec: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(&m.topic, idx)
            .payload(&m.payload[..])
            .headers(headers);
        if let Some(k) = &m.key {
            rec = rec.key(&k[..]);
        }
        loop {
            match self.producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Waits until every dead letter of the batch is acknowledged (re-sending failures).
    fn ack_dlq(&self, st: &State, pipeline: &Pipeline, give_up: bool) -> bool {
        let mut attempt = 0u32;
        loop {
            if self.producer.flush(Duration::from_secs(30)).is_err() {
                tracing::warn!("dead-letter flush timed out");
            }
            let failed: Vec<usize> = std::mem::take(&mut *self.failed_list());
            if failed.is_empty() && self.producer.in_flight_count() == 0 {
                return true;
            }
            pipeline
                .metrics
                .dlq_errors
                .fetch_add(failed.len() as u64, Ordering::Relaxed);
            attempt += 1;
            if (give_up && attempt > 3) || self.stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(backoff(attempt));
            for i in failed {
                if let Some(m) = st.dlq.get(i) {
                    if let Err(e) = self.send_dlq(m, i) {
                        tracing::warn!(error = %e, "dead-letter send failed");
                        self.failed_list().push(i);
                    }
                }
            }
        }
    }

    fn failed_list(&self) -> parking_lot::MutexGuard<'_, Vec<usize>> {
        self.producer.context().failed.lock()
    }

    /// Makes the in-flight batch durable: dead letters acknowledged, then one store append
    /// carrying the positions. Returns false if the batch had to be discarded.
    fn flush(&self, c: &BaseConsumer<Self>, pipeline: &Pipeline, st: &mut State, revoking: bool) -> bool {
        if st.batch.is_empty() {
            return true;
        }
        let ok = (st.dlq.is_empty() || self.ack_dlq(st, pipeline, revoking)) && {
            let mut attempt = 0u32;
            loop {
                match pipeline.commit(&st.batch, Source::Kafka) {
                    Ok(_) => break true,
                    Err(e) => {
                        attempt += 1;
                        tracing::error!(error = %e, attempt, "store append failed; retrying");
                        if attempt > if revoking { 3 } else { 20 } || self.stop.load(Ordering::Relaxed) {
                            break false;
                        }
                        std::thread::sleep(backoff(attempt));
                    }
                }
            }
        };
        if ok {
            let mut dl = pipeline.metrics.dlq_writes.lock();
            for m in &st.dlq {
                *dl.entry(m.topic.clone()).or_default() += 1;
            }
            drop(dl);
            let mut owned = self.owned.lock();
            let mut l = TopicPartitionList::new();
            for (src, pos) in &st.batch.positions {
                if let Some(tp) = parse_source_key(src) {
                    let _ = l.add_partition_offset(&tp.0, tp.1, Offset::Offset(*pos));
                    st.base.insert(tp.clone(), *pos);
                    owned.insert(tp, *pos);
                }
            }
            drop(owned);
            if !revoking && l.count() > 0 {
                if let Err(e) = c.commit(&l, CommitMode::Async) {
                    tracing::debug!(error = %e, "async offset commit failed");
                }
            }
        } else {
            // Not stored: rewind so the events are read again (never lost).
            tracing::error!("discarding unstored batch and rewinding its partitions");
            for src in st.batch.positions.keys() {
                if let Some(tp) = parse_source_key(src) {
                    let base = st.base.get(&tp).copied().unwrap_or(0);
                    st.next.insert(src.clone(), base);
                    if !revoking {
                        if let Err(e) = c.seek(&tp.0, tp.1, Offset::Offset(base), Duration::from_secs(10)) {
                            tracing::error!(error = %e, "rewind failed");
                        }
                    }
                }
            }
        }
        st.batch.clear();
        st.dlq.clear();
        st.batch_started = None;
        ok
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
        let producer: BaseProducer<DlqCtx> = client_config(&cfg.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .create_with_context(DlqCtx::default())?;
        let stop = Arc::new(AtomicBool::new(false));
        let owned = Arc::new(Mutex::new(BTreeMap::new()));
        let state = Arc::new(Mutex::new(State {
            pipeline: Some(pipeline.clone()),
            batch: Batch::new(),
            dlq: Vec::new(),
            batch_started: None,
            next: HashMap::new(),
            base: HashMap::new(),
        }));
        let ctx = Ctx {
            state: state.clone(),
            producer,
            stop: stop.clone(),
            owned: owned.clone(),
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
            .set("queued.max.messages.kbytes", "65536")
            // Low fetch wait: freshness (some brokers hold a fetch for the full wait).
            .set("fetch.wait.max.ms", "25")
            .set("enable.partition.eof", "false");
        for (k, v) in &cfg.extra {
            cc.set(k, v);
        }
        let consumer: BaseConsumer<Ctx> = cc.create_with_context(ctx)?;
        let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
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
            monitor: Some(monitor),
        })
    }

    /// Stops consuming: flushes the in-flight batch, commits, closes the clients (with a
    /// timeout: a librdkafka close that hangs is abandoned, the data is already safe).
    pub fn shutdown(mut self, timeout: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        for h in [self.worker.take(), self.monitor.take()].into_iter().flatten() {
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

fn run_worker(consumer: BaseConsumer<Ctx>, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>, cfg: KafkaConfig) {
    let Some(pipeline) = state.lock().pipeline.clone() else {
        return;
    };
    let ctx = consumer.context();
    // (topic, partition, source key) of the last message: no allocation per message.
    let mut cur: (String, i32, String) = (String::new(), -1, String::new());
    while !stop.load(Ordering::Relaxed) {
        let wait = {
            let st = state.lock();
            match st.batch_started {
                Some(t) => cfg.batch_linger.saturating_sub(t.elapsed()),
                None => Duration::from_millis(100),
            }
        };
        match consumer.poll(wait) {
            Some(Ok(m)) => {
                let now = now_ns();
                let mut st = state.lock();
                if cur.1 != m.partition() || cur.0 != m.topic() {
                    cur = (
                        m.topic().to_string(),
                        m.partition(),
                        source_key(m.topic(), m.partition()),
                    );
                }
                let Some(&next) = st.next.get(cur.2.as_str()) else {
                    continue;
                };
                if m.offset() < next {
                    continue;
                }
                let payload = m.payload().unwrap_or(&[]);
                let st = &mut *st;
                if let Err(r) = pipeline.prepare(&mut st.batch, payload, now) {
                    pipeline.metrics.add_rejected(Source::Kafka, r.code, 1);
                    let msg = DlqMsg {
                        topic: format!("{}.dlq", cur.0),
                        payload: payload.to_vec(),
                        key: m.key().map(<[u8]>::to_vec),
                        reject: r,
                        src_topic: cur.0.clone(),
                        partition: cur.1,
                        offset: m.offset(),
                    };
                    let idx = st.dlq.len();
                    if let Err(e) = ctx.send_dlq(&msg, idx) {
                        tracing::warn!(error = %e, "dead-letter send failed; will retry");
                        ctx.failed_list().push(idx);
                    }
                    st.dlq.push(msg);
                }
                st.batch.set_position(&cur.2, m.offset() + 1);
                if let Some(n) = st.next.get_mut(cur.2.as_str()) {
                    *n = m.offset() + 1;
                }
                if st.batch_started.is_none() {
                    st.batch_started = Some(Instant::now());
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "kafka consume error");
            }
            None => {}
        }
        let mut st = state.lock();
        let due = st.batch.positions.len() + st.batch.events() > 0
            && (st.batch.events() + st.dlq.len() >= cfg.batch_max_events
                || st.batch_started.is_some_and(|t| t.elapsed() >= cfg.batch_linger));
        if due {
            ctx.flush(&consumer, &pipeline, &mut st, false);
        }
    }
    // Shutdown: make the in-flight batch durable, commit, then close the client.
    {
        let mut st = state.lock();
        stop.store(false, Ordering::Relaxed); // let the final flush retry a little
        ctx.flush(&consumer, &pipeline, &mut st, true);
        stop.store(true, Ordering::Relaxed);
        if let Ok(a) = consumer.assignment() {
            ctx.commit_positions(&consumer, &pipeline, &a, CommitMode::Sync);
        }
        let _ = ctx.producer.flush(Duration::from_secs(5));
        st.pipeline = None;
    }
    drop(pipeline);
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
