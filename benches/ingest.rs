//! Kafka ingest benchmarks against a real tansu broker (needs `scripts/test.sh` or
//! `bash scripts/deps/python.sh` first; `TALLY_TEST_DEPS` or `.test-deps/tansu`).
//!
//! `cargo bench --bench ingest` runs all three (`TALLY_BENCH_ONLY=pipeline|throughput|
//! freshness` picks one; `pipeline` and `throughput` also run the pipeline-only part
//! unless `TALLY_BENCH_SKIP_PIPELINE=1`):
//! * pipeline: parse + validate + price, then dedup + store append, no Kafka;
//! * throughput: consume + validate + price + dedup + write from a pre-filled topic, every
//!   tally thread (incl. librdkafka's) pinned to CPU 0 by affinity inherited from the
//!   thread that starts the ingest (`TALLY_BENCH_EVENTS`, default 1,000,000); reports
//!   wall rate and messages per CPU-second of the whole bench process (the broker is a
//!   separate process; the prefill producer is gone by then);
//! * freshness: a steady `TALLY_BENCH_RATE` events/s (default 50,000) for
//!   `TALLY_BENCH_SECONDS` (default 10); p50/p99 of (visible in the store − event time)
//!   from `tally_ingest_freshness_seconds` (bucket upper bounds), and the producer +
//!   broker share of it from `tally_ingest_kafka_delay_seconds`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally::ingest::generator::{self, GenConfig};
use tally::ingest::kafka::{KafkaConfig, KafkaIngest};
use tally::ingest::pipeline::PipelineConfig;
use tally::ingest::{IngestMetrics, Pipeline, PriceBook};
use tally::store::{Store, StoreOptions};

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

struct Broker(Child, String);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn broker() -> Broker {
    let deps = std::env::var_os("TALLY_TEST_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".test-deps"));
    let tansu = deps.join("tansu");
    assert!(
        tansu.exists(),
        "{} missing: run scripts/test.sh (or bash scripts/deps/python.sh)",
        tansu.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0);
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(tansu)
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu");
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Broker(child, format!("127.0.0.1:{port}"))
}

/// CPU seconds used so far by this thread (immune to other load on a shared machine).
fn thread_cpu() -> f64 {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU seconds used so far by the whole process (all threads, incl. librdkafka's).
fn process_cpu() -> f64 {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn cpu_clock(id: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe {
        libc::clock_gettime(id, &mut ts);
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// CPU seconds per thread name (threads of one name summed), from `/proc/self/task`: where
/// the timed window's CPU went (consumer, writer, librdkafka's broker threads, ...).
fn thread_cpu_by_name() -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        if let Some((comm, cpu)) = stat_cpu(&t.path().join("stat")) {
            *out.entry(comm).or_insert(0.0) += cpu;
        }
    }
    out
}

/// (comm, user + system CPU seconds) of a `/proc/.../stat` file.
fn stat_cpu(path: &std::path::Path) -> Option<(String, f64)> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let stat = std::fs::read_to_string(path).ok()?;
    // `pid (comm) state ...`: comm may hold spaces, so split at the last ')'.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, i.e. 12 and 13 after the comm.
    let cpu = fields
        .get(11..13)?
        .iter()
        .filter_map(|v| v.parse::<f64>().ok())
        .sum::<f64>()
        / ticks;
    Some((stat[open + 1..close].to_string(), cpu))
}

/// `TALLY_BENCH_PERF_CTL=FIFO`: writes `enable` / `disable` to a `perf record
/// --control=fifo:FIFO -D -1` control FIFO, so a profile covers only the timed window
/// (not the prefill or the store's close-time flush).
fn perf_ctl(cmd: &str) {
    if let Some(path) = std::env::var_os("TALLY_BENCH_PERF_CTL") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(path) {
            let _ = writeln!(f, "{cmd}");
        }
    }
}

fn pin_to_one_core() {
    // SAFETY: plain libc call on a zeroed cpu_set_t for this process.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn unpin() {
    // SAFETY: as above; all CPUs the machine has.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..std::thread::available_parallelism().map_or(1, |n| n.get()) {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn start_tally(dir: &std::path::Path, brokers: &str, topic: &str, group: &str) -> (Arc<IngestMetrics>, KafkaIngest) {
    let store = Arc::new(Store::open(dir, StoreOptions::default()).expect("store"));
    let metrics = Arc::new(IngestMetrics::default());
    let prices = PriceBook::parse(generator::PRICE_BOOK).expect("prices");
    let p = Arc::new(Pipeline::new(store, prices, PipelineConfig::default(), metrics.clone()).expect("pipeline"));
    let cfg = KafkaConfig {
        brokers: brokers.into(),
        topics: vec![topic.into()],
        group: group.into(),
        // `TALLY_BENCH_RDKAFKA="key=value,key=value"`: extra consumer properties to try.
        extra: std::env::var("TALLY_BENCH_RDKAFKA")
            .unwrap_or_default()
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect(),
        ..KafkaConfig::default()
    };
    let k = KafkaIngest::start(p, cfg).expect("kafka ingest");
    (metrics, k)
}

fn accepted(m: &IngestMetrics) -> u64 {
    m.accepted.lock().get("kafka").copied().unwrap_or(0)
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("ingest bench: run with `cargo bench --bench ingest`");
        return;
    }
    // 0. The pipeline alone (no Kafka): parse + validate + price, then dedup + store append.
    // `TALLY_BENCH_SKIP_PIPELINE=1` skips it (e.g. to profile only the Kafka path).
    let only = std::env::var("TALLY_BENCH_ONLY").unwrap_or_default();
    if std::env::var_os("TALLY_BENCH_SKIP_PIPELINE").is_none() && only != "freshness" {
        pin_to_one_core();
        let n = env_u64("TALLY_BENCH_EVENTS", 1_000_000) as usize;
        let events = generator::sample_events(n as u64, env_u64("TALLY_BENCH_TENANTS", 50) as usize, 9);
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).expect("store"));
        let prices = PriceBook::parse(generator::PRICE_BOOK).expect("prices");
        let metrics = Arc::new(IngestMetrics::default());
        let p = Pipeline::new(store, prices, PipelineConfig::default(), metrics).expect("pipeline");
        let (mut prep, mut commit) = (Duration::ZERO, Duration::ZERO);
        let (mut prep_cpu, mut commit_cpu) = (0f64, 0f64);
        let now = tally::store::now_ns();
        for (i, chunk) in events.chunks(20_000).enumerate() {
            let mut batch = tally::ingest::Batch::new();
            let (t, c) = (Instant::now(), thread_cpu());
            for e in chunk {
                p.prepare(&mut batch, e.as_bytes(), now).expect("valid");
            }
            prep += t.elapsed();
            prep_cpu += thread_cpu() - c;
            batch.set_position("bench/0", i as i64);
            let (t, c) = (Instant::now(), thread_cpu());
            p.commit(&batch, tally::ingest::Source::Kafka).expect("commit");
            commit += t.elapsed();
            commit_cpu += thread_cpu() - c;
        }
        println!(
            "pipeline only ({n} events): CPU prepare {:.2} us/event, commit (dedup+store append) {:.2} us/event \
             => {:.0} events per CPU-second; wall {:.0} events/s",
            prep_cpu * 1e6 / n as f64,
            commit_cpu * 1e6 / n as f64,
            n as f64 / (prep_cpu + commit_cpu),
            n as f64 / (prep + commit).as_secs_f64()
        );
        if only == "pipeline" {
            return;
        }
        unpin();
    }
    let b = broker();
    let tmp = tempfile::tempdir().expect("tempdir");

    // 1. Throughput from a pre-filled topic.
    if only != "freshness" {
        throughput(&b, tmp.path());
    }
    if only == "throughput" {
        return;
    }
    freshness(&b, tmp.path());
}

