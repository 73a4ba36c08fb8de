//! A `shop` built with some modules left out (cargo features): it holds
//! none of their code, refuses at start to serve one of them with one line
//! naming the feature, and still serves what it has, forwarding or refusing
//! the rest. Runs in every build; CI also runs it on a catalog-only binary
//! (`cargo nextest run -p app --no-default-features --features catalog
//! --test reduced`).

use std::process::Command;

/// `(module, whether this build has it, what)`: the module's cargo feature
/// is named as the module.
macro_rules! module {
    ($name:tt, $what:expr) => {
        ($name, cfg!(feature = $name), $what)
    };
}

/// Each module, whether this build has it, and a text only its code holds
/// (a line of its embedded migrations).
const MODULES: [(&str, bool, &str); 6] = [
    module!("user", "CREATE TABLE refresh_tokens"),
    module!("catalog", "CREATE TABLE categories"),
    module!("inventory", "CREATE TABLE reservations"),
    module!("order", "CREATE TABLE order_events"),
    module!("payment", "CREATE TABLE ledger"),
    module!("notification", "CREATE TABLE webhook_subscriptions"),
];

fn shop() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shop"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "APP_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../config"),
        )
        .env("APP__DATABASE__EMBEDDED", "false");
    command
}

#[test]
fn the_binary_holds_exactly_the_modules_it_was_built_with() {
    let bytes = std::fs::read(env!("CARGO_BIN_EXE_shop")).unwrap();
    // Lossy text keeps every ASCII run, and std's search is fast.
    let binary = String::from_utf8_lossy(&bytes);
    let contains = |text: &str, needle: &str| text.contains(needle);
    for (module, compiled, marker) in MODULES {
        assert_eq!(
            contains(&binary, marker),
            compiled,
            "the {module} module's code is {} the binary",
            if compiled { "missing from" } else { "in" }
        );
    }
    assert_eq!(
        contains(&binary, "send either card_number or payment_method"),
        cfg!(feature = "sandbox"),
        "the sandbox provider"
    );
}

#[test]
fn serving_a_module_the_binary_lacks_stops_the_start_with_one_line() {
    for (module, compiled, _) in MODULES {
        if compiled {
            continue;
        }
        let mut command = shop();
        command
            .env("APP__MODULES__ENABLED", module)
            .env("APP__EVENTS__TRANSPORT", "rabbitmq");
        if module != "user" {
            // Tokens are verified with a user module elsewhere.
            command
                .env("APP__MODULES__USER__MODE", "remote")
                .env("APP__MODULES__USER__URL", "http://127.0.0.1:9");
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{module}: {output:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("modules.enabled")
                && stderr.contains(&format!("cargo feature \"{module}\"")),
            "{stderr}"
        );
    }
    if !cfg!(feature = "sandbox") {
        let output = shop().args(["sandbox-provider"]).output().unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains("cargo feature \"sandbox\""), "{stderr}");
    }
}

/// The spec a binary serves documents the modules it holds.
#[test]
fn the_served_spec_documents_the_modules_the_binary_holds() {
    let output = shop()
        .env("APP__MODULES__USER__MODE", "remote")
        .env("APP__MODULES__USER__URL", "http://127.0.0.1:9")
        .env("APP__MODULES__CATALOG__URL", "http://127.0.0.1:9")
        .arg("openapi")
        .output()
        .unwrap();
    assert!(output.status.success());
    let spec: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let paths = spec["paths"].as_object().unwrap();
    for (module, compiled, path) in [
        module!("catalog", "/api/v1/products"),
        module!("order", "/api/v1/orders"),
        module!("payment", "/api/v1/payments/{id}"),
    ] {
        assert_eq!(
            paths.contains_key(path),
            compiled,
            "{module}: the spec this binary serves"
        );
    }
}

/// A catalog-only process (the binary CI builds with `--features catalog`,
/// or the full one told to serve only the catalog) serves the catalog and
/// answers 503 naming the module for the routes of every other.
#[cfg(feature = "catalog")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_process_serves_the_catalog_and_names_the_modules_it_lacks() {
    let db = testkit::TestDatabase::create(&[catalog::MODULE_MIGRATIONS]).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let scratch =
        std::env::temp_dir().join(format!("shop-reduced-{}", uuid::Uuid::new_v4().simple()));
    let namespace = format!("test-{}", uuid::Uuid::new_v4().simple());
    let mut child = shop()
        .env("APP__MODULES__ENABLED", "catalog")
        .env("APP__MODULES__USER__MODE", "remote")
        .env("APP__MODULES__USER__URL", "http://127.0.0.1:9")
        .env("APP__EVENTS__TRANSPORT", "rabbitmq")
        .env("APP__EVENTS__RABBITMQ__NAMESPACE", &namespace)
        .env("APP__EVENTS__RABBITMQ__QUEUE_TTL_MS", "60000")
        .env("APP__DATABASE__MIGRATE_ON_START", "false")
        .env(
            "APP__AUTH__SERVICE_KEY_FILE",
            scratch.join("service-key.pem"),
        )
        .env("APP__SERVER__HOST", "127.0.0.1")
        .env("APP__SERVER__PORT", port.to_string())
        .env("APP__SERVER__WORKERS", "1")
        .env("DATABASE_URL", db.url())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    remote::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let products = loop {
        if let Ok(response) = http.get(format!("{base}/api/v1/products")).send().await {
            break response;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the catalog process did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(products.status(), 200);
    let products: serde_json::Value = products.json().await.unwrap();
    assert_eq!(products["items"], serde_json::json!([]));
    for (path, module) in [
        ("/api/v1/orders", "order"),
        ("/api/v1/payments/x", "payment"),
        ("/api/v1/inventory/SKU-1", "inventory"),
    ] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 503, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "module_not_served", "{body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("the {module} module")),
            "{body}"
        );
    }
    drop(child.kill());
    drop(child.wait());
    drop(std::fs::remove_dir_all(&scratch));
}
