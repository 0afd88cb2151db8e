//! Crash during a hand-over, with a real broker and two tally processes in one group.
//!
//! Process A is killed (a failpoint aborts it, exactly like a SIGKILL) right after it
//! committed a batch's offsets to Kafka and before the batch reached its store — the one
//! window where those events are in no store. Process B takes A's partitions over and
//! starts at the committed offsets, so it never reads that batch. When A restarts it
//! finds the range it committed and never stored (its takeover records in
//! `tally.handover` bound what is its own) and ingests it. The totals over both stores
//! must equal the generator's exactly: nothing lost, nothing counted twice.

mod common;

use std::time::{Duration, Instant};

use common::kafka::*;
use tally::ingest::generator::{self, GenConfig};

#[test]
fn kafka_crash_between_commit_and_append_then_partitions_move_exact() {
    let topic = "cost.compute";
    let KafkaRig { broker, tmp, prices } = KafkaRig::start(topic, 4);
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    let opts = TallyOpts {
        brokers: Some(&broker.addr),
        topics: &[topic],
        group: "tally-pair",
        price_book: Some(&prices),
        extra: &["--batch-max-events", "300", "--batch-linger", "10ms"],
    };
    // No duplicates: event_id de-duplication is per data directory (docs/ingest.md).
    let cfg = GenConfig {
        brokers: broker.addr.clone(),
        topic: topic.into(),
        rate: 1500,
        count: 24_000,
        tenants: 4,
        duplicate_share: 0.0,
        malformed_share: 0.01,
        seed: 29,
        ..GenConfig::default()
    };
    let gen = std::thread::spawn(move || generator::run(&cfg).expect("generator"));
    let mut b = Tally::start(&db, &opts);
    let mut a = Tally::start_with_env(&da, &opts, &[("TALLY_FAILPOINT", "kafka.after_commit:8")]);
    wait_for("A to die at the failpoint", Duration::from_secs(120), || a.exited());
    assert!(
        a.log_text().contains("failpoint reached"),
        "A exited without reaching the failpoint:\n{}",
        a.log_text()
    );
    // B owns every partition now (after A's session timed out) and consumes on.
    wait_for("B to own all 4 partitions", Duration::from_secs(60), || {
        b.stored_offsets().keys().filter(|(t, _)| t == topic).count() == 4
    });
    let mut a = Tally::start(&da, &opts);
    let end = Instant::now() + Duration::from_secs(60);
    while !a.log_text().contains("hand-over recovery done") {
        assert!(
            Instant::now() < end,
            "no hand-over recovery in A's log:\n{}",
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let recovered = a.counter("tally_ingest_handover_recovered_messages_total ");
    assert!(recovered > 0, "A recovered nothing:\n{}", a.log_text());
    let report = gen.join().expect("generator thread");
    assert_eq!(report.delivery_errors, 0);
    wait_stored(&[&a, &b], topic, &report.end_offsets, Duration::from_secs(120));
    a.stop();
    b.stop();
    let (ta, _) = store_totals(&da);
    let (tb, _) = store_totals(&db);
    assert_totals_match(&report, &merge_totals(&[ta, tb]));
    // Every malformed event is dead-lettered (at least once: A re-sends the recovered
    // batch's dead letters).
    assert_dlq_covers(&broker, topic, &report);
}
