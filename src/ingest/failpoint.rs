//! Fault points for tests: `TALLY_FAILPOINT=<name>:<n>` aborts the process the n-th
//! time the named point is reached — no unwinding, no shutdown code, like a SIGKILL at
//! exactly that line ([`hit`]); a point checked with [`fails`] instead reports one failure
//! there (the caller takes its error path). Unset (always, outside tests) either costs one
//! relaxed load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

fn armed() -> Option<&'static (String, u64)> {
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let v = std::env::var("TALLY_FAILPOINT").ok()?;
            let (name, n) = v.rsplit_once(':')?;
            Some((name.to_string(), n.parse().ok()?))
        })
        .as_ref()
}

/// Aborts when this is the armed point's n-th hit.
pub fn hit(name: &str) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    if let Some((armed, n)) = armed() {
        if armed == name && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *n {
            tracing::error!(failpoint = name, "failpoint reached: aborting");
            std::process::abort();
        }
    }
}

/// True on the armed point's n-th hit (the caller then fails as if its I/O had).
pub fn fails(name: &str) -> bool {
    static HITS: AtomicU64 = AtomicU64::new(0);
    match armed() {
        Some((armed, n)) if armed == name => {
            let fire = HITS.fetch_add(1, Ordering::Relaxed) + 1 == *n;
            if fire {
                tracing::error!(failpoint = name, "failpoint reached: failing");
            }
            fire
        }
        _ => false,
    }
}
