//! Shared helpers for tests that need real servers: a tansu Kafka broker and `tally serve`
//! child processes on free 127.0.0.1 ports, plus a real Kafka client (rdkafka) and store
//! readers to reconcile results. Everything started here is stopped by PID on drop.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tally::index::{MatchOp, Matcher};
use tally::store::{SampleValues, SelectRequest, SeriesSource, Store, StoreOptions};

/// `$TALLY_TEST_DEPS` (set by `scripts/test.sh`), else the repo's `.test-deps` if it has
/// the broker. Panics with instructions otherwise: these tests never pass silently.
pub fn deps_dir() -> PathBuf {
    let dir = match std::env::var_os("TALLY_TEST_DEPS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-deps"),
    };
    let tansu = dir.join("tansu");
    assert!(
        tansu.exists(),
        "the Kafka broker for this test is missing ({}): run `scripts/test.sh` (it installs tansu into .test-deps \
         and sets TALLY_TEST_DEPS), or `bash scripts/deps/python.sh` once and re-run",
        tansu.display()
    );
    dir
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a PID we spawned.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn wait_tcp(port: u16, deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A tansu broker with memory storage.
pub struct Broker {
    child: Child,
    pub port: u16,
    pub addr: String,
}

impl Broker {
    pub fn start() -> Broker {
        let tansu = deps_dir().join("tansu");
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&tansu)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", tansu.display()));
        assert!(
            wait_tcp(port, Duration::from_secs(10)),
            "tansu did not listen on {port}"
        );
        Broker {
            child,
            port,
            addr: format!("127.0.0.1:{port}"),
        }
    }

    pub fn pause(&self) {
        signal(self.child.id(), libc::SIGSTOP);
    }

    pub fn resume(&self) {
        signal(self.child.id(), libc::SIGCONT);
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) {
        tally::ingest::kafka::ensure_topics(&self.addr, &[topic.to_string()], partitions).expect("create topic");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        signal(self.child.id(), libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `tally serve` child process.
pub struct Tally {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

pub struct TallyOpts<'a> {
    pub brokers: Option<&'a str>,
    pub topics: &'a [&'a str],
    pub group: &'a str,
    pub price_book: Option<&'a Path>,
    pub extra: &'a [&'a str],
}

impl Tally {
    pub fn start(data_dir: &Path, o: &TallyOpts<'_>) -> Tally {
        Tally::start_with_env(data_dir, o, &[])
    }

    /// Like [`Tally::start`], with extra environment variables (e.g. `TALLY_FAILPOINT`).
    pub fn start_with_env(data_dir: &Path, o: &TallyOpts<'_>, env: &[(&str, &str)]) -> Tally {
        let port = free_port();
        let log = data_dir.with_extension(format!("{port}.log"));
        let logf = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"));
        if let Some(b) = o.brokers {
            cmd.args([
                "--kafka-brokers",
                b,
                "--group",
                o.group,
                "--kafka-session-timeout",
                "6s",
            ]);
            cmd.arg("--topics").arg(o.topics.join(","));
        }
        if let Some(p) = o.price_book {
            cmd.arg("--price-book").arg(p);
        }
        cmd.args(o.extra);
        cmd.envs(env.iter().copied());
        cmd.env("TALLY_LOG", "info,librdkafka=warn")
            .stdout(Stdio::null())
            .stderr(logf);
        let child = cmd.spawn().expect("spawn tally");
        let mut t = Tally {
            child: Some(child),
            port,
            data_dir: data_dir.to_path_buf(),
            log,
        };
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((200, _)) = t.http("GET", "/readyz", b"", &[]) {
                break;
            }
            if let Some(c) = t.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("tally exited early ({st}); log:\n{}", t.log_text());
                }
            }
            assert!(Instant::now() < end, "tally not ready; log:\n{}", t.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        t
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True once the process has exited (by itself: a failpoint, a crash).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit (asserts success).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGTERM);
            let end = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(Some(st)) = c.try_wait() {
                    assert!(st.success(), "tally exited with {st}; log:\n{}", self.log_text());
                    return;
                }
                if Instant::now() > end {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("tally did not stop within 60 s; log:\n{}", self.log_text());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Minimal HTTP/1.1 client: (status, body).
    pub fn http(&self, method: &str, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).ok()?;
        s.write_all(body).ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).ok()?;
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text.split(' ').nth(1)?.parse().ok()?;
        let (head, rest) = text.split_once("\r\n\r\n")?;
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        Some((status, body))
    }

    pub fn metrics(&self) -> String {
        self.http("GET", "/metrics", b"", &[])
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    pub fn health_status(&self) -> Option<String> {
        let (_, b) = self.http("GET", "/healthz", b"", &[])?;
        let v: serde_json::Value = serde_json::from_str(&b).ok()?;
        v.get("status").and_then(|s| s.as_str()).map(str::to_string)
    }

    /// The value of the first `/metrics` line starting with `prefix` (name plus labels
    /// and the trailing space), or 0 when absent.
    pub fn counter(&self, prefix: &str) -> u64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    /// `tally_ingest_events_accepted_total{source="kafka"}`.
    pub fn accepted(&self) -> u64 {
        self.counter("tally_ingest_events_accepted_total{source=\"kafka\"} ")
    }

    /// `tally_ingest_consumer_lag` per (topic, partition) from `/metrics`.
    pub fn lags(&self) -> BTreeMap<(String, i32), i64> {
        self.partition_gauge("tally_ingest_consumer_lag")
    }

    /// `tally_ingest_stored_offset` per (topic, partition) from `/metrics`.
    pub fn stored_offsets(&self) -> BTreeMap<(String, i32), i64> {
        self.partition_gauge("tally_ingest_stored_offset")
    }

    fn partition_gauge(&self, name: &str) -> BTreeMap<(String, i32), i64> {
        let prefix = format!("{name}{{topic=\"");
        let mut out = BTreeMap::new();
        for line in self.metrics().lines() {
            if let Some(rest) = line.strip_prefix(prefix.as_str()) {
                let mut it = rest.splitn(2, "\",partition=\"");
                let (Some(t), Some(r)) = (it.next(), it.next()) else {
                    continue;
                };
                let Some((p, v)) = r.split_once("\"} ") else { continue };
                if let (Ok(p), Ok(v)) = (p.parse(), v.trim().parse()) {
                    out.insert((t.to_string(), p), v);
                }
            }
        }
        out
    }
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((len, r)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else {
            break;
        };
        if n == 0 || r.len() < n {
            break;
        }
        out.push_str(&r[..n]);
        rest = r[n..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits until every partition the generator wrote to is durable in some process's store
/// up to the generator's end offset (`tally_ingest_stored_offset`, highest across the
/// processes). The broker's own watermarks are not used: tansu's ListOffsets can report a
/// high watermark below the last acknowledged offset, which made "lag 0" arrive early.
pub fn wait_stored(tallies: &[&Tally], topic: &str, end_offsets: &BTreeMap<i32, i64>, deadline: Duration) {
    assert!(!end_offsets.is_empty(), "the generator reported no offsets");
    let end = Instant::now() + deadline;
    loop {
        let mut stored: BTreeMap<i32, i64> = BTreeMap::new();
        for t in tallies {
            for ((tp, p), o) in t.stored_offsets() {
                if tp == topic {
                    let e = stored.entry(p).or_insert(o);
                    *e = (*e).max(o);
                }
            }
        }
        if end_offsets
            .iter()
            .all(|(p, want)| stored.get(p).is_some_and(|got| got >= want))
        {
            return;
        }
        if Instant::now() > end {
            let logs: Vec<String> = tallies.iter().map(|t| t.log_text()).collect();
            panic!(
                "not caught up: stored {stored:?}, want {end_offsets:?}\nlogs:\n{}",
                logs.join("\n-----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Per-tenant totals read back from a store: (usage samples, usage in thousandths, cost nanos, cost samples).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TenantTotals {
    pub usage_samples: u64,
    pub usage_thousandths: u64,
    pub cost_nanos: i128,
    pub cost_samples: u64,
}

pub fn store_totals(dir: &Path) -> (BTreeMap<String, TenantTotals>, BTreeMap<String, i64>) {
    let opts = StoreOptions {
        background: false,
        flush_on_close: false,
        ..StoreOptions::default()
    };
    let store = Store::open(dir, opts).expect("open store");
    let snap = store.snapshot();
    let m = [Matcher::new(MatchOp::Regex, "__name__", ".+").expect("matcher")];
    let req = SelectRequest {
        tenant: None,
        matchers: &m,
        start: i64::MIN,
        end: i64::MAX,
    };
    let mut out: BTreeMap<String, TenantTotals> = BTreeMap::new();
    for s in snap.select(&req).expect("select") {
        let s = s.expect("series");
        let tenant = s.labels.tenant().unwrap_or("").to_string();
        if tenant.is_empty() {
            continue;
        }
        let e = out.entry(tenant).or_default();
        match (&s.values, s.labels.metric_name()) {
            (SampleValues::Money(v), Some("cost")) => {
                e.cost_samples += v.len() as u64;
                e.cost_nanos += v.iter().map(|x| *x as i128).sum::<i128>();
            }
            (SampleValues::Float(v), _) => {
                e.usage_samples += v.len() as u64;
                e.usage_thousandths += v.iter().map(|x| (x * 1000.0).round() as u64).sum::<u64>();
            }
            _ => {}
        }
    }
    let positions = store.source_positions();
    drop(snap);
    drop(store);
    (out, positions)
}

/// Merges the totals of several stores (processes of one group).
pub fn merge_totals(parts: &[BTreeMap<String, TenantTotals>]) -> BTreeMap<String, TenantTotals> {
    let mut out: BTreeMap<String, TenantTotals> = BTreeMap::new();
    for p in parts {
        for (t, v) in p {
            let e = out.entry(t.clone()).or_default();
            e.usage_samples += v.usage_samples;
            e.usage_thousandths += v.usage_thousandths;
            e.cost_nanos += v.cost_nanos;
            e.cost_samples += v.cost_samples;
        }
    }
    out
}

/// Asserts the store totals equal the generator's report, tenant by tenant.
pub fn assert_totals_match(report: &tally::ingest::generator::GenReport, got: &BTreeMap<String, TenantTotals>) {
    assert_eq!(
        report.tenants.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "tenants differ"
    );
    for (t, want) in &report.tenants {
        let g = got[t];
        let want_cost: i128 = want.cost_nanos.parse().expect("cost_nanos");
        assert_eq!(g.cost_nanos, want_cost, "{t}: exact cost (nanos)");
        assert_eq!(g.cost_samples, want.priced_events, "{t}: cost samples (priced events)");
        assert_eq!(g.usage_thousandths, want.usage_thousandths, "{t}: usage total");
        assert_eq!(g.usage_samples, want.events, "{t}: usage samples (events)");
    }
}

/// One dead letter read back from a `.dlq` topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
}

/// Reads every message of `topic` (all partitions, from the beginning) until `min` messages
/// arrived and no more come for a second, or the deadline passes.
pub fn read_topic(brokers: &str, topic: &str, min: usize, deadline: Duration) -> Vec<DeadLetter> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "tally-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning).expect("tpl");
        }
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let end = Instant::now() + deadline;
    let mut idle_since = Instant::now();
    while Instant::now() < end {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let mut headers = HashMap::new();
                if let Some(h) = m.headers() {
                    for hd in h.iter() {
                        headers.insert(
                            hd.key.to_string(),
                            String::from_utf8_lossy(hd.value.unwrap_or_default()).to_string(),
                        );
                    }
                }
                out.push(DeadLetter {
                    partition: m.partition(),
                    offset: m.offset(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
                idle_since = Instant::now();
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {
                if out.len() >= min && idle_since.elapsed() > Duration::from_secs(1) {
                    break;
                }
            }
        }
    }
    // Close on a helper thread: dropping a consumer can hang.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(c);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(10));
    out
}

/// What every Kafka test starts from: a broker with one topic, a scratch directory and
/// the generator's price book in it.
pub struct KafkaRig {
    pub broker: Broker,
    pub tmp: tempfile::TempDir,
    pub prices: PathBuf,
}

impl KafkaRig {
    pub fn start(topic: &str, partitions: i32) -> KafkaRig {
        let broker = Broker::start();
        let tmp = tempfile::tempdir().expect("tempdir");
        let prices = write_price_book(tmp.path());
        broker.create_topic(topic, partitions);
        KafkaRig { broker, tmp, prices }
    }
}

/// The generator's price book written to `dir/prices.toml`.
pub fn write_price_book(dir: &Path) -> PathBuf {
    let p = dir.join("prices.toml");
    std::fs::write(&p, tally::ingest::generator::PRICE_BOOK).expect("write price book");
    p
}

/// Polls `f` until it holds; panics naming `what` after `deadline` (a liveness bound,
/// not a timing assertion).
pub fn wait_for(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The dead-letter topic holds every malformed event the generator sent, by (source
/// partition, source offset, reason). Compared as sets: the DLQ is at-least-once after
/// crashes and recoveries.
pub fn assert_dlq_covers(broker: &Broker, topic: &str, report: &tally::ingest::generator::GenReport) {
    let want: std::collections::BTreeSet<(i32, i64, String)> = report.rejected.iter().cloned().collect();
    let dlq = read_topic(
        &broker.addr,
        &format!("{topic}.dlq"),
        want.len(),
        Duration::from_secs(60),
    );
    let got: std::collections::BTreeSet<(i32, i64, String)> = dlq
        .iter()
        .map(|d| {
            (
                d.headers["tally.source_partition"].parse().expect("partition"),
                d.headers["tally.source_offset"].parse().expect("offset"),
                d.headers["tally.reason"].clone(),
            )
        })
        .collect();
    assert_eq!(got, want);
}
