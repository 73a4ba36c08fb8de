//! Rebuilds the crate when a migration changes or is added:
//! `embed_migrations!` reads the folder at compile time, and cargo does not
//! watch it by itself (a new migration was left out of the binary, and of
//! the test template made from it).

fn main() {
    println!("cargo::rerun-if-changed=../../migrations/user");
}