fn throughput(b: &Broker, tmp: &std::path::Path) {
    let n = env_u64("TALLY_BENCH_EVENTS", 1_000_000);
    let t0 = Instant::now();
    let report = generator::run(&GenConfig {
        brokers: b.1.clone(),
        topic: "bench.fill".into(),
        rate: 0,
        count: n,
        tenants: env_u64("TALLY_BENCH_TENANTS", 50) as usize,
        report_offsets: false,
        ..GenConfig::default()
    })
    .expect("prefill");
    println!(
        "prefill: {} messages in {:.1}s",
        report.sent,
        t0.elapsed().as_secs_f64()
    );
    let handle = std::thread::spawn({
        let brokers = b.1.clone();
        let dir = tmp.join("tp");
        let broker_stat = PathBuf::from(format!("/proc/{}/stat", b.0.id()));
        move || {
            let broker_cpu = || stat_cpu(&broker_stat).map_or(0.0, |(_, c)| c);
            let mut broker0 = 0.0;
            pin_to_one_core();
            let (m, k) = start_tally(&dir, &brokers, "bench.fill", "bench-tp");
            let mut first: Option<(Instant, u64, f64)> = None;
            let mut by_thread = Default::default();
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                let a = accepted(&m);
                if first.is_none() && a > 0 {
                    first = Some((Instant::now(), a, process_cpu()));
                    by_thread = thread_cpu_by_name();
                    broker0 = broker_cpu();
                    perf_ctl("enable");
                }
                if a >= report.valid || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            perf_ctl("disable");
            let (t, a0, c0) = first.unwrap_or((Instant::now(), 0, process_cpu()));
            let secs = t.elapsed().as_secs_f64();
            let cpu = process_cpu() - c0;
            let after = thread_cpu_by_name();
            let msgs = (report.sent as f64) * ((report.valid - a0) as f64 / report.valid as f64);
            println!(
                "throughput (pinned to 1 core): {} valid of {} messages; wall {:.0} messages/s ({:.0} accepted events/s); \
                 {:.0} messages per CPU-second (all tally + librdkafka threads)",
                report.valid,
                report.sent,
                msgs / secs,
                (report.valid - a0) as f64 / secs,
                msgs / cpu
            );
            let per_thread: Vec<String> = after
                .iter()
                .map(|(name, c)| (name, c - by_thread.get(name).copied().unwrap_or(0.0)))
                .filter(|(_, c)| *c > 0.0)
                .map(|(name, c)| format!("{name} {:.2} us", c * 1e6 / msgs))
                .collect();
            println!(
                "  CPU per message by thread (clock ticks; one name summed: rdk:broker<id> is both the consumer's and the dead-letter producer's): {}; the broker process (not pinned): {:.2} us",
                per_thread.join(", "),
                (broker_cpu() - broker0) * 1e6 / msgs
            );
            println!(
                "  batches: {}; partition pauses (writer behind): {}; offset commit before append: mean {:.4}s",
                m.batches.load(Ordering::Relaxed),
                m.pauses.load(Ordering::Relaxed),
                {
                    let (_, sum, count) = m.offset_commit.snapshot();
                    sum / count.max(1) as f64
                }
            );
            k.shutdown(Duration::from_secs(30));
        }
    });
    let _ = handle.join();
}

