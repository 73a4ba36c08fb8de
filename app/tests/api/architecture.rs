//! The dependency rules of ARCHITECTURE.md, checked over `cargo metadata`.

use serde_json::Value;

const FORBIDDEN_IN_API: &[&str] = &[
    "diesel",
    "diesel-async",
    "diesel_migrations",
    "actix-web",
    "deadpool",
];

#[test]
fn crates_respect_the_module_boundaries() {
    let output = crate::helpers::succeeded(
        std::process::Command::new(env!("CARGO"))
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--offline",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR")),
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();

    // The sandbox card provider sits beside the modules but is none: it
    // stands for the card network at the edge of the shop, and the payment
    // module may start it in process (its `sandbox` feature).
    let is_module_impl = |path: &str| {
        path.contains("/modules/")
            && !path.ends_with("-api/Cargo.toml")
            && !path.ends_with("/payment-sandbox/Cargo.toml")
    };
    let module_impls: Vec<String> = packages
        .iter()
        .filter(|p| is_module_impl(p["manifest_path"].as_str().unwrap()))
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        module_impls.contains(&"catalog".to_owned()),
        "{module_impls:?}"
    );

    let mut violations = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap();
        let manifest = package["manifest_path"].as_str().unwrap();
        let deps: Vec<&str> = package["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap())
            .collect();
        let in_modules = manifest.contains("/modules/");
        let is_api = name.ends_with("-api");
        for dep in &deps {
            if in_modules && module_impls.iter().any(|m| m == dep) && dep != &name {
                violations.push(format!("{name} depends on {dep} (use {dep}-api)"));
            }
            if is_api && FORBIDDEN_IN_API.contains(dep) {
                violations.push(format!("{name} depends on {dep} (an -api crate stays free of storage and web frameworks)"));
            }
            if manifest.contains("/shared/") && module_impls.iter().any(|m| m == dep) {
                violations.push(format!(
                    "{name} depends on module {dep} (shared crates know no module)"
                ));
            }
        }
        if name == "kernel" {
            let workspace: Vec<&str> = packages
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            for dep in deps.iter().filter(|d| workspace.contains(d)) {
                violations.push(format!("kernel depends on workspace crate {dep}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "Forbidden dependencies:\n{}",
        violations.join("\n")
    );
}

/// Every call that leaves the process goes through a resilience policy; the
/// HTTP clients start from one builder (`host::compose::client_builder`:
/// TLS roots; `app::startup::http_client` for module and provider calls,
/// the notification module's webhook client) and are handed to the
/// policy-wrapped callers.
#[test]
fn http_clients_are_built_in_one_place_only() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut offenders = Vec::new();
    let mut stack = vec![
        root.join("app/src"),
        root.join("modules"),
        root.join("shared"),
    ];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let text = path.to_string_lossy().to_string();
            if path.is_dir() {
                // Test support builds its own clients on purpose.
                if !text.ends_with("testkit") && !text.ends_with("tests") {
                    stack.push(path);
                }
            } else if text.ends_with(".rs") && !text.ends_with("/tests.rs") {
                // (`tests.rs`: a `#[cfg(test)] mod tests;` of its own.)
                let source = std::fs::read_to_string(&path).unwrap();
                let code = source.split("#[cfg(test)]").next().unwrap_or_default();
                let builds =
                    code.contains("reqwest::Client::new(") || code.contains("Client::builder(");
                if builds && !text.ends_with("shared/host/src/compose.rs") {
                    offenders.push(text);
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "reqwest clients built outside host::compose::client_builder: {offenders:?}"
    );
}
