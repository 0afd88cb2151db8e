//! Damaged files: flipped bytes and truncation in a segment, the manifest and the WAL
//! give a clear error naming the file (or a trimmed WAL tail), and other partitions
//! stay readable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tally::index::Matcher;
use tally::model::{LabelLimits, Labels, Sample, SeriesKind, Value};
use tally::store::{ReadError, SelectRequest, SeriesSource, Store, StoreError, StoreOptions, WriteBatch};

const HOUR: i64 = 3_600_000_000_000;

fn opts() -> StoreOptions {
    StoreOptions {
        partition_width: Duration::from_secs(3600),
        background: false,
        flush_on_close: false,
        ..StoreOptions::default()
    }
}

fn labels(i: usize) -> Labels {
    Labels::from_pairs(
        [
            ("__name__", "usage".to_string()),
            ("tenant", "acme".to_string()),
            ("i", i.to_string()),
        ],
        &LabelLimits::default(),
    )
    .unwrap()
}

/// Three partitions (hours 0, 1, 2) of 10 series × 240 samples each, flushed to segments.
fn build(dir: &Path) {
    let store = Store::open(dir, opts()).unwrap();
    for hour in 0..3 {
        let mut b = WriteBatch::new();
        for i in 0..10 {
            let samples = (0..240)
                .map(|k| Sample {
                    ts: hour * HOUR + k * 15_000_000_000,
                    value: Value::Float((k * i as i64) as f64),
                })
                .collect();
            b.add(labels(i), SeriesKind::GAUGE, samples);
        }
        store.append(&b).unwrap();
        store.flush().unwrap();
    }
    store.close().unwrap();
}

fn count(store: &Store, start: i64, end: i64) -> Result<usize, ReadError> {
    let snap = store.snapshot();
    let m = [Matcher::equal("__name__", "usage")];
    let mut n = 0;
    for s in snap.select(&SelectRequest {
        tenant: Some("acme"),
        matchers: &m,
        start,
        end,
    })? {
        n += s?.ts.len();
    }
    Ok(n)
}

fn segment_of_hour(dir: &Path, hour: i64) -> PathBuf {
    let p = dir.join("segments").join(format!("p{}", hour * HOUR));
    let f = std::fs::read_dir(&p).unwrap().next().unwrap().unwrap();
    f.path()
}

fn damage(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b);
    std::fs::write(path, b).unwrap();
}

#[test]
fn flipped_block_byte_fails_only_its_partition() {
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path());
    let victim = segment_of_hour(tmp.path(), 1);
    damage(&victim, |b| b[40] ^= 0xff); // inside the first block's bytes
    let store = Store::open(tmp.path(), opts()).unwrap();
    let err = count(&store, HOUR, 2 * HOUR - 1).unwrap_err();
    assert!(err.to_string().contains(&victim.display().to_string()), "{err}");
    assert_eq!(count(&store, 0, HOUR - 1).unwrap(), 2400);
    assert_eq!(count(&store, 2 * HOUR, 3 * HOUR - 1).unwrap(), 2400);
}

#[test]
fn damaged_footer_or_truncation_quarantines_the_segment() {
    for how in ["flip-footer", "truncate"] {
        let tmp = tempfile::tempdir().unwrap();
        build(tmp.path());
        let victim = segment_of_hour(tmp.path(), 0);
        damage(&victim, |b| match how {
            "flip-footer" => {
                let n = b.len();
                b[n - 20] ^= 0x01;
            }
            _ => b.truncate(b.len() / 2),
        });
        let store = Store::open(tmp.path(), opts()).expect("store opens despite one bad segment");
        assert_eq!(store.stats().quarantined_segments, 1);
        let err = count(&store, 0, 3 * HOUR).unwrap_err();
        assert!(err.to_string().contains(&victim.display().to_string()), "{how}: {err}");
        assert_eq!(
            count(&store, HOUR, 3 * HOUR - 1).unwrap(),
            4800,
            "{how}: other partitions readable"
        );
    }
}

#[test]
fn damaged_manifest_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path());
    let manifest = tmp.path().join("MANIFEST");
    damage(&manifest, |b| b[10] ^= 0x20);
    let err = Store::open(tmp.path(), opts())
        .err()
        .expect("corrupt manifest must not open");
    assert!(matches!(err, StoreError::CorruptManifest { .. }), "{err}");
    assert!(err.to_string().contains("MANIFEST"), "{err}");
    damage(&manifest, |b| {
        b[10] ^= 0x20;
        let n = b.len();
        b.truncate(n - 5);
    });
    let err = Store::open(tmp.path(), opts())
        .err()
        .expect("truncated manifest must not open");
    assert!(err.to_string().contains("MANIFEST"), "{err}");
}

#[test]
fn torn_or_corrupt_wal_tail_is_trimmed_and_earlier_batches_survive() {
    for how in ["truncate", "flip"] {
        let tmp = tempfile::tempdir().unwrap();
        {
            let store = Store::open(tmp.path(), opts()).unwrap();
            for k in 0..5 {
                let mut b = WriteBatch::new();
                b.add(
                    labels(0),
                    SeriesKind::GAUGE,
                    vec![Sample {
                        ts: k,
                        value: Value::Float(k as f64),
                    }],
                );
                store.append(&b).unwrap();
            }
            store.close().unwrap(); // no flush on close: everything stays in the WAL
        }
        let wal = std::fs::read_dir(tmp.path().join("wal"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .max()
            .unwrap();
        damage(&wal, |b| {
            let n = b.len();
            match how {
                "truncate" => b.truncate(n - 3),
                _ => b[n - 2] ^= 0x10,
            }
        });
        let store = Store::open(tmp.path(), opts()).unwrap();
        assert_eq!(
            count(&store, 0, 10).unwrap(),
            4,
            "{how}: the four intact batches survive"
        );
        assert!(
            store.metrics().wal_trimmed_bytes.get() > 0,
            "{how}: trimmed bytes are counted"
        );
    }
}

#[test]
fn second_opener_gets_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let _first = Store::open(tmp.path(), opts()).unwrap();
    let err = Store::open(tmp.path(), opts()).err().expect("second open must fail");
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("locked by another tally process"), "{err}");
}