/// 2. Freshness at a steady rate.
fn freshness(b: &Broker, tmp: &std::path::Path) {
    let rate = env_u64("TALLY_BENCH_RATE", 50_000);
    let secs = env_u64("TALLY_BENCH_SECONDS", 10);
    let topic = "bench.steady";
    tally::ingest::kafka::ensure_topics(&b.1, &[topic.to_string()], 4).expect("topic");
    let (m, k) = start_tally(&tmp.join("fr"), &b.1, topic, "bench-fr");
    // Wait for the group join before producing, so the figure is steady-state.
    let end = Instant::now() + Duration::from_secs(60);
    while m.rebalances.load(Ordering::Relaxed) == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    // Sample the histograms while producing: where in the run does the tail sit (start-up,
    // periodic broker stalls, or spread evenly)? Printed per 500 ms window as events, those
    // slower than 250 ms end to end, and those already slower before tally consumed them.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (m, sampling) = (m.clone(), sampling.clone());
        std::thread::spawn(move || {
            let slow = |h: &tally::ingest::FreshnessHistogram| {
                let (b, _, count) = h.snapshot();
                let fast = b.iter().find(|(le, _)| *le >= 0.25).map_or(0, |(_, c)| *c);
                (count, count - fast)
            };
            let mut windows = Vec::new();
            let (mut last, mut last_k) = (slow(&m.freshness), slow(&m.kafka_delay));
            while sampling.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                let (now, now_k) = (slow(&m.freshness), slow(&m.kafka_delay));
                windows.push((now.0 - last.0, now.1 - last.1, now_k.1 - last_k.1));
                (last, last_k) = (now, now_k);
            }
            windows
        })
    };
    let report = generator::run(&GenConfig {
        brokers: b.1.clone(),
        topic: topic.into(),
        rate,
        count: rate * secs,
        tenants: 50,
        late_share: 0.0,
        report_offsets: false,
        ..GenConfig::default()
    })
    .expect("steady producer");
    let end = Instant::now() + Duration::from_secs(120);
    while accepted(&m) < report.valid && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    sampling.store(false, Ordering::Relaxed);
    let windows = sampler.join().unwrap_or_default();
    let line: Vec<String> = windows
        .iter()
        .filter(|w| w.0 > 0)
        .map(|(n, slow, slow_k)| format!("{n}:{slow}/{slow_k}"))
        .collect();
    println!(
        "  per 500 ms window, events:slower-than-250ms/of-which-before-tally: {}",
        line.join(" ")
    );
    // Quantiles as bucket upper bounds: (mean, p50, p99, count).
    let quantiles = |h: &tally::ingest::FreshnessHistogram| {
        let (buckets, sum, count) = h.snapshot();
        let q = |p: f64| {
            let target = (count as f64 * p).ceil() as u64;
            buckets
                .iter()
                .find(|(_, c)| *c >= target)
                .map_or(f64::INFINITY, |(le, _)| *le)
        };
        (sum / count.max(1) as f64, q(0.5), q(0.99), count)
    };
    let (mean, p50, p99, count) = quantiles(&m.freshness);
    let (kmean, k50, k99, _) = quantiles(&m.kafka_delay);
    let (cmean, _, c99, ccount) = quantiles(&m.offset_commit);
    println!(
        "freshness at {:.0} events/s produced ({} events): mean {:.3}s, p50 <= {}s, p99 <= {}s \
         (of which producer + broker, create time -> consumed: mean {:.3}s, p50 <= {}s, p99 <= {}s)",
        report.sent as f64 / report.elapsed_seconds,
        count,
        mean,
        p50,
        p99,
        kmean,
        k50,
        k99
    );
    println!(
        "  offset commit before append: {ccount} commits, mean {:.4}s, p99 <= {c99}s",
        cmean
    );
    println!(
        "  producer: {} acks slower than 250 ms, slowest {} ms",
        report.slow_acks, report.max_ack_ms
    );
    println!(
        "  partition pauses (writer behind): {}; batches: {}",
        m.pauses.load(Ordering::Relaxed),
        m.batches.load(Ordering::Relaxed)
    );
    k.shutdown(Duration::from_secs(30));
}
