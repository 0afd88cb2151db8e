//! End-to-end with a real broker: `tally gen` → Kafka → `tally serve` → store.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::kafka::*;
use tally::ingest::generator::{self, GenConfig};

#[test]
fn kafka_end_to_end_generator_to_store() {
    let topic = "cost.compute";
    let KafkaRig { broker, tmp, prices } = KafkaRig::start(topic, 4);
    let data = tmp.path().join("data");
    let mut tally = Tally::start(
        &data,
        &TallyOpts {
            brokers: Some(&broker.addr),
            topics: &[topic],
            group: "tally",
            price_book: Some(&prices),
            extra: &[],
        },
    );
    let cfg = GenConfig {
        brokers: broker.addr.clone(),
        topic: topic.into(),
        rate: 0,
        count: 20_000,
        tenants: 4,
        malformed_share: 0.02,
        duplicate_share: 0.02,
        late_share: 0.02,
        unpriced_share: 0.02,
        seed: 7,
        ..GenConfig::default()
    };
    let report = generator::run(&cfg).expect("generator");
    assert_eq!(report.delivery_errors, 0);
    let malformed: u64 = report.malformed.values().sum();
    assert!(
        malformed > 0 && report.duplicates > 0 && report.late > 0 && report.unpriced > 0,
        "{report:?}"
    );
    assert_eq!(report.sent, report.valid + report.duplicates + malformed);

    wait_stored(&[&tally], topic, &report.end_offsets, Duration::from_secs(120));
    let metrics = tally.metrics();
    assert!(
        metrics.contains(&format!("tally_ingest_dedup_hits_total {}", report.duplicates)),
        "dedup hits should equal the generator's duplicates ({}):\n{metrics}",
        report.duplicates
    );
    assert!(metrics.contains("tally_ingest_unpriced_events_total{reason=\"unknown_sku\"}"));
    // Every self-metric of the ingest issue is exposed, with the counts that must hold.
    let mut expected = vec![
        format!(
            "tally_ingest_events_accepted_total{{source=\"kafka\"}} {}",
            report.valid
        ),
        format!("tally_ingest_dlq_writes_total{{topic=\"{topic}.dlq\"}} {malformed}"),
        "tally_ingest_consumer_lag{topic=\"cost.compute\",partition=\"0\"}".to_string(),
        "tally_ingest_consumer_lag{topic=\"cost.compute\",partition=\"3\"}".to_string(),
        "tally_ingest_freshness_seconds_bucket{le=\"+Inf\"}".to_string(),
        "tally_wal_fsync_seconds_count".to_string(),
        "tally_ingest_partition_pauses_total".to_string(),
    ];
    for (reason, n) in &report.malformed {
        expected.push(format!(
            "tally_ingest_events_rejected_total{{source=\"kafka\",reason=\"{reason}\"}} {n}"
        ));
    }
    for e in &expected {
        assert!(metrics.contains(e.as_str()), "/metrics lacks {e}:\n{metrics}");
    }

    // Every malformed event is in the DLQ, once, with the right reason and its original bytes.
    let dlq = read_topic(
        &broker.addr,
        &format!("{topic}.dlq"),
        malformed as usize,
        Duration::from_secs(60),
    );
    let source = read_topic(&broker.addr, topic, report.sent as usize, Duration::from_secs(60));
    assert_eq!(source.len() as u64, report.sent);
    let by_coord: BTreeMap<(i32, i64), &[u8]> = source
        .iter()
        .map(|m| ((m.partition, m.offset), m.payload.as_slice()))
        .collect();
    let mut got = BTreeSet::new();
    for d in &dlq {
        let h = |k: &str| {
            d.headers
                .get(k)
                .cloned()
                .unwrap_or_else(|| panic!("header {k} missing: {:?}", d.headers))
        };
        assert_eq!(h("tally.source_topic"), topic);
        assert!(!h("tally.reason_text").is_empty());
        let coord: (i32, i64) = (
            h("tally.source_partition").parse().expect("partition"),
            h("tally.source_offset").parse().expect("offset"),
        );
        assert_eq!(
            by_coord.get(&coord).copied(),
            Some(d.payload.as_slice()),
            "DLQ payload must be the original bytes"
        );
        assert!(
            got.insert((coord.0, coord.1, h("tally.reason"))),
            "dead-lettered twice: {coord:?}"
        );
    }
    let want: BTreeSet<(i32, i64, String)> = report.rejected.iter().cloned().collect();
    assert_eq!(
        got, want,
        "DLQ content (partition, offset, reason) must equal the generator's malformed events"
    );

    tally.stop();
    let (totals, positions) = store_totals(&data);
    assert_totals_match(&report, &totals);
    // The store's positions are the next offsets of every partition: everything consumed.
    let mut ends: BTreeMap<String, i64> = BTreeMap::new();
    for m in &source {
        let e = ends.entry(format!("{topic}/{}", m.partition)).or_default();
        *e = (*e).max(m.offset + 1);
    }
    let stored: BTreeMap<String, i64> = positions.into_iter().filter(|(k, _)| k.starts_with(topic)).collect();
    assert_eq!(stored, ends);
}
