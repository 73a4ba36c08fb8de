//! Loading and checking settings: layers, overrides, and the errors that name their key.

use super::*;
use host::ModuleName;

fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    load_env("development", vars)
}

fn load_env(environment: &str, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    load_from(Path::new("/nonexistent"), environment, &vars)
}

#[test]
fn built_in_defaults_load_without_a_config_directory() {
    let s = load(&[]).unwrap();
    assert_eq!(s.server.port, 8080);
    // Every module, in start order.
    assert_eq!(s.modules.enabled, ModuleName::ALL);
    assert!(s.database.url.is_none());
    assert!(s.database.embedded);
}

#[test]
fn env_vars_and_database_url_override_files() {
    let s = load(&[
        ("APP__SERVER__PORT", "9090"),
        ("APP__MODULES__CATALOG__MODE", "remote"),
        ("APP__MODULES__CATALOG__URL", "http://127.0.0.1:1234"),
        ("APP__MODULES__USER__MODE", "remote"),
        ("APP__MODULES__USER__URL", "http://127.0.0.1:1235"),
        ("APP__MODULES__NOTIFICATION__MODE", "remote"),
        ("APP__MODULES__NOTIFICATION__URL", "http://127.0.0.1:1236"),
        ("APP__MODULES__INVENTORY__MODE", "remote"),
        ("APP__MODULES__INVENTORY__URL", "http://127.0.0.1:1237"),
        ("APP__MODULES__PAYMENT__MODE", "remote"),
        ("APP__MODULES__PAYMENT__URL", "http://127.0.0.1:1238"),
        ("APP__MODULES__ORDER__MODE", "remote"),
        ("APP__MODULES__ORDER__URL", "http://127.0.0.1:1239"),
        ("DATABASE_URL", "postgres://u:p@db:5432/shop"),
        (
            "APP__CORS__ALLOWED_ORIGINS",
            "https://a.example,http://localhost:3000",
        ),
        ("APP__RATE_LIMIT__TRUSTED_PROXIES", "10.0.0.2, 10.1.0.0/16"),
    ])
    .unwrap();
    assert_eq!(s.cors.allowed_origins.len(), 2);
    assert_eq!(
        s.rate_limit.trusted_proxies.len(),
        2,
        "an address and a range"
    );
    assert_eq!(s.server.port, 9090);
    assert_eq!(
        s.database.url.as_deref(),
        Some("postgres://u:p@db:5432/shop")
    );
    assert!(s.modules.local().next().is_none());
    assert!(!s.needs_database());
}

