//! Backpressure with a real broker: when the writer cannot keep up, the consumer stops
//! growing its batch, and once the writer stays behind (half a second) it pauses the
//! partitions (`rd_kafka_pause_partitions`) instead of buffering without bound; once the
//! writer drains, the partitions resume and nothing is lost or counted twice.
//!
//! The writer is made to lag for certain: nearly every batch holds dead letters (2 % of
//! the events are malformed, batches are 200 events), and a batch is appended only after
//! its dead letters are acknowledged by the broker. Stopping the broker (SIGSTOP) stalls
//! those acknowledgements while the consumer still holds librdkafka's prefetched
//! messages, so the open batch fills up behind a stalled writer. (A pre-filled topic can
//! also pause on ordinary fsync lag before that; either way the pause path is exercised.)

mod common;

use std::time::Duration;

use common::kafka::*;
use tally::ingest::generator::{self, GenConfig};

#[test]
fn kafka_writer_stall_pauses_partitions_then_resumes_exact() {
    let topic = "cost.compute";
    let KafkaRig { broker, tmp, prices } = KafkaRig::start(topic, 2);
    // Pre-fill the topic, so librdkafka has plenty prefetched when the broker stops.
    let report = generator::run(&GenConfig {
        brokers: broker.addr.clone(),
        topic: topic.into(),
        rate: 0,
        count: 60_000,
        tenants: 3,
        malformed_share: 0.02,
        duplicate_share: 0.01,
        seed: 23,
        ..GenConfig::default()
    })
    .expect("generator");
    assert_eq!(report.delivery_errors, 0);
    assert!(!report.rejected.is_empty(), "{report:?}");

    let data = tmp.path().join("data");
    let opts = TallyOpts {
        brokers: Some(&broker.addr),
        topics: &[topic],
        group: "tally",
        price_book: Some(&prices),
        extra: &["--batch-max-events", "200", "--batch-linger", "10ms"],
    };
    let mut t = Tally::start(&data, &opts);
    let accepted = "tally_ingest_events_accepted_total{source=\"kafka\"} ";
    let pauses = "tally_ingest_partition_pauses_total ";
    wait_for("ingest to start", Duration::from_secs(60), || t.counter(accepted) > 0);

    broker.pause();
    wait_for(
        "partitions paused behind the stalled writer",
        Duration::from_secs(30),
        || t.counter(pauses) > 0,
    );
    let held = t.counter(accepted);
    assert!(
        held < report.valid,
        "everything was accepted before the stall ({held}); the pause proves nothing"
    );
    // Well within the 6 s session timeout: the group does not rebalance.
    broker.resume();

    wait_stored(&[&t], topic, &report.end_offsets, Duration::from_secs(120));
    assert!(t.counter(accepted) > held, "ingest did not resume after the pause");
    t.stop();
    let (totals, _) = store_totals(&data);
    eprintln!(
        "DEBUG dir {} report {:?}\ngot {:?}",
        tmp.path().display(),
        report.tenants,
        totals
    );
    let _keep = tmp.keep();
    assert_totals_match(&report, &totals);
    assert_dlq_covers(&broker, topic, &report);
}
