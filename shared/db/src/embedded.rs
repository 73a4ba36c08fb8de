//! A private PostgreSQL server started from the machine's own binaries.
//!
//! Used when no database URL is configured in development (`cargo run`) and
//! by the test harness when `DATABASE_URL` is not set. It finds `initdb` and
//! `pg_ctl` (`$PG_BINDIR`, `pg_config --bindir`, `PATH`, the usual Debian,
//! RHEL and Homebrew places), creates a cluster in a data directory on first
//! use, starts it on a free loopback port (TCP only, password auth) and stops
//! it again if this process started it. PostgreSQL refuses to run as root, so
//! as root the server runs as the `postgres` system user through `runuser`.
//! See docs/adr/0004-embedded-postgres.md.

use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod bindir;

pub use bindir::find_bindir;

/// Why the embedded server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No PostgreSQL server binaries on this machine.
    #[error(
        "no PostgreSQL server binaries found (looked in $PG_BINDIR, `pg_config --bindir`, PATH, \
         /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin and Homebrew): install PostgreSQL \
         (Debian/Ubuntu: `apt-get install postgresql`, macOS: `brew install postgresql@16`) \
         or set DATABASE_URL to a server you have"
    )]
    NoBinaries,
    /// Running as root without a `postgres` user to run the server as.
    #[error(
        "running as root, but PostgreSQL refuses root and there is no `postgres` user to run it as: \
         run as a normal user or set DATABASE_URL"
    )]
    NoServerUser,
    /// A command failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// What was attempted.
        what: String,
        /// What the command printed (stderr, else stdout).
        detail: String,
    },
    /// A file-system step failed.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// What starting it failed with.
        source: std::io::Error,
    },
}

/// How to run the embedded server.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Where the cluster lives; created on first start.
    pub data_dir: PathBuf,
    /// `false` turns fsync off: only for throwaway test clusters.
    pub durable: bool,
    /// A fixed port (tests that restart the server); `None`: a free one.
    pub port: Option<u16>,
}

/// A running embedded server.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bindir: PathBuf,
    data_dir: PathBuf,
    run_as: Option<&'static str>,
    port: u16,
    password: String,
    started_here: bool,
}

impl EmbeddedPostgres {
    /// Starts the server (initialising the cluster first if needed), or
    /// attaches to it if it already runs. Blocking: call from
    /// `spawn_blocking` in async code.
    ///
    /// # Errors
    /// See [`EmbeddedError`]; every message says what to do.
    pub fn start(options: &EmbeddedOptions) -> Result<EmbeddedPostgres, EmbeddedError> {
        let bindir = find_bindir().ok_or(EmbeddedError::NoBinaries)?;
        let run_as = if is_root() {
            if !user_exists("postgres") {
                return Err(EmbeddedError::NoServerUser);
            }
            Some("postgres")
        } else {
            None
        };
        let data_dir = absolute(&options.data_dir)?;
        let password_file = data_dir.with_extension("password");
        let mut server = EmbeddedPostgres {
            bindir,
            data_dir,
            run_as,
            port: 0,
            password: String::new(),
            started_here: false,
        };

        if !server.data_dir.join("PG_VERSION").exists() {
            server.password = uuid::Uuid::new_v4().simple().to_string();
            server.init(&password_file)?;
        } else {
            server.password = fs::read_to_string(&password_file)
                .map_err(|source| EmbeddedError::Io {
                    what: format!("cannot read {}", password_file.display()),
                    source,
                })?
                .trim()
                .to_owned();
        }

        if let Some(port) = server.running_port() {
            server.port = port;
            tracing::info!(port, data_dir = %server.data_dir.display(), "embedded PostgreSQL already running");
            return Ok(server);
        }
        server.port = match options.port {
            Some(port) => port,
            None => free_port()?,
        };
        // 300 connections rather than PostgreSQL's 100: a shop opens up to
        // ~57 (README), and the tests run several shops beside each other
        // on one cluster (the 200-customer race alone holds ~65).
        let mut opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=300",
            server.port
        );
        if !options.durable {
            opts.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let log = server.data_dir.join("server.log");
        server.pg_ctl(
            "start PostgreSQL",
            &[
                "-D".into(),
                server.data_dir.clone().into(),
                "-l".into(),
                log.into(),
                "-w".into(),
                "-t".into(),
                "60".into(),
                "-o".into(),
                opts.into(),
                "start".into(),
            ],
        )?;
        server.started_here = true;
        tracing::info!(port = server.port, data_dir = %server.data_dir.display(), "embedded PostgreSQL started");
        Ok(server)
    }

    /// URL of database `database` on this server, as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server if this process started it (fast shutdown: running
    /// transactions are rolled back, data is safe).
    pub fn stop(self) {
        if !self.started_here {
            return;
        }
        let args: [OsString; 6] = [
            "-D".into(),
            self.data_dir.clone().into(),
            "-m".into(),
            "fast".into(),
            "-w".into(),
            "stop".into(),
        ];
        match self.pg_ctl("stop PostgreSQL", &args) {
            Ok(()) => tracing::info!("embedded PostgreSQL stopped"),
            Err(e) => tracing::warn!(error = %e, "embedded PostgreSQL did not stop cleanly"),
        }
    }

