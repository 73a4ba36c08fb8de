//! The `shop` binary's command line and start-up checks.

use std::process::Command;

fn shop() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shop"));
    // Nothing from the developer's environment leaks in.
    command
        .env_remove("DATABASE_URL")
        .env_remove("APP_ENV")
        .env(
            "APP_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../config"),
        )
        // Keys of its own: never a file in the working directory.
        .env(
            "APP__AUTH__SIGNING_KEY_FILE",
            crate::helpers::fresh_key_path(),
        )
        .env(
            "APP__AUTH__SERVICE_KEY_FILE",
            crate::helpers::fresh_key_path(),
        );
    command
}

#[test]
fn invalid_config_stops_the_start_with_one_line_naming_the_key() {
    let cases = [
        ("APP__SERVER__PORT", "not-a-port", "server.port"),
        (
            "APP__MODULES__ENABLED",
            "catalog,warehouse",
            "modules.enabled",
        ),
        ("DATABASE_URL", "mysql://nope", "database.url"),
        (
            "APP__USER__REFRESH_TOKEN_TTL_DAYS",
            "0",
            "user.refresh_token_ttl_days",
        ),
        (
            "APP__USER__REFRESH_TOKEN_TTL_DAYS",
            "100000000",
            "user.refresh_token_ttl_days",
        ),
        (
            "APP__USER__PRUNE_INTERVAL_SECS",
            "0",
            "user.prune_interval_secs",
        ),
        (
            "APP__NOTIFICATION__FROM",
            "shop at localhost",
            "notification.from",
        ),
        (
            "APP__NOTIFICATION__ADMIN_EMAIL",
            "ops@",
            "notification.admin_email",
        ),
        // One connection: the relay would hold it while the catalog's own
        // handlers wait for another, for ever.
        (
            "APP__CATALOG__DATABASE__MAX_CONNECTIONS",
            "1",
            "catalog.database.max_connections",
        ),
        // A rate the limiter cannot keep: none, or slower than one a day.
        ("APP__RATE_LIMIT__PER_SECOND", "0", "rate_limit.per_second"),
        ("APP__RATE_LIMIT__PER_SECOND", "-2", "rate_limit.per_second"),
        (
            "APP__RATE_LIMIT__PER_SECOND",
            "0.000001",
            "rate_limit.per_second",
        ),
        ("APP__RATE_LIMIT__BURST", "0", "rate_limit.burst"),
        (
            "APP__NOTIFICATION__MAX_WEBHOOKS",
            "0",
            "notification.max_webhooks",
        ),
        // A held order update pruned before its customer's registration.
        (
            "APP__NOTIFICATION__RETENTION_DAYS",
            "0",
            "notification.retention_days",
        ),
        // Reservations gone before a checkout could commit them, or held
        // by abandoned checkouts for weeks.
        (
            "APP__INVENTORY__RESERVATION_TTL_SECS",
            "59",
            "inventory.reservation_ttl_secs",
        ),
        (
            "APP__INVENTORY__RESERVATION_TTL_SECS",
            "604801",
            "inventory.reservation_ttl_secs",
        ),
        (
            "APP__INVENTORY__EXPIRY_INTERVAL_SECS",
            "0",
            "inventory.expiry_interval_secs",
        ),
        (
            "APP__INVENTORY__DEFAULT_LOW_STOCK_THRESHOLD",
            "-1",
            "inventory.default_low_stock_threshold",
        ),
        // Every call would count slow: the breaker would open for good.
        (
            "APP__RESILIENCE__DEFAULT__BREAKER__SLOW_CALL_MS",
            "0",
            "breaker.slow_call_ms",
        ),
        // Routes appended after a query: every call a 404.
        (
            "APP__MODULES__CATALOG__URL",
            "http://127.0.0.1:9/?a=1",
            "modules.catalog.url",
        ),
        // No provider and no sandbox for the payment module served here.
        (
            "APP__PAYMENT__SANDBOX_EMBEDDED",
            "false",
            "payment.provider_url",
        ),
    ];
    for (key, value, named) in cases {
        let output = shop().env(key, value).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{key}={value}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: invalid configuration"),
            "{stderr}"
        );
        assert!(stderr.contains(named), "{stderr}");
    }
    let output = shop()
        .env("APP__MODULES__CATALOG__MODE", "remote")
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("modules.catalog.url"), "{stderr}");
    // The inventory split out with the in-process bus would drop its stock
    // events on the floor: refused before anything starts.
    let output = shop()
        .env("APP__MODULES__ENABLED", "inventory")
        .env("APP__MODULES__USER__MODE", "remote")
        .env("APP__MODULES__USER__URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("events.transport") && stderr.contains("inventory.stock_changed.v1"),
        "{stderr}"
    );
}

