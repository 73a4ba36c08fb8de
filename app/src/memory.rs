//! The allocator's settings, applied once at start.
//!
//! glibc serves a large allocation from its own mapping, returned to the
//! system when freed, but raises that threshold (up to 32 MiB) after the
//! first such free. An Argon2 hash allocates a 19 MiB block on a blocking
//! thread: after the first, every later block came from that thread's
//! arena and stayed resident, so a burst of sign-ups took the process from
//! 30 to 350 MiB for good. A fixed 1 MiB threshold keeps such blocks out of
//! the arenas (docs/BENCHMARKS.md, ADR 0015).
//!
//! Below that threshold, glibc keeps what is freed inside its heaps: only
//! a free stretch at the very top goes back. Start allocates and drops
//! some 8 MiB (settings, migrations, the OpenAPI document, one `App` per
//! worker), which stayed resident for the life of the process under the
//! few objects that outlive it. [`release_free_memory`] hands the free pages
//! back (`malloc_trim`), once after start and then now and then, so that
//! a burst of traffic does not keep its high-water mark either.

use std::time::Duration;

use tokio::sync::watch;

/// How long after start the first release runs: the start's transient
/// allocations (the workers' apps, the relays' first rounds) are gone.
const FIRST_RELEASE: Duration = Duration::from_secs(1);

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

/// Returns the allocator's free pages to the system: [`FIRST_RELEASE`]
/// after start, then every `every`, until `stopped`. The call walks every
/// arena under that arena's lock, so it runs on a blocking thread, and
/// rarely.
pub async fn release_free_memory(every: Duration, mut stopped: watch::Receiver<bool>) {
    let first = tokio::time::Instant::now() + FIRST_RELEASE;
    let mut ticks = tokio::time::interval_at(first, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stop = tokio::select! {
            _ = ticks.tick() => false,
            _ = stopped.wait_for(|stop| *stop) => true,
        };
        if stop {
            break;
        }
        // `trim` cannot panic; a failed join would only skip one release.
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `malloc_trim` only returns free memory of glibc's arenas to
    // the system (under each arena's own lock); it touches no live
    // allocation, and its result (whether anything was released) needs no
    // handling.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::watch;

    /// The release task runs (past its first release) and ends when the
    /// process stops, so shutdown does not wait on it.
    #[tokio::test]
    async fn the_release_task_ends_on_stop() {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(super::release_free_memory(
            Duration::from_millis(10),
            stopped,
        ));
        tokio::time::sleep(super::FIRST_RELEASE + Duration::from_millis(50)).await;
        assert!(!task.is_finished(), "it keeps running until stopped");
        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("it stops when told")
            .expect("it does not panic");
    }
}
