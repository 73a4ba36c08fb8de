//! `Shop`: the `shop` binary run as a child process, and free ports for it to listen on.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::fresh_key_path;

/// A `shop` child process, killed when dropped; its stdout is collected.
pub struct Shop {
    child: Child,
    pub port: u16,
    logs: Arc<Mutex<String>>,
}

impl Shop {
    pub fn start(env: &[(&str, &str)]) -> Shop {
        Shop::start_on(free_port(), env)
    }

    /// Starts on a port chosen beforehand (to point another process at it).
    pub fn start_on(port: u16, env: &[(&str, &str)]) -> Shop {
        Shop::run(port, &[], env)
    }

    /// `shop <args>` with `port` as the server's port.
    pub fn run(port: u16, args: &[&str], env: &[(&str, &str)]) -> Shop {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shop"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "APP_CONFIG_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../config"),
            )
            .env("APP__SERVER__HOST", "127.0.0.1")
            .env("APP__SERVER__PORT", port.to_string())
            .env("APP__SERVER__WORKERS", "1")
            .env("APP__LOG__FORMAT", "json")
            .env("APP__DATABASE__EMBEDDED", "false")
            // Keys of its own unless the test shares some: never a file in
            // the working directory.
            .env("APP__AUTH__SIGNING_KEY_FILE", fresh_key_path())
            .env("APP__AUTH__SERVICE_KEY_FILE", fresh_key_path())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        Shop { child, port, logs }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn wait_live(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = crate::helpers::get(self.url("/health/live")).await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "shop on port {} did not come up; logs:\n{}",
            self.port,
            self.logs.lock().unwrap()
        );
    }

    /// Waits up to 30 s for the process to end by itself (a failpoint
    /// aborted it); whether it did.
    pub async fn exited(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Sends SIGTERM and returns at once.
    pub fn signal_term(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: signalling our own child process.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0);
    }

    /// The exit status, once the process has exited.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal_term();
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        // A failing test shows what its process said last.
        if std::thread::panicking() {
            let logs = self.logs.lock().map(|l| l.clone()).unwrap_or_default();
            let lines: Vec<&str> = logs.lines().collect();
            let tail = &lines[lines.len().saturating_sub(100)..];
            eprintln!(
                "last log lines of shop on port {}:\n{}",
                self.port,
                tail.join("\n")
            );
        }
        drop(self.child.kill());
        drop(self.child.wait());
    }
}

/// Runs `command` to its end; it must succeed (else its stderr is shown).
pub fn succeeded(command: &mut Command) -> std::process::Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A port nobody listens on right now.
///
/// A port handed to a child process is free when chosen and bound by the
/// child a moment later. In between, nothing else of this suite may take it:
/// ports come from below the kernel's ephemeral range (32768 and up on
/// Linux), where outgoing connections never land, and each is claimed for
/// the whole run by a file created exclusively, so two test processes never
/// pick the same one. Claims older than an hour are stale.
pub fn free_port() -> u16 {
    const FIRST: u16 = 20_000;
    const COUNT: u16 = 12_000;
    let claims = std::env::temp_dir().join("shop-test-ports");
    std::fs::create_dir_all(&claims).unwrap();
    loop {
        let port = FIRST + (uuid::Uuid::new_v4().as_u128() % u128::from(COUNT)) as u16;
        let claim = claims.join(port.to_string());
        if let Err(e) = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&claim)
        {
            assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
            let stale = std::fs::metadata(&claim)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|at| at.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(3600));
            if stale {
                drop(std::fs::remove_file(&claim));
            }
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