#[test]
fn errors_name_the_key() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("APP__SERVER__PORT", "70000")], "server.port"),
        (&[("APP__SERVER__PORT", "abc")], "server.port"),
        (
            &[("APP__MODULES__ENABLED", "catalog,shipping")],
            "modules.enabled",
        ),
        (&[("APP__MODULES__ENABLED", "catalog")], "modules.user.mode"),
        (
            &[("APP__CORS__ALLOWED_ORIGINS", "https://a.example/path")],
            "cors.allowed_origins",
        ),
        (&[("APP__RATE_LIMIT__BURST", "0")], "rate_limit"),
        (
            &[("APP__RATE_LIMIT__TRUSTED_PROXIES", "10.0.0.2,10.0.0.0/33")],
            "rate_limit.trusted_proxies",
        ),
        (
            &[("APP__RESILIENCE__SHIPPING__MAX_RETRIES", "1")],
            "resilience.shipping",
        ),
        (
            &[("APP__RESILIENCE__CATALOG__MAX_CONCURRENT", "0")],
            "resilience.catalog.max_concurrent",
        ),
        (
            &[("APP__RESILIENCE__DEFAULT__BREAKER__MINIMUM_CALLS", "50")],
            "resilience.default.breaker.minimum_calls",
        ),
        (
            &[(
                "APP__RESILIENCE__SMTP__BREAKER__FAILURE_RATE_THRESHOLD",
                "0",
            )],
            "resilience.smtp.breaker.failure_rate_threshold",
        ),
        (&[("DATABASE_URL", "mysql://x@h/db")], "database.url"),
        (
            &[("APP__MODULES__CATALOG__MODE", "remote")],
            "modules.catalog.url",
        ),
        (
            &[
                ("APP__MODULES__CATALOG__MODE", "remote"),
                ("APP__MODULES__CATALOG__URL", "not a url"),
            ],
            "modules.catalog.url",
        ),
    ];
    for (vars, key) in cases {
        let err = load(vars).unwrap_err().to_string();
        assert!(err.contains(key), "{vars:?}: `{err}` does not name {key}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
}

/// A `[modules.<name>]` table for a module the shop does not know is
/// refused, naming it and its key.
#[test]
fn a_placement_of_an_unknown_module_is_refused() {
    let err = load(&[("APP__MODULES__SHIPPING__MODE", "remote")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("modules"), "{err}");
    assert!(err.contains("unknown field `shipping`"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
}

#[test]
fn the_in_process_transport_is_refused_when_an_event_would_cross_processes() {
    let user_remote = [
        ("APP__MODULES__USER__MODE", "remote"),
        ("APP__MODULES__USER__URL", "http://127.0.0.1:1235"),
    ];
    let alone = |module: &'static str| {
        let mut vars = vec![("APP__MODULES__ENABLED", module)];
        vars.extend_from_slice(&user_remote);
        vars
    };
    // A subscriber here, its publisher elsewhere; a publisher here, its
    // subscriber elsewhere: both named, with the key and the fix.
    for (vars, event) in [
        (alone("catalog"), "inventory.stock_changed.v1"),
        (alone("order"), "order.confirmed.v1"),
        (
            vec![("APP__MODULES__ENABLED", "user")],
            "user.registered.v1",
        ),
    ] {
        let err = load(&vars).unwrap_err().to_string();
        assert!(err.contains("events.transport"), "{err}");
        assert!(err.contains(event), "{vars:?}: {err}");
        assert!(err.contains("rabbitmq"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        // The broker carries them.
        let mut vars = vars.clone();
        vars.push(("APP__EVENTS__TRANSPORT", "rabbitmq"));
        assert!(load(&vars).is_ok(), "{vars:?}");
    }
    // Nothing crosses: the whole shop, a gateway with no local module,
    // a payment module alone (it publishes and subscribes to nothing).
    let mut gateway = vec![("APP__MODULES__ENABLED", "user,catalog")];
    gateway.extend_from_slice(&[
        ("APP__MODULES__USER__MODE", "remote"),
        ("APP__MODULES__USER__URL", "http://127.0.0.1:1235"),
        ("APP__MODULES__CATALOG__MODE", "remote"),
        ("APP__MODULES__CATALOG__URL", "http://127.0.0.1:1236"),
    ]);
    for vars in [vec![], gateway, alone("payment")] {
        let settings = load(&vars).unwrap_or_else(|e| panic!("{vars:?}: {e}"));
        assert!(settings.modules.crossing_event().is_none());
    }
}

#[test]
fn local_modules_start_in_dependency_order_whatever_the_listed_order() {
    let s = load(&[(
        "APP__MODULES__ENABLED",
        "order,payment,inventory,notification,catalog,user",
    )])
    .unwrap();
    assert_eq!(s.modules.local().collect::<Vec<_>>(), ModuleName::ALL);
}

#[test]
fn production_refuses_what_only_development_may_do() {
    let production = [
        ("DATABASE_URL", "postgres://u@db/shop"),
        ("APP__PAYMENT__PROVIDER_URL", "https://provider.example.com"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut vars = production.to_vec();
        vars.extend_from_slice(extra);
        load_env("production", &vars)
    };
    let ok = with(&[]).unwrap();
    assert!(!ok.server.swagger_ui, "Swagger UI is off unless asked for");
    assert!(
        with(&[("APP__SERVER__SWAGGER_UI", "true")])
            .unwrap()
            .server
            .swagger_ui
    );
    for (key, value) in [
        ("APP__RATE_LIMIT__ENABLED", "false"),
        ("APP__NOTIFICATION__EMAIL__SMTP_TLS", "none"),
    ] {
        let err = with(&[(key, value)]).unwrap_err().to_string();
        let named = key
            .trim_start_matches("APP__")
            .replace("__", ".")
            .to_lowercase();
        assert!(err.contains(&named), "{key}: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
    // Development may do all of it.
    let dev = load_env("development", &[("APP__RATE_LIMIT__ENABLED", "false")]).unwrap();
    assert!(dev.server.swagger_ui);
}

#[test]
fn an_unknown_environment_is_refused_naming_app_env() {
    let err = load_env("prodution", &[]).unwrap_err().to_string();
    assert!(
        err.contains("APP_ENV") && err.contains("prodution"),
        "{err}"
    );
    // One with its own file in the config directory is known.
    let dir = std::env::temp_dir().join(format!("shop-config-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("staging.toml"), "[server]\nport = 9000\n").unwrap();
    let staging = load_from(&dir, "staging", &[]).unwrap();
    assert_eq!(staging.server.port, 9000);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn production_requires_a_database_url() {
    let err = load_env("production", &[]).unwrap_err().to_string();
    assert!(err.contains("database.url"), "{err}");
    let production = [
        ("DATABASE_URL", "postgres://u@db/shop"),
        ("APP__PAYMENT__PROVIDER_URL", "https://provider.example.com"),
    ];
    let ok = load_env("production", &production).unwrap();
    assert!(!ok.database.embedded);
    assert!(!ok.auth.generate_dev_key);
    let err = load_env(
        "production",
        &[
            ("DATABASE_URL", "postgres://u@db/shop"),
            ("APP__AUTH__GENERATE_DEV_KEY", "true"),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("auth.generate_dev_key"), "{err}");
    // Serving the payment module in production takes a provider's URL;
    // a process that calls it elsewhere does not.
    #[cfg(feature = "payment")]
    {
        let err = load_env("production", &[("DATABASE_URL", "postgres://u@db/shop")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("payment.provider_url"), "{err}");
    }
    assert!(
        load_env(
            "production",
            &[
                ("DATABASE_URL", "postgres://u@db/shop"),
                ("APP__MODULES__PAYMENT__MODE", "remote"),
                ("APP__MODULES__PAYMENT__URL", "http://payment:8080"),
            ],
        )
        .is_ok()
    );
    let on_broker = |url: &'static str| {
        let mut vars = production.to_vec();
        vars.extend([
            ("APP__EVENTS__TRANSPORT", "rabbitmq"),
            ("APP__EVENTS__RABBITMQ__URL", url),
        ]);
        vars
    };
    for url in [
        "amqp://guest:guest@rabbitmq:5672/%2f",
        "amqp://rabbitmq:5672/%2f",
        "amqp://shop@rabbitmq:5672/%2f",
    ] {
        let err = load_env("production", &on_broker(url))
            .unwrap_err()
            .to_string();
        assert!(err.contains("events.rabbitmq.url"), "{url}: {err}");
    }
    assert!(
        load_env(
            "production",
            &on_broker("amqp://shop:s3cret@rabbitmq:5672/%2f")
        )
        .is_ok()
    );
    // Development keeps the local broker's default account.
    assert!(
        load_env(
            "development",
            &on_broker("amqp://guest:guest@127.0.0.1:5672/%2f")
        )
        .is_ok()
    );
    for (key, value, named) in [
        (
            "APP__PAYMENT__SANDBOX_EMBEDDED",
            "true",
            "payment.sandbox_embedded",
        ),
        ("APP__ORDER__CRASH_AT", "before_capture", "order.crash_at"),
    ] {
        let err = load_env(
            "production",
            &[("DATABASE_URL", "postgres://u@db/shop"), (key, value)],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(named), "{err}");
    }
}

/// Budgets nest: each caller waits longer than what it calls may take, so
/// a slow answer arrives instead of a timeout and a retry that only meets
/// the first attempt still running (a gateway's attempt at `POST /orders`
/// outlasts the checkout's wait; the saga's call to a payment process
/// outlasts that process's call to the provider).
#[cfg(feature = "order")]
#[test]
fn the_default_budgets_nest() {
    let s = load(&[]).unwrap();
    let order = s.section::<order::Settings>().unwrap();
    let gateway_to_order = s.resilience.for_dependency("order");
    assert!(
        gateway_to_order.attempt_timeout_ms > order.checkout_wait_ms + 1000,
        "{gateway_to_order:?}"
    );
    let to_payment = s.resilience.for_dependency("payment");
    let to_provider = s.resilience.for_dependency("payment_provider");
    assert!(
        to_payment.attempt_timeout_ms > to_provider.deadline_ms,
        "{to_payment:?} {to_provider:?}"
    );
    assert!(order.step_timeout_ms >= to_payment.deadline_ms);
    for policy in [&gateway_to_order, &to_payment] {
        assert!(policy.breaker.slow_call_ms >= policy.attempt_timeout_ms);
    }
}

#[test]
fn the_http_clients_cap_never_cuts_an_attempt_a_policy_allows() {
    // Built in: above every attempt, so kept.
    let s = load(&[]).unwrap();
    assert_eq!(host::compose::request_cap_ms(&s), s.remote.timeout_ms);
    // Below the payment policy's 11 s attempt: raised above it.
    let s = load(&[("APP__REMOTE__TIMEOUT_MS", "10000")]).unwrap();
    assert_eq!(host::compose::request_cap_ms(&s), 12_000);
    // A cap set above every attempt stays; SMTP is no HTTP call.
    let s = load(&[
        ("APP__REMOTE__TIMEOUT_MS", "30000"),
        ("APP__RESILIENCE__SMTP__ATTEMPT_TIMEOUT_MS", "60000"),
    ])
    .unwrap();
    assert_eq!(host::compose::request_cap_ms(&s), 30_000);
    // A longer webhook attempt raises it again.
    let s = load(&[("APP__RESILIENCE__WEBHOOKS__ATTEMPT_TIMEOUT_MS", "40000")]).unwrap();
    assert_eq!(host::compose::request_cap_ms(&s), 41_000);
}

/// An environment value is a number or a boolean only where it reads back
/// as written: a password of digits with a leading zero, or a namespace
/// like `007`, is kept as given (it became `123456`, `7`); secrets are
/// always text; numbers, floats and booleans still read as such.
#[test]
fn environment_values_are_kept_as_written_unless_they_read_back() {
    let s = load(&[
        ("APP__NOTIFICATION__EMAIL__SMTP_PASSWORD", "0123456"),
        ("APP__NOTIFICATION__EMAIL__SMTP_USERNAME", "1e3"),
        ("APP__EVENTS__RABBITMQ__NAMESPACE", "007"),
        ("APP__SERVER__PORT", "9090"),
        ("APP__SERVER__SWAGGER_UI", "FALSE"),
        ("APP__RESILIENCE__PAYMENT__ATTEMPT_TIMEOUT_MS", "700"),
        (
            "APP__RESILIENCE__PAYMENT__BREAKER__FAILURE_RATE_THRESHOLD",
            "50.0",
        ),
        ("APP__RESILIENCE__PAYMENT__RETRY_BUDGET_PERCENT", ".5"),
        ("APP__RESILIENCE__PAYMENT__MAX_RETRIES", "+2"),
    ])
    .unwrap();
    #[cfg(feature = "notification")]
    {
        let email = &s.section::<notification::Settings>().unwrap().email;
        assert_eq!(email.smtp_password.as_deref(), Some("0123456"));
        assert_eq!(email.smtp_username.as_deref(), Some("1e3"));
    }
    assert_eq!(s.events.rabbitmq.namespace, "007");
    assert_eq!(s.server.port, 9090);
    assert!(!s.server.swagger_ui);
    let payment = s.resilience.for_dependency("payment");
    assert_eq!(payment.attempt_timeout_ms, 700);
    assert!((payment.breaker.failure_rate_threshold - 50.0).abs() < f64::EPSILON);
    assert!((payment.retry_budget_percent - 0.5).abs() < f64::EPSILON);
    assert_eq!(payment.max_retries, 2);
    let text = load(&[("APP__EVENTS__RABBITMQ__NAMESPACE", "1.10")]).unwrap();
    assert_eq!(text.events.rabbitmq.namespace, "1.10", "a float prints 1.1");
    let wrong = load(&[("APP__RESILIENCE__PAYMENT__MAX_RETRIES", "many")])
        .unwrap_err()
        .to_string();
    assert!(wrong.contains("many"), "{wrong}");
}
