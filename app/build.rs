//! `cfg(all_modules)`: the default, full build (every feature of `default`
//! in `Cargo.toml` is on: every module crate is compiled in), so code and
//! tests that need all the modules say so in one word.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(all_modules)");
    println!("cargo::rerun-if-changed=Cargo.toml");
    let manifest = std::fs::read_to_string("Cargo.toml").unwrap_or_default();
    let Some(default) = manifest
        .lines()
        .find_map(|line| line.trim().strip_prefix("default = ["))
    else {
        return;
    };
    let all = default
        .split(',')
        .map(|feature| {
            feature
                .trim()
                .trim_end_matches(']')
                .trim()
                .trim_matches('"')
        })
        .filter(|feature| !feature.is_empty())
        .all(|feature| {
            let var = format!("CARGO_FEATURE_{}", feature.to_uppercase().replace('-', "_"));
            std::env::var_os(var).is_some()
        });
    if all {
        println!("cargo::rustc-cfg=all_modules");
    }
}
