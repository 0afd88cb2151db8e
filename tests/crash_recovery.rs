//! Crash test: a child process appends batches in a loop (with background flushes and
//! compactions) and is killed with SIGKILL at random points, repeatedly. After every
//! restart each acknowledged batch must be present exactly once, and nothing beyond the
//! durable source position may be present.
//!
//! The child is this same test binary re-executed with `TALLY_CRASH_CHILD` set, so no
//! extra binary is needed.

mod common;

use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tally::index::Matcher;
use tally::model::{LabelLimits, Labels, Money, Sample, SeriesKind, Value};
use tally::store::{SampleValues, SelectRequest, SeriesSource, Store, StoreOptions, WriteBatch};
use tally::wal::FsyncPolicy;

const SOURCE: &str = "writer/0";
const SERIES: u64 = 4;
const STEP_NS: i64 = 60_000_000_000;

fn opts() -> StoreOptions {
    StoreOptions {
        partition_width: Duration::from_secs(3600),
        fsync: FsyncPolicy::EveryBatch,
        head_max_samples: 200,
        compact_min_segments: 2,
        maintenance_interval: Duration::from_millis(20),
        ..StoreOptions::default()
    }
}

fn labels(s: u64) -> Labels {
    Labels::from_pairs(
        [
            ("__name__", "cost".to_string()),
            ("tenant", format!("t{}", s % 2)),
            ("s", s.to_string()),
        ],
        &LabelLimits::default(),
    )
    .unwrap()
}

/// Batch `i` writes one money sample per series at ts `i * STEP`, value depending on (i, s).
fn amount(i: i64, s: u64) -> i64 {
    ((i * 7919 + s as i64 * 104_729) % 100_000 + 1) * 1_000
}

fn batch(i: i64) -> WriteBatch {
    let mut b = WriteBatch::new();
    for s in 0..SERIES {
        b.add(
            labels(s),
            SeriesKind::MONEY,
            vec![Sample {
                ts: i * STEP_NS,
                value: Value::Money(Money::from_nanos(amount(i, s))),
            }],
        );
    }
    b.position(SOURCE, i + 1);
    b
}

/// Child mode: append forever from the durable position, printing each acknowledgement.
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var("TALLY_CRASH_CHILD") else {
        return;
    };
    let store = Store::open(&dir, opts()).expect("child open");
    let mut next = store.source_position(SOURCE).unwrap_or(0);
    let mut out = std::io::stdout().lock();
    loop {
        store.append(&batch(next)).expect("append");
        writeln!(out, "ack {next}").unwrap();
        out.flush().unwrap();
        next += 1;
    }
}

fn verify(dir: &std::path::Path, acked: i64) -> i64 {
    let store = Store::open(
        dir,
        StoreOptions {
            background: false,
            flush_on_close: false,
            ..opts()
        },
    )
    .expect("reopen after crash");
    let durable = store.source_position(SOURCE).unwrap_or(0);
    assert!(
        durable > acked,
        "acknowledged batch {acked} lost: durable position is {durable}"
    );
    let snap = store.snapshot();
    let matchers = [Matcher::equal("__name__", "cost")];
    let mut seen: BTreeMap<u64, Vec<(i64, i64)>> = BTreeMap::new();
    for s in snap
        .select(&SelectRequest {
            tenant: None,
            matchers: &matchers,
            start: i64::MIN,
            end: i64::MAX,
        })
        .unwrap()
    {
        let s = s.unwrap();
        let id: u64 = s.labels.get("s").unwrap().parse().unwrap();
        let SampleValues::Money(v) = s.values else {
            panic!("money series read as float")
        };
        seen.insert(id, s.ts.iter().copied().zip(v).collect());
    }
    for sid in 0..SERIES {
        let got = seen.get(&sid).cloned().unwrap_or_default();
        let want: Vec<(i64, i64)> = (0..durable).map(|i| (i * STEP_NS, amount(i, sid))).collect();
        assert_eq!(
            got.len(),
            want.len(),
            "series {sid}: sample count after restart (durable {durable})"
        );
        assert_eq!(
            got, want,
            "series {sid}: every batch exactly once (a doubled value means a replayed batch)"
        );
    }
    durable
}

#[test]
fn sigkill_at_random_points_loses_and_duplicates_nothing() {
    if std::env::var("TALLY_CRASH_CHILD").is_ok() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7a11);
    let mut last_ack = -1i64;
    for cycle in 0..12 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child_writer", "--nocapture", "--test-threads=1"])
            .env("TALLY_CRASH_CHILD", &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let kill_after = rng.gen_range(20..400);
        let mut acks = 0;
        while acks < kill_after {
            let Some(line) = common::read_lines_until(&mut out, |l| l.starts_with("ack ")) else {
                break;
            };
            last_ack = line[4..].parse().unwrap();
            acks += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(acks > 0, "cycle {cycle}: child acknowledged nothing");
        let durable = verify(&dir, last_ack);
        eprintln!("cycle {cycle}: last ack {last_ack}, durable position {durable}");
    }
}
