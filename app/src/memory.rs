//! The allocator's settings, applied once at start.
//!
//! glibc serves a large allocation from its own mapping, returned to the
//! system when freed, but raises that threshold (up to 32 MiB) after the
//! first such free. An Argon2 hash allocates a 19 MiB block on a blocking
//! thread: after the first, every later block came from that thread's
//! arena and stayed resident, so a burst of sign-ups took the process from
//! 30 to 350 MiB for good. A fixed 1 MiB threshold keeps such blocks out of
//! the arenas (docs/BENCHMARKS.md, ADR 0015).

/// Fixes glibc's mmap threshold at 1 MiB. No-op elsewhere.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `mallopt` only changes glibc's allocation thresholds; it is
    // called once, first thing in `main`, and its result needs no handling
    // (on failure the default behaviour stays).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
