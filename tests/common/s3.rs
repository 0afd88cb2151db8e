//! A real S3-protocol server (s3s-fs 0.14.1, installed by scripts/deps/s3s.sh) over a
//! temp folder: buckets are folders, objects are files, so tests can also look at what
//! landed on "disk".

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "test";
pub const SECRET_KEY: &str = "testsecret";

pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    pub root: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

pub fn s3s_bin() -> PathBuf {
    let p = super::kafka::deps_dir().join("bin/s3s-fs");
    assert!(
        p.exists(),
        "{} missing: run scripts/deps/s3s.sh (scripts/test.sh does) or set TALLY_TEST_DEPS",
        p.display()
    );
    p
}

impl S3Server {
    /// Starts a server with one bucket `bucket`.
    pub fn start(bucket: &str) -> S3Server {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::create_dir_all(root.join(bucket)).unwrap();
        let mut s = S3Server {
            child: None,
            port: super::free_port(),
            root,
            _tmp: Some(tmp),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new(s3s_bin())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// object_store settings for this server (what AWS_* env vars would say).
    pub fn config(&self) -> Vec<(String, String)> {
        vec![
            ("aws_endpoint".into(), self.endpoint()),
            ("aws_access_key_id".into(), ACCESS_KEY.into()),
            ("aws_secret_access_key".into(), SECRET_KEY.into()),
            ("aws_region".into(), "us-east-1".into()),
        ]
    }

    /// The same settings as environment variables, for a `tally` child process.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint()),
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }

    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args([sig, &c.id().to_string()]).status();
        }
    }

    /// Kills the server (by PID); `restart` brings it back on the same port and folder.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Object keys (relative to the bucket folder) of every object stored.
    pub fn objects(&self, bucket: &str) -> Vec<String> {
        let base = self.root.join(bucket);
        let mut out = Vec::new();
        walk(&base, &base, &mut out);
        out.sort();
        out
    }
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(base, &p, out);
        } else if let Ok(rel) = p.strip_prefix(base) {
            let name = rel.display().to_string();
            // s3s-fs keeps internal metadata/temp files beside objects.
            if !name.contains(".s3s") && !name.starts_with('.') {
                out.push(name);
            }
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.resume();
        self.stop();
    }
}
