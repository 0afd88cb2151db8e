//! `tally sql "SELECT …"`: against a running server (`--server URL`) or directly on a
//! data directory (`--data-dir DIR`, while no server holds it).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;

use crate::query::sql::{self, QueryResult};
use crate::store::{Store, StoreOptions};

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The statement (SELECT, SHOW TABLES, DESCRIBE costs|samples).
    pub query: String,
    /// Server to query, e.g. http://127.0.0.1:9201
    #[arg(long, value_name = "URL", conflicts_with = "data_dir")]
    pub server: Option<String>,
    /// Query a data directory directly (fails while a server holds it).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Output: table (aligned), csv, json, or arrow (IPC stream, to stdout or --out).
    #[arg(long, default_value = "table", value_parser = ["table", "csv", "json", "arrow"])]
    pub format: String,
    /// Restrict to one tenant (sent as X-Scope-OrgID to a server).
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// Write the result to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Bearer token for a server started with --tenant-tokens (sent as `Authorization: Bearer`).
    #[arg(long, value_name = "TOKEN", env = "TALLY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Request headers that scope a server request: X-Scope-OrgID and the bearer token.
pub fn scope_headers(tenant: Option<&str>, token: Option<&str>) -> Vec<(&'static str, String)> {
    let mut h = vec![];
    if let Some(t) = tenant {
        h.push(("X-Scope-OrgID", t.to_string()));
    }
    if let Some(t) = token {
        h.push(("Authorization", format!("Bearer {t}")));
    }
    h
}

/// Opens a data directory for reading with the CLI (no background work, no flush on close).
pub fn open_local(dir: &Path) -> anyhow::Result<Store> {
    if !dir.exists() {
        bail!("data directory {} does not exist", dir.display());
    }
    Store::open(
        dir,
        StoreOptions {
            background: false,
            flush_on_close: false,
            ..StoreOptions::default()
        },
    )
    .with_context(|| {
        format!(
            "opening data directory {} (if a server is running on it, use --server URL instead)",
            dir.display()
        )
    })
}

pub fn run(a: SqlArgs) -> anyhow::Result<()> {
    let bytes: Vec<u8> = match (&a.server, &a.data_dir) {
        (Some(url), _) => {
            let accept = match a.format.as_str() {
                "csv" => "text/csv",
                "arrow" => crate::api::sql::ARROW_STREAM,
                _ => "application/json",
            };
            let mut headers = vec![
                ("Accept", accept.to_string()),
                ("Content-Type", "text/plain".to_string()),
            ];
            headers.extend(scope_headers(a.tenant.as_deref(), a.token.as_deref()));
            let resp = http_request(url, "POST", "/api/v1/sql", &headers, a.query.as_bytes(), &mut |_| {})?;
            if resp.status != 200 {
                bail!("server answered {}: {}", resp.status, error_text(&resp.body));
            }
            if a.format == "table" {
                let v: serde_json::Value = serde_json::from_slice(&resp.body).context("reading the server's JSON")?;
                let r = QueryResult::from_json(&v).ok_or_else(|| anyhow!("unexpected JSON from the server"))?;
                r.to_table().into_bytes()
            } else {
                resp.body
            }
        }
        (None, Some(dir)) => {
            let store = open_local(dir)?;
            let opts = crate::api::sql::query_options(&store, a.tenant.clone(), sql::Limits::default());
            let r = sql::execute(&store.snapshot(), &a.query, &opts)?;
            match a.format.as_str() {
                "csv" => r.to_csv().into_bytes(),
                "json" => {
                    let mut s = serde_json::to_string_pretty(&r.to_json())?;
                    s.push('\n');
                    s.into_bytes()
                }
                "arrow" => r.to_arrow_stream()?,
                _ => r.to_table().into_bytes(),
            }
        }
        (None, None) => bail!("give --server URL (a running tally) or --data-dir DIR"),
    };
    match &a.out {
        Some(p) => std::fs::write(p, &bytes).with_context(|| format!("writing {}", p.display()))?,
        None => std::io::stdout().write_all(&bytes)?,
    }
    Ok(())
}

/// The `error` field of a JSON error body, else the body as text.
pub fn error_text(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).to_string())
}

pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A minimal HTTP/1.1 client (one request, `Connection: close`) for talking to `tally serve`.
/// `progress(bytes_received)` is called as the body arrives.
pub fn http_request(
    server: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
    progress: &mut dyn FnMut(u64),
) -> anyhow::Result<HttpResponse> {
    let hostport = server
        .trim_end_matches('/')
        .strip_prefix("http://")
        .unwrap_or(server.trim_end_matches('/'));
    if hostport.starts_with("https://") {
        bail!("https is not supported; use http://HOST:PORT");
    }
    let mut s = TcpStream::connect(hostport).with_context(|| format!("connecting to tally at {server}"))?;
    s.set_read_timeout(Some(Duration::from_secs(600)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf).context("reading the server's answer")?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        progress(raw.len() as u64);
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP answer from {server}"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("malformed HTTP status line from {server}"))?;
    let mut body = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body).ok_or_else(|| anyhow!("malformed chunked body from {server}"))?;
    }
    Ok(HttpResponse { status, body })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let len = usize::from_str_radix(std::str::from_utf8(&b[..eol]).ok()?.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if len == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..len)?);
        b = b.get(len + 2..)?;
    }
}
