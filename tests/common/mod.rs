//! Shared helpers for integration tests: free ports, a tiny HTTP client over std
//! TcpStream, and a `tally serve` child process that is always stopped by PID.
#![allow(dead_code)]

pub mod costgen;
pub mod kafka;
pub mod prometheus;
pub mod s3;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// Minimal HTTP/1.1 request (Connection: close) — enough for tests, no extra crates.
pub fn http(method: &str, addr: &str, path: &str, body: Option<(&str, &[u8])>) -> std::io::Result<HttpResponse> {
    http_with_headers(method, addr, path, &[], body)
}

/// [`http`] with extra request headers (e.g. `("X-Scope-OrgID", "acme")`).
pub fn http_with_headers(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> std::io::Result<HttpResponse> {
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if let Some((ct, _)) = body {
        all.push(("Content-Type", ct));
    }
    let (status, raw) = http_raw(method, addr, path, &all, body.map_or(&[][..], |(_, b)| b))?;
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&raw).into_owned(),
    })
}

pub fn http_get(addr: &str, path: &str) -> std::io::Result<HttpResponse> {
    http("GET", addr, path, None)
}

pub fn tally_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tally"))
}

/// A running `tally serve`; killed on drop if still alive.
pub struct TallyServer {
    pub child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
    pub stderr_log: PathBuf,
}

impl TallyServer {
    /// Starts `tally serve --data-dir DIR --listen 127.0.0.1:<free>` plus `extra` args and
    /// waits until `/readyz` answers 200.
    pub fn start(data_dir: &Path, extra: &[&str]) -> TallyServer {
        Self::start_with_env(data_dir, extra, &[])
    }

    /// [`TallyServer::start`] with extra environment variables (e.g. AWS_* for S3).
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(String, String)]) -> TallyServer {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let stderr_log = data_dir.with_extension(format!("{port}.log"));
        let log = std::fs::File::create(&stderr_log).expect("create server log");
        let child = Command::new(tally_bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(&addr)
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tally serve");
        let mut srv = TallyServer {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
            stderr_log,
        };
        srv.wait_ready(Duration::from_secs(60));
        srv
    }

    pub fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tally serve exited early with {status}: {}", self.log());
            }
            if http_get(&self.addr, "/readyz").is_ok_and(|r| r.status == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tally serve not ready in time: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit code.
    pub fn terminate(mut self) -> i32 {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait for tally serve");
        status.code().unwrap_or(-1)
    }

    pub fn sigkill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TallyServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads lines from a child's stdout until `pred` is satisfied or the stream ends.
pub fn read_lines_until(r: &mut BufReader<impl Read>, mut pred: impl FnMut(&str) -> bool) -> Option<String> {
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {
                if pred(line.trim_end()) {
                    return Some(line.trim_end().to_string());
                }
            }
        }
    }
}

/// Percent-encodes a query-string component (RFC 3986 unreserved characters kept).
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `k1=v1&k2=v2` with every key and value encoded.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A response body parsed as JSON (panics with the body when it is not JSON).
pub fn json(r: &HttpResponse) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): status {} body {:?}", r.status, r.body))
}

/// Label `(name, value)` pairs.
pub type LabelPairs = Vec<(String, String)>;
/// `(timestamp, value)` samples.
pub type Points = Vec<(i64, f64)>;

/// Writes float series (labels as pairs, samples as (ns, value)) into a fresh store in
/// `dir` and closes it, ready for `TallyServer::start`.
pub fn load_store(dir: &Path, series: &[(LabelPairs, Points)]) {
    use tally::model::{LabelLimits, Labels, Sample, SeriesKind, Value};
    use tally::store::{Store, StoreOptions, WriteBatch};
    let store = Store::open(
        dir,
        StoreOptions {
            background: false,
            fsync: tally::wal::FsyncPolicy::Interval(Duration::from_secs(60)),
            ..StoreOptions::default()
        },
    )
    .expect("open store");
    let limits = LabelLimits::default();
    for chunk in series.chunks(500) {
        let mut b = WriteBatch::new();
        for (labels, samples) in chunk {
            let l = Labels::from_pairs(labels.iter().map(|(k, v)| (k.clone(), v.clone())), &limits).expect("labels");
            let s = samples
                .iter()
                .map(|&(ts, v)| Sample {
                    ts,
                    value: Value::Float(v),
                })
                .collect();
            b.add(l, SeriesKind::GAUGE, s);
        }
        store.append(&b).expect("append");
    }
    store.close().expect("close store");
}

/// `(name, value)` label pairs from string slices.
pub fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// An HTTP/1.1 request with extra headers; returns the status and the raw body bytes.
pub fn http_raw(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut body = raw.get(split + 4..).unwrap_or(&[]).to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut b: &[u8] = &body;
        while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
            let n = std::str::from_utf8(&b[..eol])
                .ok()
                .and_then(|l| usize::from_str_radix(l.trim(), 16).ok());
            let Some(n) = n.filter(|n| *n > 0) else { break };
            b = &b[eol + 2..];
            out.extend_from_slice(&b[..n.min(b.len())]);
            b = b.get(n + 2..).unwrap_or(&[]);
        }
        body = out;
    }
    Ok((status, body))
}

/// The test venv's python (`scripts/test.sh` installs duckdb and pyarrow there).
pub fn venv_python() -> PathBuf {
    let deps = std::env::var("TALLY_TEST_DEPS").unwrap_or_else(|_| {
        panic!("TALLY_TEST_DEPS is not set: run the tests with scripts/test.sh (it installs duckdb + pyarrow)")
    });
    let py = PathBuf::from(deps).join("venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/test.sh to install the test dependencies (duckdb, pyarrow)",
        py.display()
    );
    py
}
