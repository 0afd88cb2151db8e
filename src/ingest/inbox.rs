//! The consumer's inbox: one librdkafka queue that every assigned partition forwards its
//! fetched messages to, read in batches (`rd_kafka_consume_batch_queue`).
//!
//! Why: polling the consumer queue costs per message an event wrapper (allocated), the
//! queue's clock bookkeeping (six clock reads) and rdkafka's own timeout loop: 14 % of
//! the consumer thread went to `clock_gettime` alone. A batch read pays those once per
//! batch.
//!
//! **Invariant (why rebalances still work):** only *messages* are forwarded here, by
//! `rd_kafka_queue_forward` on each partition's fetch queue as it is assigned (an
//! application forward, which librdkafka keeps across fetch restarts). Rebalance, commit
//! and error events stay on the consumer queue, which [`Inbox::next`] polls through
//! rdkafka as before, so the group protocol runs through `ConsumerContext::rebalance`
//! exactly as without the inbox. A message that still reaches the consumer queue (a
//! partition whose forward failed) is returned from there: nothing is lost either way.
//!
//! Messages of an old fetch (before a seek or a re-assignment) are dropped by librdkafka's
//! op versions here just as on the consumer queue; those already read into the inbox's
//! batch are dropped by [`Forwarder::invalidate`], which every rewind and rebalance calls.

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};

/// Messages read per batch call (bounded so one call never holds more than a few hundred
/// kilobytes of payload references).
const BATCH: usize = 1024;

/// A queue handle shareable with the rebalance callback (librdkafka queues are
/// thread-safe; the handle is only destroyed by [`Inbox`]'s drop, after it is unshared).
struct QueuePtr(NonNull<rd::rd_kafka_queue_t>);

// SAFETY: librdkafka queue handles may be used from any thread; lifetime is managed by
// `Inbox` (see `Forwarder`).
unsafe impl Send for QueuePtr {}

/// What the rebalance callback uses to forward newly assigned partitions to the inbox.
/// Empty until the inbox exists and again once it is dropped.
#[derive(Default, Clone)]
pub(crate) struct Forwarder {
    queue: Arc<Mutex<Option<QueuePtr>>>,
    /// Bumped by [`Forwarder::invalidate`]; a batch read under an older value is dropped.
    epoch: Arc<AtomicU64>,
}

impl Forwarder {
    /// Drops the messages the inbox has read but not handed out yet. Call on every seek,
    /// rewind, assignment and revocation: librdkafka discards messages of an old fetch
    /// still in its queues (op versions), but not those already taken into our batch, and
    /// handing one out after a rewind would move the partition's next offset past the
    /// events the rewind is about to read again.
    pub(crate) fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }

    /// Forwards the fetch queue of `topic`/`partition` to the inbox. Returns false when
    /// there is no inbox or librdkafka has no such partition (its messages then arrive
    /// on the consumer queue, which the inbox also reads).
    pub(crate) fn forward<C: ConsumerContext>(&self, c: &BaseConsumer<C>, topic: &str, partition: i32) -> bool {
        let guard = self.queue.lock();
        let (Some(q), Ok(t)) = (guard.as_ref(), CString::new(topic)) else {
            return false;
        };
        // SAFETY: `rk` is the live client `c` owns; `t` outlives the call; the returned
        // partition queue reference is released right after forwarding (the forward is a
        // property of the partition's queue and holds its own reference to the inbox
        // queue, which the guard keeps alive meanwhile).
        unsafe {
            let pq = rd::rd_kafka_queue_get_partition(c.client().native_ptr(), t.as_ptr(), partition);
            if pq.is_null() {
                return false;
            }
            rd::rd_kafka_queue_forward(pq, q.0.as_ptr());
            rd::rd_kafka_queue_destroy(pq);
        }
        true
    }
}

/// One message read from the inbox; destroyed (its op released to librdkafka) on drop.
pub(crate) struct RawMessage(NonNull<rd::rd_kafka_message_t>);

