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
//!
//! Start also runs code that never runs again (settings, migrations, the
//! modules' wiring), and the kernel maps the binary's code around every
//! page it runs (fault-around, 64 KiB at a time): some 19 of the 22 MiB of
//! code were mapped, most of the idle process's RSS. Once, after start,
//! [`release_code_pages`] unmaps the binary's code; it stays in the page
//! cache, and what runs again is mapped again at its next call (ADR 0015).

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
    let mut code_released = false;
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
        if !code_released {
            code_released = true;
            match tokio::task::spawn_blocking(release_code_pages).await {
                Ok(Ok(bytes)) => tracing::debug!(bytes, "code pages of start released"),
                Ok(Err(e)) => tracing::debug!(error = %e, "code pages not released"),
                Err(_) => {}
            }
        }
    }
}

/// Unmaps this process's view of the binary's code (its executable
/// mapping); answers how many bytes were released.
///
/// Safe for the process: the mapping is private, read-only and backed by
/// the file; the kernel does the same to any process's code under memory
/// pressure, and the next instruction on a released page maps it again
/// from the page cache. A mapping that holds any private page is left
/// alone: its pages are not all the file's (a breakpoint set by a debugger
/// or a uprobe from bpftrace or `perf probe` is written into a private copy
/// of its page, and so is a relocation into code), and a release would
/// drop them. It runs once, shortly after start.
///
/// # Errors
/// `/proc/self` unreadable, no executable mapping of the binary found (the
/// path changed: a replaced binary shows as "(deleted)" in both places, so
/// it still matches), only mappings holding private pages, or `madvise`
/// refused (a locked mapping).
pub fn release_code_pages() -> std::io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        let exe = std::fs::read_link("/proc/self/exe")?;
        let smaps = std::fs::read_to_string("/proc/self/smaps")?;
        let code = executable_mappings(&smaps, &exe.to_string_lossy());
        if code.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no executable mapping of the binary",
            ));
        }
        let mut released = 0;
        for mapping in code.iter().filter(|m| m.private_kib == 0) {
            #[allow(unsafe_code)]
            // SAFETY: [start, end) is a whole mapping of this process, as
            // the kernel lists it: the binary's private, read-only,
            // file-backed code with no private page, so every page is the
            // file's. `MADV_DONTNEED` drops them from this process only, to
            // be mapped again from the file on next use. No Rust object
            // lives in it.
            let refused = unsafe {
                libc::madvise(
                    mapping.start as *mut libc::c_void,
                    mapping.end - mapping.start,
                    libc::MADV_DONTNEED,
                )
            } != 0;
            if refused {
                return Err(std::io::Error::last_os_error());
            }
            released += mapping.end - mapping.start;
        }
        if released == 0 {
            return Err(std::io::Error::other(
                "the binary's code holds private pages (breakpoints or relocations); left mapped",
            ));
        }
        Ok(released)
    }
    #[cfg(not(target_os = "linux"))]
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "only on Linux",
    ))
}

/// An executable mapping of the binary, from `/proc/self/smaps`.
#[derive(Debug, PartialEq)]
struct Mapping {
    start: usize,
    end: usize,
    /// Pages of it that are the process's own copies, not the file's (KiB).
    private_kib: u64,
}

/// The `r-xp` mappings of `exe` in `smaps` (a header line per mapping,
/// "start-end perms offset dev inode   path", then "Key: value kB" lines).
fn executable_mappings(smaps: &str, exe: &str) -> Vec<Mapping> {
    let mut found = Vec::new();
    let mut current: Option<Mapping> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            found.extend(current.take());
            if fields.next() == Some("r-xp") && line.ends_with(exe) && end > start {
                current = Some(Mapping {
                    start,
                    end,
                    private_kib: 0,
                });
            }
        } else if first == "Anonymous:"
            && let Some(mapping) = current.as_mut()
        {
            // Unreadable counts as private: better left mapped.
            mapping.private_kib = fields.next().and_then(|v| v.parse().ok()).unwrap_or(1);
        }
    }
    found.extend(current);
    found
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

    /// The binary's executable mapping is found and released whole, and
    /// the process runs on (its code mapped again from the file). What it
    /// saves is a benchmark's figure (`scripts/bench/startup`).
    #[cfg(target_os = "linux")]
    #[test]
    fn code_pages_are_released_and_run_again() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = exe.to_string_lossy();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let code: usize = maps
            .lines()
            .filter(|l| l.contains(" r-xp ") && l.ends_with(exe.as_ref()))
            .map(|l| {
                let (start, end) = l
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .split_once('-')
                    .unwrap();
                usize::from_str_radix(end, 16).unwrap() - usize::from_str_radix(start, 16).unwrap()
            })
            .sum();
        assert!(code > 0, "the test binary has code: {maps}");
        for _ in 0..2 {
            let released = super::release_code_pages().expect("the binary's code is found");
            assert_eq!(released, code, "the whole executable mapping");
        }
    }

    /// Only the binary's own `r-xp` mappings count, with their private
    /// pages; other files' code, data and anonymous mappings do not.
    #[test]
    fn executable_mappings_are_read_from_smaps() {
        let smaps = "\
55d0e5a00000-55d0e5b00000 r--p 00000000 fe:00 42   /srv/shop
Rss:                 100 kB
Anonymous:             0 kB
55d0e5b00000-55d0e6b00000 r-xp 00100000 fe:00 42   /srv/shop
Rss:               18000 kB
Anonymous:             0 kB
55d0e6b00000-55d0e6c00000 r-xp 01100000 fe:00 42   /srv/shop
Rss:                  64 kB
Anonymous:             4 kB
55d0e6c00000-55d0e6d00000 rw-p 01200000 fe:00 42   /srv/shop
Anonymous:            12 kB
7f0000000000-7f0000100000 r-xp 00000000 fe:00 77   /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f0000200000-7f0000300000 r-xp 00000000 00:00 0
Anonymous:             0 kB
";
        assert_eq!(
            super::executable_mappings(smaps, "/srv/shop"),
            vec![
                super::Mapping {
                    start: 0x55d0_e5b0_0000,
                    end: 0x55d0_e6b0_0000,
                    private_kib: 0
                },
                super::Mapping {
                    start: 0x55d0_e6b0_0000,
                    end: 0x55d0_e6c0_0000,
                    private_kib: 4
                },
            ]
        );
    }

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
