//! Fault tests with a real broker: SIGKILL crash loops, broker outage, two processes in
//! one consumer group. Each asserts exact totals (0 lost, 0 duplicated) against the
//! generator's report; waits poll with deadlines, nothing asserts on timing.

mod common;

use std::time::{Duration, Instant};

use common::kafka::*;
use tally::ingest::generator::{self, GenConfig, GenReport};

fn gen_in_background(cfg: GenConfig) -> std::thread::JoinHandle<GenReport> {
    std::thread::spawn(move || generator::run(&cfg).expect("generator"))
}

fn batches(t: &Tally) -> u64 {
    t.counter("tally_ingest_batches_total ")
}

#[test]
fn kafka_sigkill_restart_cycles_exact_totals() {
    let topic = "cost.storage";
    let KafkaRig { broker, tmp, prices } = KafkaRig::start(topic, 4);
    let data = tmp.path().join("data");
    let opts = TallyOpts {
        brokers: Some(&broker.addr),
        topics: &[topic],
        group: "tally",
        price_book: Some(&prices),
        extra: &["--batch-max-events", "300", "--batch-linger", "10ms"],
    };
    let gen = gen_in_background(GenConfig {
        brokers: broker.addr.clone(),
        topic: topic.into(),
        // 100 s of events: every kill cycle must find events still arriving. A restart
        // waits for the group to drop the killed member (its 6 s session) before it gets
        // partitions, ~11-14 s a cycle here; with 30 s of events (45k), the fourth cycle
        // of a slow seed found everything stored and nothing more to write.
        rate: 1500,
        count: 150_000,
        tenants: 3,
        malformed_share: 0.01,
        duplicate_share: 0.03,
        seed: 11,
        ..GenConfig::default()
    });
    let seed = std::env::var("TALLY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("kill-point seed: {seed} (TALLY_TEST_SEED to replay)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let cycles = 5;
    for cycle in 0..cycles {
        let mut t = Tally::start(&data, &opts);
        // Kill at a random point after the process has started writing batches.
        let started = std::time::Instant::now();
        while batches(&t) == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "cycle {cycle}: no batch written within 60 s of the start (generator finished: {}); log:\n{}",
                gen.is_finished(),
                t.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(rng.u64(0..1500)));
        eprintln!("cycle {cycle}: SIGKILL after {} events accepted", t.accepted());
        t.kill9();
    }
    let report = gen.join().expect("generator thread");
    assert_eq!(report.delivery_errors, 0);
    let mut t = Tally::start(&data, &opts);
    wait_stored(&[&t], topic, &report.end_offsets, Duration::from_secs(120));
    t.stop();
    let (totals, _) = store_totals(&data);
    assert_totals_match(&report, &totals);
    assert_dlq_covers(&broker, topic, &report);
}

#[test]
fn kafka_broker_outage_degraded_then_resumes_exact() {
    let topic = "cost.network";
    let KafkaRig { broker, tmp, prices } = KafkaRig::start(topic, 2);
    let data = tmp.path().join("data");
    let opts = TallyOpts {
        brokers: Some(&broker.addr),
        topics: &[topic],
        group: "tally",
        price_book: Some(&prices),
        extra: &[],
    };
    let mut t = Tally::start(&data, &opts);
    let gen = gen_in_background(GenConfig {
        brokers: broker.addr.clone(),
        topic: topic.into(),
        rate: 1000,
        count: 15_000,
        tenants: 3,
        seed: 5,
        ..GenConfig::default()
    });
    wait_for("ingest to start", Duration::from_secs(60), || t.accepted() > 0);
    assert_eq!(t.health_status().as_deref(), Some("ok"));
    // Pause the broker for longer than the 6 s session timeout.
    broker.pause();
    let paused = Instant::now();
    wait_for("/healthz degraded", Duration::from_secs(30), || {
        t.health_status().as_deref() == Some("degraded")
    });
    assert!(t.metrics().contains("tally_ingest_kafka_up 0"));
    if let Some(rest) = Duration::from_secs(10).checked_sub(paused.elapsed()) {
        std::thread::sleep(rest);
    }
    broker.resume();
    wait_for("/healthz ok again", Duration::from_secs(60), || {
        t.health_status().as_deref() == Some("ok")
    });
    let report = gen.join().expect("generator thread");
    assert_eq!(report.delivery_errors, 0);
    wait_stored(&[&t], topic, &report.end_offsets, Duration::from_secs(120));
    let m = t.metrics();
    let rebalances = m
        .lines()
        .find(|l| l.starts_with("tally_ingest_rebalances_total"))
        .unwrap_or("");
    eprintln!(
        "after the outage: {rebalances}; lost assignment logged: {}",
        t.log_text().contains("partitions lost")
    );
    t.stop();
    let (totals, _) = store_totals(&data);
    assert_totals_match(&report, &totals);
    assert_dlq_covers(&broker, topic, &report);
}

