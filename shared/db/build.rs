//! Rebuilds the crate when a migration of the messaging tables changes or is
//! added: `embed_migrations!` reads the folder at compile time, and cargo does
//! not watch it by itself.

fn main() {
    println!("cargo::rerun-if-changed=../../migrations/_messaging");
}