impl RawMessage {
    fn msg(&self) -> &rd::rd_kafka_message_t {
        // SAFETY: the pointer came from rd_kafka_consume_batch_queue and stays valid until
        // rd_kafka_message_destroy in our drop.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for RawMessage {
    fn drop(&mut self) {
        // SAFETY: we own this message reference (returned once by the batch read).
        unsafe { rd::rd_kafka_message_destroy(self.0.as_ptr()) }
    }
}

/// The fields of a consumed message the worker reads, from either queue.
pub(crate) trait Incoming {
    fn topic(&self) -> &str;
    fn partition(&self) -> i32;
    fn offset(&self) -> i64;
    fn payload(&self) -> &[u8];
    fn key(&self) -> Option<&[u8]>;
    /// Create or log-append time in milliseconds, when the broker gave one.
    fn timestamp_ms(&self) -> Option<i64>;
}

/// Bytes of a librdkafka (pointer, length) pair; empty for null.
///
/// # Safety
/// `ptr` must be null or valid for `len` bytes for the lifetime `'a`.
unsafe fn bytes<'a>(ptr: *const std::ffi::c_void, len: usize) -> Option<&'a [u8]> {
    (!ptr.is_null()).then(|| std::slice::from_raw_parts(ptr as *const u8, len))
}

impl Incoming for RawMessage {
    fn topic(&self) -> &str {
        // SAFETY: a consumed message's topic handle lives as long as the message; its name
        // is a NUL-terminated string owned by the handle.
        let name = unsafe { std::ffi::CStr::from_ptr(rd::rd_kafka_topic_name(self.msg().rkt)) };
        name.to_str().unwrap_or("")
    }

    fn partition(&self) -> i32 {
        self.msg().partition
    }

    fn offset(&self) -> i64 {
        self.msg().offset
    }

    fn payload(&self) -> &[u8] {
        let m = self.msg();
        // SAFETY: payload/len describe the message's buffer, valid until it is destroyed.
        unsafe { bytes(m.payload, m.len) }.unwrap_or(&[])
    }

    fn key(&self) -> Option<&[u8]> {
        let m = self.msg();
        // SAFETY: as for the payload.
        unsafe { bytes(m.key, m.key_len) }
    }

    fn timestamp_ms(&self) -> Option<i64> {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: reads the message's timestamp into a local.
        let ts = unsafe { rd::rd_kafka_message_timestamp(self.0.as_ptr(), &mut kind) };
        (kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE).then_some(ts)
    }
}

impl Incoming for BorrowedMessage<'_> {
    fn topic(&self) -> &str {
        Message::topic(self)
    }
    fn partition(&self) -> i32 {
        Message::partition(self)
    }
    fn offset(&self) -> i64 {
        Message::offset(self)
    }
    fn payload(&self) -> &[u8] {
        Message::payload(self).unwrap_or(&[])
    }
    fn key(&self) -> Option<&[u8]> {
        Message::key(self)
    }
    fn timestamp_ms(&self) -> Option<i64> {
        Message::timestamp(self).to_millis()
    }
}

/// A message from the inbox or (rarely) straight from the consumer queue.
pub(crate) enum Received<'c> {
    Inbox(RawMessage),
    Consumer(BorrowedMessage<'c>),
}

impl Received<'_> {
    pub(crate) fn get(&self) -> &dyn Incoming {
        match self {
            Received::Inbox(m) => m,
            Received::Consumer(m) => m,
        }
    }
}

/// The app-owned queue and the batch read from it but not yet handed out.
pub(crate) struct Inbox {
    queue: NonNull<rd::rd_kafka_queue_t>,
    forwarder: Forwarder,
    buf: Vec<*mut rd::rd_kafka_message_t>,
    /// `buf[pos..len]` are read and not yet handed out (owned by us until then).
    pos: usize,
    len: usize,
    /// The forwarder's epoch when `buf` was filled.
    filled_at: u64,
}