#[test]
fn kafka_two_processes_split_partitions_exact_after_rebalance() {
    let topic = "cost.compute";
    let KafkaRig { broker, tmp, prices } = KafkaRig::start(topic, 4);
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    let opts = TallyOpts {
        brokers: Some(&broker.addr),
        topics: &[topic],
        group: "tally-pair",
        price_book: Some(&prices),
        extra: &["--batch-max-events", "500"],
    };
    let mut a = Tally::start(&da, &opts);
    // No duplicates here: event_id dedup state is per process (see docs/ingest.md).
    let gen = gen_in_background(GenConfig {
        brokers: broker.addr.clone(),
        topic: topic.into(),
        rate: 1500,
        count: 24_000,
        tenants: 4,
        duplicate_share: 0.0,
        seed: 3,
        ..GenConfig::default()
    });
    wait_for("A ingesting", Duration::from_secs(60), || a.accepted() > 0);
    let mut b = Tally::start(&db, &opts);
    wait_for("partitions split between A and B", Duration::from_secs(90), || {
        let (la, lb) = (a.lags(), b.lags());
        !la.is_empty() && !lb.is_empty() && la.len() + lb.len() == 4
    });
    wait_for("B ingesting", Duration::from_secs(60), || b.accepted() > 0);
    let report = gen.join().expect("generator thread");
    assert_eq!(report.delivery_errors, 0);
    wait_stored(&[&a, &b], topic, &report.end_offsets, Duration::from_secs(120));
    a.stop();
    b.stop();
    let (ta, pa) = store_totals(&da);
    let (tb, pb) = store_totals(&db);
    assert!(
        !pa.is_empty() && !pb.is_empty(),
        "both processes stored data: {pa:?} {pb:?}"
    );
    assert_totals_match(&report, &merge_totals(&[ta, tb]));
    assert_dlq_covers(&broker, topic, &report);
}

/// A batch the writer gives up on is discarded with everything read after it, and the
/// partitions are rewound to their stored positions. The worker reads messages ahead in
/// batches of up to 1024: those must be dropped too, or the first one handed out after the
/// rewind would move its partition past the events about to be read again. Small batches
/// over a pre-filled topic keep read-ahead messages buffered when the failure hits.
#[test]
fn kafka_discarded_batch_rewinds_without_loss() {
    let topic = "cost.rewind";
    let KafkaRig { broker, tmp, prices } = KafkaRig::start(topic, 2);
    let report = generator::run(&GenConfig {
        brokers: broker.addr.clone(),
        topic: topic.into(),
        rate: 0,
        count: 20_000,
        tenants: 3,
        seed: 23,
        ..GenConfig::default()
    })
    .expect("generator");
    assert_eq!(report.delivery_errors, 0);
    let data = tmp.path().join("data");
    let opts = TallyOpts {
        brokers: Some(&broker.addr),
        topics: &[topic],
        group: "tally",
        price_book: Some(&prices),
        extra: &["--batch-max-events", "200", "--batch-linger", "5ms"],
    };
    let mut t = Tally::start_with_env(&data, &opts, &[("TALLY_FAILPOINT", "kafka.append_gives_up:3")]);
    wait_stored(&[&t], topic, &report.end_offsets, Duration::from_secs(120));
    let log = t.log_text();
    assert!(
        log.contains("failpoint reached: failing"),
        "the append failure never happened:\n{log}"
    );
    assert!(log.contains("rewinding to the stored positions"), "no rewind:\n{log}");
    t.stop();
    let (totals, _) = store_totals(&data);
    assert_totals_match(&report, &totals);
}
