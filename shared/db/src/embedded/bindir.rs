//! Finding PostgreSQL's server binaries: `$PG_BINDIR`, `pg_config --bindir`,
//! `PATH`, then the usual Debian, RHEL and Homebrew places, newest version first.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory holding `initdb` and `pg_ctl`, if any.
pub fn find_bindir() -> Option<PathBuf> {
    first_with_tools(candidate_bindirs())
}

pub(super) fn first_with_tools(candidates: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    candidates
        .into_iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

/// Where PostgreSQL's server binaries may be, most specific first.
fn candidate_bindirs() -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        candidates.push(dir.into());
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        candidates.push(String::from_utf8_lossy(&out.stdout).trim().into());
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    // Newest version first in the versioned layouts.
    for pattern in [
        ("/usr/lib/postgresql", "bin"),
        ("/usr/local/opt", "bin"),
        ("/opt/homebrew/opt", "bin"),
    ] {
        let mut versions: Vec<PathBuf> = fs::read_dir(pattern.0)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join(pattern.1))
            .collect();
        versions.sort_by_key(|p| std::cmp::Reverse(version_key(p)));
        candidates.extend(versions);
    }
    let mut rhel: Vec<PathBuf> = fs::read_dir("/usr")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pgsql-"))
        .map(|e| e.path().join("bin"))
        .collect();
    rhel.sort_by_key(|p| std::cmp::Reverse(version_key(p)));
    candidates.extend(rhel);
    candidates
}

/// Sort key: the first run of digits in the path (`/usr/lib/postgresql/16/bin` → 16).
pub(super) fn version_key(path: &Path) -> u32 {
    let text = path.to_string_lossy();
    let digits: String = text
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap_or(0)
}