#[test]
fn production_refuses_to_start_without_a_database_url() {
    let output = shop().env("APP_ENV", "production").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("database.url") && stderr.contains("production"),
        "{stderr}"
    );
}

/// A port in use (a second `cargo run`, the old process of a pod) stops
/// the start before anything else: no migration, no relay, no worker that
/// would claim work (a due email, a saga) and be cut off half way when the
/// start then failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_stops_the_start_before_anything_runs() {
    let db = crate::helpers::test_database().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = shop()
        .env("DATABASE_URL", db.url())
        .env("APP__SERVER__HOST", "127.0.0.1")
        .env("APP__SERVER__PORT", &port)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("in use"), "{said}");
    for started in ["migrations up to date", "relay started", "listening"] {
        assert!(!said.contains(started), "{started}: {said}");
    }
}

#[test]
fn openapi_subcommand_prints_the_committed_spec_from_any_directory() {
    let output = shop()
        .env_remove("APP_CONFIG_DIR")
        .current_dir(std::env::temp_dir())
        .arg("openapi")
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(printed, app::openapi::api_doc_json().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_provider_runs_as_its_own_process() {
    let port = crate::helpers::free_port();
    // Production mode with no database: the sandbox needs no shop settings.
    let mut child = tokio::process::Command::from(shop())
        .env("APP_ENV", "production")
        .args(["sandbox-provider", "--port", &port.to_string()])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = crate::helpers::http();
    let url = format!("http://127.0.0.1:{port}/v1/authorizations");
    let body = serde_json::json!({
        "amount_minor": 1299, "currency": "EUR",
        "card_number": payment_sandbox::cards::SUCCEEDS,
    });
    let authorized = crate::helpers::eventually("the sandbox to answer", || async {
        client
            .post(&url)
            .header("idempotency-key", "cli-test")
            .json(&body)
            .send()
            .await
            .ok()
    })
    .await;
    assert_eq!(authorized.status(), 201);
    let authorization: serde_json::Value = authorized.json().await.unwrap();
    let id = authorization["id"].as_str().unwrap();
    let captured = client
        .post(format!("{url}/{id}/capture"))
        .send()
        .await
        .unwrap();
    assert_eq!(captured.status(), 200);
    let declined = client
        .post(&url)
        .header("idempotency-key", "cli-test-2")
        .json(&serde_json::json!({
            "amount_minor": 1299, "currency": "EUR",
            "card_number": payment_sandbox::cards::DECLINED,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(declined.status(), 402);
    // SIGTERM, as a container runtime sends it, stops it cleanly.
    let pid = libc::pid_t::try_from(child.id().unwrap()).unwrap();
    // SAFETY: signalling our own child process.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .expect("the sandbox ignored SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn keys_generate_writes_the_deployment_keys_once_without_any_configuration() {
    let dir = std::env::temp_dir().join(format!("shop-keys-{}", uuid::Uuid::new_v4().simple()));
    let run = || {
        // Production mode with no database: keys need no configuration.
        shop()
            .env("APP_ENV", "production")
            .args(["keys", "generate", "--dir"])
            .arg(&dir)
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success(), "{first:?}");
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let (signing, service) = (read("jwt-signing-key.pem"), read("service-key.pem"));
    assert_ne!(signing, service, "two different keys");
    for key in [&signing, &service] {
        auth::SigningKey::from_pem(key, "generated").unwrap();
    }
    // Again: nothing is replaced (tokens signed with the keys stay valid).
    let second = run();
    assert!(second.status.success(), "{second:?}");
    assert_eq!(read("jwt-signing-key.pem"), signing);
    assert_eq!(read("service-key.pem"), service);
    assert!(String::from_utf8_lossy(&second.stderr).contains("exists"));
    // Private keys: readable by their owner only.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.join("service-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
    std::fs::remove_dir_all(&dir).unwrap();
}
