//! A real Prometheus (Debian's 2.42) for side-by-side tests and benches: tool lookup,
//! OpenMetrics export, `promtool` backfill, and a server stopped by PID.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, http_get};

/// Series as label pairs with (timestamp, value) samples.
pub type Data = Vec<(Vec<(String, String)>, Vec<(i64, f64)>)>;

fn find_tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(d) = std::env::var("TALLY_TEST_DEPS") {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(p) = std::env::var("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// `prometheus` and `promtool`, or a failing test that says how to get them.
pub fn prometheus_tools() -> (PathBuf, PathBuf) {
    match (find_tool("prometheus"), find_tool("promtool")) {
        (Some(p), Some(t)) => (p, t),
        _ => panic!(
            "prometheus/promtool not found: run the test suite with scripts/test.sh \
             (it installs Debian's prometheus 2.42 via scripts/deps/prometheus.sh)"
        ),
    }
}

/// A Prometheus server on a free port over a TSDB directory; killed by PID on drop.
pub struct Prometheus {
    pub child: Child,
    pub addr: String,
}

impl Prometheus {
    pub fn start(bin: &Path, work: &Path, tsdb: &Path) -> Prometheus {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = work.join("prometheus.yml");
        std::fs::write(&cfg, "global:\n  scrape_interval: 15s\nscrape_configs: []\n").expect("write prometheus.yml");
        let log = std::fs::File::create(work.join("prometheus.log")).expect("prometheus log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--storage.tsdb.retention.time=3650d")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let mut p = Prometheus { child, addr };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(st)) = p.child.try_wait() {
                let log = std::fs::read_to_string(work.join("prometheus.log")).unwrap_or_default();
                panic!("prometheus exited early ({st}): {log}");
            }
            if http_get(&p.addr, "/-/ready").is_ok_and(|r| r.status == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "prometheus not ready in 120s");
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// OpenMetrics text for `promtool tsdb create-blocks-from openmetrics` (seconds).
pub fn write_openmetrics(path: &Path, data: &Data) {
    use std::io::Write;
    let f = std::fs::File::create(path).expect("create openmetrics file");
    let mut w = std::io::BufWriter::new(f);
    for (labels, pts) in data {
        let name = labels
            .iter()
            .find(|(k, _)| k == "__name__")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let ls: Vec<String> = labels
            .iter()
            .filter(|(k, _)| k != "__name__")
            .map(|(k, v)| {
                format!(
                    "{k}=\"{}\"",
                    v.replace('\\', "\\\\").replace('\n', "\\n").replace('"', "\\\"")
                )
            })
            .collect();
        let head = format!("{name}{{{}}}", ls.join(","));
        for (t, v) in pts {
            writeln!(w, "{head} {v} {t}").expect("write");
        }
    }
    writeln!(w, "# EOF").expect("write");
    w.flush().expect("flush");
}

/// `promtool tsdb create-blocks-from openmetrics [extra...] OM TSDB`.
pub fn promtool_create_blocks(promtool: &Path, om: &Path, tsdb: &Path, extra: &[&str]) {
    let out = Command::new(promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .args(extra)
        .arg(om)
        .arg(tsdb)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
