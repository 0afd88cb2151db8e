//! CPU hints for hot loops over data too large for the caches.

/// Asks the CPU to start loading the cache line at `p`, so a loop can overlap the cache
/// misses of the next items with work on the current one. A hint only: it never faults
/// whatever `p` points at, and it is a no-op off x86_64.
#[inline]
pub fn prefetch_read(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` does not dereference `p` in the language sense and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
