//! Prometheus's own PromQL test files (2.42 format, `../shared/testdata/promql/*.test`)
//! run through `tally promql-test` against fresh real stores: every eval must pass.

mod common;

use std::path::PathBuf;
use std::process::Command;

const EXPECTED_EVALS: usize = 456;

#[test]
fn promql_test_files_all_pass_against_the_store() {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/promql"));
    assert!(
        dir.is_dir(),
        "PromQL test data missing: {} must hold Prometheus 2.42's promql/testdata/*.test files",
        dir.display()
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read test data dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.test files in {}", dir.display());
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new(common::tally_bin())
        .arg("promql-test")
        .arg("--tmp-dir")
        .arg(tmp.path())
        .args(&files)
        .output()
        .expect("run tally promql-test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    // Per file and in total: a line `N passed, N failed`; the last one is the total.
    let summaries: Vec<(usize, usize)> = stdout
        .lines()
        .filter_map(|l| {
            let (p, f) = l.split_once(" passed, ")?;
            let f = f.strip_suffix(" failed")?;
            Some((p.parse().ok()?, f.parse().ok()?))
        })
        .collect();
    assert_eq!(
        summaries.len(),
        files.len() + 1,
        "one summary per file plus the total:\n{stdout}\n{stderr}"
    );
    let total = summaries[summaries.len() - 1];
    let per_file = summaries[..files.len()]
        .iter()
        .fold((0, 0), |a, s| (a.0 + s.0, a.1 + s.1));
    assert_eq!(per_file, total, "per-file lines must add up to the total");
    assert_eq!(total, (EXPECTED_EVALS, 0), "conformance:\n{stdout}\n{stderr}");
    assert!(out.status.success(), "exit status {:?}: {stderr}", out.status);
}

#[test]
fn promql_test_reports_failures_and_exits_nonzero() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let f = tmp.path().join("bad.test");
    std::fs::write(
        &f,
        "load 1m\n  m{a=\"1\"} 1 2 3\n\neval instant at 2m m\n  m{a=\"1\"} 3\n\neval instant at 2m m\n  m{a=\"1\"} 4\n",
    )
    .expect("write test file");
    let out = Command::new(common::tally_bin())
        .arg("promql-test")
        .arg("--tmp-dir")
        .arg(tmp.path())
        .arg(&f)
        .output()
        .expect("run tally promql-test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert_eq!(
        stdout.lines().filter(|l| *l == "1 passed, 1 failed").count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("FAIL") && stdout.contains("bad.test:7"), "{stdout}");
}
