//! Kafka ingest benchmarks against a real tansu broker (needs `scripts/test.sh` or
//! `bash scripts/deps/python.sh` first; `TALLY_TEST_DEPS` or `.test-deps/tansu`).
//!
//! `cargo bench --bench ingest` runs both:
//! * throughput: consume + validate + price + dedup + write from a pre-filled topic, the
//!   tally side pinned to one core (`TALLY_BENCH_EVENTS`, default 1,000,000);
//! * freshness: a steady `TALLY_BENCH_RATE` events/s (default 50,000) for
//!   `TALLY_BENCH_SECONDS` (default 10); p50/p99 of (visible in the store − event time)
//!   from `tally_ingest_freshness_seconds` (bucket upper bounds).

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
    assert!(tansu.exists(), "{} missing: run scripts/test.sh (or bash scripts/deps/python.sh)", tansu.display());
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0);
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

fn pin_to_one_core() {
    // SAFETY: plain libc call on a zeroed cpu_set_t for this process.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
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
        ..KafkaConfig::default()
    };
    let k = KafkaIngest::start(p, cfg).expect("kafka ingest");
    (metrics, k)
}

fn accepted(m: &IngestMetrics) -> u64 {
    m.accepted.lock().get("kafka").copied().unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let b = broker();
    let tmp = tempfile::tempdir().expect("tempdir");

    // 1. Throughput from a pre-filled topic.
    let n = env_u64("TALLY_BENCH_EVENTS", 1_000_000);
    let t0 = Instant::now();
    let report = generator::run(&GenConfig {
        brokers: b.1.clone(),
        topic: "bench.fill".into(),
        rate: 0,
        count: n,
        tenants: 50,
        report_offsets: false,
        ..GenConfig::default()
    })
    .expect("prefill");
    println!("prefill: {} messages in {:.1}s", report.sent, t0.elapsed().as_secs_f64());
    let handle = std::thread::spawn({
        let brokers = b.1.clone();
        let dir = tmp.path().join("tp");
        move || {
            pin_to_one_core();
            let (m, k) = start_tally(&dir, &brokers, "bench.fill", "bench-tp");
            let mut first: Option<(Instant, u64)> = None;
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                let a = accepted(&m);
                if first.is_none() && a > 0 {
                    first = Some((Instant::now(), a));
                }
                if a >= report.valid || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let (t, a0) = first.unwrap_or((Instant::now(), 0));
            let secs = t.elapsed().as_secs_f64();
            let msgs = (report.sent as f64) * ((report.valid - a0) as f64 / report.valid as f64);
            println!(
                "throughput (1 core): {} valid of {} messages; {:.0} messages/s ({:.0} accepted events/s) after the first batch",
                report.valid,
                report.sent,
                msgs / secs,
                (report.valid - a0) as f64 / secs
            );
            k.shutdown(Duration::from_secs(30));
        }
    });
    let _ = handle.join();

    // 2. Freshness at a steady rate.
    let rate = env_u64("TALLY_BENCH_RATE", 50_000);
    let secs = env_u64("TALLY_BENCH_SECONDS", 10);
    let topic = "bench.steady";
    tally::ingest::kafka::ensure_topics(&b.1, &[topic.to_string()], 4).expect("topic");
    let (m, k) = start_tally(&tmp.path().join("fr"), &b.1, topic, "bench-fr");
    // Wait for the group join before producing, so the figure is steady-state.
    let end = Instant::now() + Duration::from_secs(60);
    while m.rebalances.load(Ordering::Relaxed) == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
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
    let (buckets, sum, count) = m.freshness.snapshot();
    let q = |p: f64| {
        let target = (count as f64 * p).ceil() as u64;
        buckets.iter().find(|(_, c)| *c >= target).map_or(f64::INFINITY, |(le, _)| *le)
    };
    println!(
        "freshness at {:.0} events/s produced ({} events): mean {:.3}s, p50 <= {}s, p99 <= {}s",
        report.sent as f64 / report.elapsed_seconds,
        count,
        sum / count.max(1) as f64,
        q(0.5),
        q(0.99)
    );
    k.shutdown(Duration::from_secs(30));
}