impl Inbox {
    /// Creates the queue on `c`'s client and publishes it to `forwarder`. Must be dropped
    /// before the consumer is closed.
    pub(crate) fn new<C: ConsumerContext>(c: &BaseConsumer<C>, forwarder: Forwarder) -> Result<Inbox, KafkaError> {
        // SAFETY: creates a queue on the live client.
        let q = unsafe { rd::rd_kafka_queue_new(c.client().native_ptr()) };
        let queue = NonNull::new(q).ok_or(KafkaError::Subscription("cannot create the inbox queue".into()))?;
        *forwarder.queue.lock() = Some(QueuePtr(queue));
        Ok(Inbox {
            queue,
            forwarder,
            buf: vec![std::ptr::null_mut(); BATCH],
            pos: 0,
            len: 0,
            filled_at: 0,
        })
    }

    /// The next message: from the batch at hand, else after serving the consumer queue
    /// (rebalances, errors, unforwarded messages) a new batch, waiting up to `timeout`
    /// for one. `None` when nothing arrived (or an event was served instead).
    pub(crate) fn next<'c, C: ConsumerContext>(
        &mut self,
        c: &'c BaseConsumer<C>,
        timeout: Duration,
    ) -> Option<Result<Received<'c>, KafkaError>> {
        let m = match self.take() {
            Some(m) => m,
            None => {
                match c.poll(Duration::ZERO) {
                    Some(Ok(m)) => return Some(Ok(Received::Consumer(m))),
                    Some(Err(e)) => return Some(Err(e)),
                    None => {}
                }
                let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
                // Taken before the read: an invalidation during it drops the batch.
                let epoch = self.forwarder.epoch.load(Ordering::Relaxed);
                // SAFETY: `buf` has room for `buf.len()` pointers; the queue is ours and alive.
                let n = unsafe {
                    rd::rd_kafka_consume_batch_queue(self.queue.as_ptr(), ms, self.buf.as_mut_ptr(), self.buf.len())
                };
                if n <= 0 {
                    return None;
                }
                (self.pos, self.len, self.filled_at) = (0, (n as usize).min(self.buf.len()), epoch);
                self.take()?
            }
        };
        let err = m.msg().err;
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::from(err))));
        }
        Some(Ok(Received::Inbox(m)))
    }

    /// The next message of the batch at hand, without polling or waiting: `None` when the
    /// batch is used up, or when its next message is an error (left for [`Inbox::next`]).
    pub(crate) fn take_ready(&mut self) -> Option<RawMessage> {
        while self.pos < self.len && self.buf[self.pos].is_null() {
            self.pos += 1;
        }
        let p = NonNull::new(*self.buf[..self.len].get(self.pos)?)?;
        // SAFETY: `buf[pos]` is a message of the current batch, still owned by us.
        if unsafe { p.as_ref() }.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        self.take()
    }

    fn take(&mut self) -> Option<RawMessage> {
        if self.pos < self.len && self.filled_at != self.forwarder.epoch.load(Ordering::Relaxed) {
            // Invalidated: release the rest of the batch unread.
            while self.pos < self.len {
                if let Some(m) = NonNull::new(self.buf[self.pos]) {
                    drop(RawMessage(m));
                }
                self.pos += 1;
            }
            return None;
        }
        while self.pos < self.len {
            let p = self.buf[self.pos];
            self.pos += 1;
            if let Some(m) = NonNull::new(p) {
                return Some(RawMessage(m));
            }
        }
        None
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.forwarder.queue.lock().take();
        while self.take().is_some() {}
        // SAFETY: no one else holds this handle any more (the forwarder was cleared under
        // its lock); partitions still forwarding hold their own references.
        unsafe { rd::rd_kafka_queue_destroy(self.queue.as_ptr()) }
    }
}
