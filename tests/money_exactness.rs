//! Exactness: summing money series over millions of samples equals the exact decimal sum.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use tally::index::Matcher;
use tally::model::{LabelLimits, Labels, Money, MoneySum, Sample, SeriesKind, Value};
use tally::store::{SampleValues, SelectRequest, SeriesSource, Store, StoreOptions, WriteBatch};
use tally::wal::FsyncPolicy;

#[test]
fn money_sums_are_exact_over_millions_of_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(
        tmp.path(),
        StoreOptions {
            fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
            background: false,
            partition_width: Duration::from_secs(6 * 3600),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut expected = MoneySum::default();
    let mut expected_text_sum = MoneySum::default();
    let series = 200;
    let per_series = 12_000; // 2.4M samples
    for chunk in 0..4 {
        let mut b = WriteBatch::new();
        for s in 0..series {
            let labels = Labels::from_pairs(
                [
                    ("__name__", "cost".to_string()),
                    ("tenant", format!("t{}", s % 7)),
                    ("sku", format!("sku{s}")),
                ],
                &LabelLimits::default(),
            )
            .unwrap();
            let n = per_series / 4;
            let mut samples = Vec::with_capacity(n);
            for k in 0..n {
                // 6-decimal costs, as a price book produces; parsed from text like an event would be.
                let micros: i64 = rng.gen_range(1..5_000_000);
                let text = format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
                let m: Money = text.parse().unwrap();
                expected.add(m);
                expected_text_sum.add(Money::from_nanos(micros * 1000));
                let ts = ((chunk * n + k) as i64) * 15_000_000_000;
                samples.push(Sample {
                    ts,
                    value: Value::Money(m),
                });
            }
            b.add(labels, SeriesKind::MONEY, samples);
        }
        store.append(&b).unwrap();
        if chunk % 2 == 1 {
            store.flush().unwrap();
        }
    }
    store.compact_all().unwrap();
    assert_eq!(expected, expected_text_sum);
    let snap = store.snapshot();
    let m = [Matcher::equal("__name__", "cost")];
    let mut got = MoneySum::default();
    let mut float_sum = 0.0f64;
    let mut n = 0usize;
    for s in snap
        .select(&SelectRequest {
            tenant: None,
            matchers: &m,
            start: i64::MIN,
            end: i64::MAX,
        })
        .unwrap()
    {
        let s = s.unwrap();
        let SampleValues::Money(v) = &s.values else {
            panic!("money read back as float")
        };
        for &x in v {
            got.add(Money::from_nanos(x));
            float_sum += x as f64 / 1e9;
        }
        n += v.len();
    }
    assert_eq!(n, series * per_series);
    assert_eq!(got, expected, "exact decimal total");
    eprintln!("exact total {got}, naive f64 total {float_sum:.9}");
}
