//! Tests of finding the PostgreSQL binaries: the one-line no-binaries error,
//! and the newest version tried first.

use super::bindir::{first_with_tools, version_key};
use super::*;

#[test]
fn no_binaries_is_one_line_saying_what_to_do() {
    let empty = std::env::temp_dir().join(format!("no-pg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&empty).unwrap();
    assert_eq!(first_with_tools([empty.clone()]), None);
    std::fs::remove_dir_all(&empty).unwrap();

    let message = EmbeddedError::NoBinaries.to_string();
    assert!(!message.contains('\n'));
    assert!(message.contains("apt-get install postgresql"));
    assert!(message.contains("DATABASE_URL"));
}

#[test]
fn newest_version_sorts_first() {
    let mut dirs = [
        PathBuf::from("/usr/lib/postgresql/9/bin"),
        PathBuf::from("/usr/lib/postgresql/16/bin"),
        PathBuf::from("/usr/lib/postgresql/15/bin"),
    ];
    dirs.sort_by_key(|p| std::cmp::Reverse(version_key(p)));
    assert_eq!(dirs[0], PathBuf::from("/usr/lib/postgresql/16/bin"));
}
