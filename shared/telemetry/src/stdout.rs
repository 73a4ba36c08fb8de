//! Log lines to standard output, one `write(2)` per line, without the
//! process-wide lock of `std::io::Stdout`.
//!
//! std's `Stdout` is a mutex held across the write system call, so the
//! server's worker threads queued behind each other at every access-log
//! line: a futex wait and a context switch per request at a few tens of
//! thousands of requests a second (docs/BENCHMARKS.md). Here a line of at
//! most `PIPE_BUF` bytes is written whole by one `write`, which the kernel
//! never mixes with another (a pipe guarantees it; a shared file
//! serializes writes on its offset), so such lines take only a shared lock.
//! A longer line may be split by a pipe, so it is written under the
//! exclusive side of that lock, which waits for every line in flight:
//! lines never interleave.
//!
//! Nothing is buffered: a line has left the process when the event returns,
//! so a crash loses none.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd as _;
use std::sync::{OnceLock, PoisonError, RwLock};

/// The largest write a pipe keeps whole (POSIX's minimum, Linux's value).
const PIPE_BUF: usize = 4096;

struct Lines {
    /// Standard output's file description, or `None` if it could not be
    /// duplicated (then `std::io::Stdout` is used, lock and all).
    file: Option<File>,
    /// Shared for a line that fits `PIPE_BUF`, exclusive for a longer one.
    /// It guards no data, so a poisoned lock is still a lock.
    long_line: RwLock<()>,
}

impl Lines {
    fn new(file: Option<File>) -> Lines {
        Lines {
            file,
            long_line: RwLock::new(()),
        }
    }
}

/// The `MakeWriter` of the log layer: a writer per event, each event's
/// line given to it by one `write_all`.
pub(crate) fn line_writer() -> LineWriter<'static> {
    static LINES: OnceLock<Lines> = OnceLock::new();
    LineWriter(LINES.get_or_init(|| {
        Lines::new(
            io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .ok()
                .map(File::from),
        )
    }))
}

/// Writes each `write_all` as one line (see the module's documentation).
pub(crate) struct LineWriter<'a>(&'a Lines);

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let Some(mut file) = self.0.file.as_ref() else {
            return io::stdout().lock().write_all(buf);
        };
        if buf.len() <= PIPE_BUF {
            let _shared = self
                .0
                .long_line
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            file.write_all(buf)
        } else {
            let _exclusive = self
                .0
                .long_line
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            file.write_all(buf)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader};

    use super::*;

    /// Threads writing short lines and lines longer than a pipe keeps whole
    /// at once: every line arrives whole.
    #[test]
    fn lines_never_interleave_on_a_pipe() {
        let (reader, writer) = io::pipe().unwrap();
        let reading = std::thread::spawn(move || {
            BufReader::new(reader)
                .lines()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
        });
        let lines = Lines::new(Some(File::from(std::os::fd::OwnedFd::from(writer))));
        std::thread::scope(|scope| {
            for t in 0..4u8 {
                let lines = &lines;
                scope.spawn(move || {
                    for i in 0..200usize {
                        let len = if i % 4 == 0 { 3 * PIPE_BUF } else { 100 };
                        let mut line = vec![b'a' + t; len];
                        line.push(b'\n');
                        LineWriter(lines).write_all(&line).unwrap();
                    }
                });
            }
        });
        drop(lines); // closes the pipe's write end
        let read = reading.join().unwrap();
        assert_eq!(read.len(), 800);
        for line in read {
            let first = line.as_bytes()[0];
            assert!(
                line.bytes().all(|b| b == first),
                "a line of {} bytes mixes writers",
                line.len()
            );
            assert!(line.len() == 100 || line.len() == 3 * PIPE_BUF);
        }
    }
}
