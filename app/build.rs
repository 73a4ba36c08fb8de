//! `cfg(all_modules)`: every module crate is compiled in (the default,
//! full build), so code and tests that need all six say so in one word.

const MODULES: [&str; 6] = [
    "USER",
    "CATALOG",
    "INVENTORY",
    "ORDER",
    "PAYMENT",
    "NOTIFICATION",
];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(all_modules)");
    let all = MODULES
        .iter()
        .all(|module| std::env::var_os(format!("CARGO_FEATURE_{module}")).is_some());
    if all {
        println!("cargo::rustc-cfg=all_modules");
    }
}
