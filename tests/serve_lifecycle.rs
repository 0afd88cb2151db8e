//! `tally serve` as a user runs it: starts on a data directory, answers /healthz and
//! /metrics, refuses a second server on the same directory, reads a TOML config, rejects
//! bad flags clearly, and on SIGTERM flushes the head into segments and exits 0.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{http_get, tally_bin, TallyServer};
use tally::model::{LabelLimits, Labels, Sample, SeriesKind, Value};
use tally::store::{Store, StoreOptions, WriteBatch};

#[test]
fn serve_health_metrics_lock_and_clean_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Leave 100 samples in the WAL only (no flush), as after a crash.
    {
        let store = Store::open(
            &data,
            StoreOptions {
                flush_on_close: false,
                background: false,
                ..Default::default()
            },
        )
        .unwrap();
        let l = Labels::from_pairs(
            [("__name__", "cpu_seconds"), ("tenant", "acme")],
            &LabelLimits::default(),
        )
        .unwrap();
        let mut b = WriteBatch::new();
        b.add(
            l,
            SeriesKind::GAUGE,
            (0..100)
                .map(|i| Sample {
                    ts: i * 1_000_000_000,
                    value: Value::Float(i as f64),
                })
                .collect(),
        );
        store.append(&b).unwrap();
        store.close().unwrap();
    }
    let srv = TallyServer::start(&data, &[]);
    let h = http_get(&srv.addr, "/healthz").unwrap();
    assert_eq!(h.status, 200);
    assert!(h.body.contains("\"status\":\"ok\""), "{}", h.body);
    let m = http_get(&srv.addr, "/metrics").unwrap();
    assert_eq!(m.status, 200);
    assert!(
        m.body.contains("# TYPE tally_wal_fsync_seconds histogram"),
        "{}",
        m.body
    );
    assert!(
        m.body.contains("tally_series 1\n"),
        "replayed series visible in metrics: {}",
        m.body
    );

    // A second server (or CLI) on the same directory gets a clear error.
    let second = Command::new(tally_bin())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", common::free_port()),
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("locked by another tally process"), "{err}");

    assert_eq!(srv.terminate(), 0, "SIGTERM exits cleanly");
    // Clean shutdown flushed the head: the data is in a segment and the WAL is checkpointed.
    let manifest = std::fs::read_to_string(data.join("MANIFEST")).unwrap();
    assert!(manifest.contains("\"samples\": 100"), "{manifest}");
    let store = Store::open(
        &data,
        StoreOptions {
            background: false,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(store.stats().segment_samples, 100);
    assert_eq!(store.stats().head_samples, 0);
}

#[test]
fn config_file_supplies_settings_and_flags_win() {
    let tmp = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let cfg = tmp.path().join("tally.toml");
    let data = tmp.path().join("from-config");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:{port}\"\nretention = \"400d\"\nfsync = \"interval\"\n",
            data
        ),
    )
    .unwrap();
    let mut child = Command::new(tally_bin())
        .args(["serve", "--config"])
        .arg(&cfg)
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while http_get(&addr, "/healthz").is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "server from config did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(data.join("MANIFEST").exists(), "data_dir from the config file is used");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn bad_settings_are_rejected_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (vec!["--retention", "forever"], "invalid duration for --retention"),
        (vec!["--fsync", "sometimes"], "invalid --fsync"),
        (vec!["--listen", "nowhere"], "invalid --listen address"),
    ] {
        let out = Command::new(tally_bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(tmp.path())
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "retension = \"1d\"\n").unwrap();
    let out = Command::new(tally_bin())
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field `retension`"),
        "typo in config must be reported"
    );
}