    fn init(&self, password_file: &Path) -> Result<(), EmbeddedError> {
        let io = |what: String| move |source| EmbeddedError::Io { what, source };
        fs::create_dir_all(&self.data_dir)
            .map_err(io(format!("cannot create {}", self.data_dir.display())))?;
        fs::set_permissions(&self.data_dir, fs::Permissions::from_mode(0o700))
            .map_err(io(format!("cannot restrict {}", self.data_dir.display())))?;
        // The password is kept beside the cluster, readable by this user only.
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode_0600()
            .open(password_file)
            .map_err(io(format!("cannot write {}", password_file.display())))?;
        file.write_all(self.password.as_bytes())
            .map_err(io(format!("cannot write {}", password_file.display())))?;
        // initdb reads the password from a file it can open; the data
        // directory must be empty, so the file sits beside it.
        let pwfile = self.data_dir.with_extension("initdb-pw");
        fs::write(&pwfile, &self.password)
            .map_err(io(format!("cannot write {}", pwfile.display())))?;
        if let Some(user) = self.run_as {
            run("hand the data directory to the postgres user", {
                let mut c = Command::new("chown");
                c.arg("-R").arg(user).arg(&self.data_dir).arg(&pwfile);
                Ok(c)
            })?;
            // The server user must be able to reach the directory.
            let reachable = Command::new("runuser")
                .args(["-u", user, "--", "test", "-w"])
                .arg(&self.data_dir)
                .status()
                .is_ok_and(|s| s.success());
            if !reachable {
                return Err(EmbeddedError::Command {
                    what: "prepare the data directory".into(),
                    detail: format!(
                        "the `{user}` user cannot reach {}: put the checkout (or database.embedded_dir) \
                         somewhere it can traverse, not under a private home directory",
                        self.data_dir.display()
                    ),
                });
            }
        }
        let result = self.command("initdb").map(|mut c| {
            c.arg("-D")
                .arg(&self.data_dir)
                .args(["-U", "postgres", "-E", "UTF8", "--locale=C"])
                .args(["--auth-host=scram-sha-256", "--auth-local=peer"])
                .arg(format!("--pwfile={}", pwfile.display()));
            c
        });
        let outcome = run("initdb", result);
        drop(fs::remove_file(&pwfile));
        if outcome.is_err() {
            // Leave no half-made cluster behind: the next start tries afresh.
            drop(fs::remove_dir_all(&self.data_dir));
        }
        outcome
    }

    fn running_port(&self) -> Option<u16> {
        let args: [OsString; 3] = ["-D".into(), self.data_dir.clone().into(), "status".into()];
        self.pg_ctl("check PostgreSQL", &args).ok()?;
        // Line 4 of postmaster.pid is the port.
        let pid = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        pid.lines().nth(3)?.trim().parse().ok()
    }

    fn pg_ctl(&self, what: &str, args: &[OsString]) -> Result<(), EmbeddedError> {
        let mut command = Command::new(self.bindir.join("pg_ctl"));
        command.args(args);
        run(what, Ok(self.wrap(command)))
    }

    fn command(&self, program: &str) -> Result<Command, EmbeddedError> {
        Ok(self.wrap(Command::new(self.bindir.join(program))))
    }

    /// Runs `command` as the server user when we are root, in a process
    /// group of its own so a Ctrl-C at the terminal reaches the shop (which
    /// shuts down in order) and not the database under it.
    fn wrap(&self, command: Command) -> Command {
        let mut wrapped = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(command.get_program());
                c.args(command.get_args());
                c
            }
            None => command,
        };
        wrapped.process_group(0);
        wrapped
    }
}

trait OpenOptionsExt {
    fn mode_0600(&mut self) -> &mut Self;
}

impl OpenOptionsExt for fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

fn run(what: &str, command: Result<Command, EmbeddedError>) -> Result<(), EmbeddedError> {
    let mut command = command?;
    let output: Output = command.output().map_err(|source| EmbeddedError::Io {
        what: format!("cannot run {what}"),
        source,
    })?;
    if output.status.success() {
        Ok(())
    } else {
        let mut detail = String::from_utf8_lossy(&output.stderr).into_owned();
        if detail.trim().is_empty() {
            detail = String::from_utf8_lossy(&output.stdout).into_owned();
        }
        // One line, so the start-up error stays one line.
        let detail = detail.split_whitespace().collect::<Vec<_>>().join(" ");
        Err(EmbeddedError::Command {
            what: what.to_owned(),
            detail,
        })
    }
}

fn absolute(path: &Path) -> Result<PathBuf, EmbeddedError> {
    std::path::absolute(path).map_err(|source| EmbeddedError::Io {
        what: format!("cannot resolve {}", path.display()),
        source,
    })
}

fn free_port() -> Result<u16, EmbeddedError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|source| EmbeddedError::Io {
        what: "cannot find a free port".into(),
        source,
    })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| EmbeddedError::Io {
            what: "cannot find a free port".into(),
            source,
        })
}

#[allow(unsafe_code)]
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn user_exists(name: &str) -> bool {
    fs::read_to_string("/etc/passwd")
        .map(|p| p.lines().any(|l| l.split(':').next() == Some(name)))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests;
