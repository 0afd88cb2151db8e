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

/// True when `name` is the armed point and this is its n-th hit (`hits` counts them).
fn nth_hit(name: &str, hits: &AtomicU64) -> bool {
    matches!(armed(), Some((armed, n)) if armed == name && hits.fetch_add(1, Ordering::Relaxed) + 1 == *n)
}

/// Aborts when this is the armed point's n-th hit.
pub fn hit(name: &str) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    if nth_hit(name, &HITS) {
        tracing::error!(failpoint = name, "failpoint reached: aborting");
        std::process::abort();
    }
}

/// True on the armed point's n-th hit (the caller then fails as if its I/O had).
pub fn fails(name: &str) -> bool {
    static HITS: AtomicU64 = AtomicU64::new(0);
    let fire = nth_hit(name, &HITS);
    if fire {
        tracing::error!(failpoint = name, "failpoint reached: failing");
    }
    fire
}
