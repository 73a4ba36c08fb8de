//! Configuration: layered files and environment, checked once at start.
//!
//! Layers, later wins: the built-in `config/default.toml`, the built-in
//! `config/$APP_ENV.toml`, the same two files from the config directory (if
//! present), then environment variables `APP__SECTION__KEY`; `DATABASE_URL`
//! overrides `database.url`. Any error names the key it is about.

use std::path::Path;

use serde::Deserialize;
use url::Url;

use crate::compose::Dependency;
use crate::modules::{ModuleName, ModulesSettings};

/// Everything the `shop` binary can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// HTTP server.
    pub server: ServerSettings,
    /// The shared database.
    pub database: DatabaseSettings,
    /// Logging.
    pub log: LogSettings,
    /// Calls to modules in other processes.
    pub remote: RemoteSettings,
    /// Which modules run here, and where the others are.
    pub modules: ModulesSettings,
    /// Access tokens.
    pub auth: AuthSettings,
    /// Request rate limits.
    pub rate_limit: RateLimitSettings,
    /// Cross-origin browser access.
    pub cors: CorsSettings,
    /// The user module's own section.
    #[cfg(feature = "user")]
    pub user: user::Settings,
    /// Ignored: the module is not compiled into this binary.
    #[cfg(not(feature = "user"))]
    #[serde(default, rename = "user")]
    _user: serde::de::IgnoredAny,
    /// The catalog module's own section.
    #[cfg(feature = "catalog")]
    pub catalog: catalog::Settings,
    /// Ignored: the module is not compiled into this binary.
    #[cfg(not(feature = "catalog"))]
    #[serde(default, rename = "catalog")]
    _catalog: serde::de::IgnoredAny,
    /// Integration events between modules.
    pub events: events::EventsSettings,
    /// Timeouts, retries, breakers and bulkheads of remote calls.
    pub resilience: resilience::ResilienceSettings,
    /// The notification module's own section.
    #[cfg(feature = "notification")]
    pub notification: notification::Settings,
    /// Ignored: the module is not compiled into this binary.
    #[cfg(not(feature = "notification"))]
    #[serde(default, rename = "notification")]
    _notification: serde::de::IgnoredAny,
    /// The inventory's own section.
    #[cfg(feature = "inventory")]
    pub inventory: inventory::Settings,
    /// Ignored: the module is not compiled into this binary.
    #[cfg(not(feature = "inventory"))]
    #[serde(default, rename = "inventory")]
    _inventory: serde::de::IgnoredAny,
    /// The payment module's own section.
    #[cfg(feature = "payment")]
    pub payment: payment::Settings,
    /// Ignored: the module is not compiled into this binary.
    #[cfg(not(feature = "payment"))]
    #[serde(default, rename = "payment")]
    _payment: serde::de::IgnoredAny,
    /// The order module's own section.
    #[cfg(feature = "order")]
    pub order: order::Settings,
    /// Ignored: the module is not compiled into this binary.
    #[cfg(not(feature = "order"))]
    #[serde(default, rename = "order")]
    _order: serde::de::IgnoredAny,
    /// `APP_ENV` this was loaded for (not read from files).
    #[serde(skip)]
    pub environment: String,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to bind.
    pub host: std::net::IpAddr,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// Seconds in-flight requests get after a stop signal.
    pub shutdown_timeout_secs: u64,
    /// Largest request body, in bytes.
    pub body_limit_bytes: usize,
    /// Serve Swagger UI at `/swagger-ui/` (the spec at
    /// `/api-docs/openapi.json` is always served). Off in production unless
    /// set explicitly.
    pub swagger_ui: bool,
    /// After a stop signal, how long readiness answers 503 while the server
    /// still serves, before it stops accepting (ms).
    #[serde(default)]
    pub drain_delay_ms: u64,
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Server URL; `None` lets development start an embedded server.
    pub url: Option<String>,
    /// Whether an embedded server may be started when `url` is absent.
    pub embedded: bool,
    /// Data directory of the embedded server.
    pub embedded_dir: std::path::PathBuf,
    /// Run pending migrations at start.
    pub migrate_on_start: bool,
    /// Longest wait for a pooled connection (then 503), ms.
    pub acquire_timeout_ms: u64,
    /// Longest time to open a connection, ms.
    pub connect_timeout_ms: u64,
    /// `statement_timeout` of every connection, ms.
    pub statement_timeout_ms: u64,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `json`, `pretty` or `auto`.
    pub format: telemetry::LogFormat,
    /// Filter used when `RUST_LOG` is not set.
    pub filter: String,
}

/// `[remote]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSettings {
    /// Timeout of one call to another process, ms.
    pub timeout_ms: u64,
    /// PEM files of root certificates trusted on every outgoing `https`
    /// call besides the platform's (a private CA of the deployment).
    #[serde(default)]
    pub extra_root_certificates: Vec<std::path::PathBuf>,
}

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// `iss` of access tokens.
    pub issuer: String,
    /// `aud` of access tokens.
    pub audience: String,
    /// Lifetime of an access token, seconds.
    pub access_token_ttl_secs: u64,
    /// PKCS#8 PEM Ed25519 private key that signs access tokens.
    pub signing_key_file: std::path::PathBuf,
    /// Generate the signing key on first run when it is missing (development).
    pub generate_dev_key: bool,
    /// Retired keys (PEM) whose tokens are still accepted until they expire.
    pub previous_key_files: Vec<std::path::PathBuf>,
    /// PKCS#8 PEM Ed25519 private key that signs service tokens (the
    /// shop's modules calling each other), shared by every process of a
    /// deployment; generated on first run where `generate_dev_key` allows.
    pub service_key_file: std::path::PathBuf,
}

impl AuthSettings {
    /// What issuers write and verifiers check.
    pub fn policy(&self) -> auth::TokenPolicy {
        auth::TokenPolicy {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            access_ttl: std::time::Duration::from_secs(self.access_token_ttl_secs),
        }
    }
}

/// `[rate_limit]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Off for load tests: `APP__RATE_LIMIT__ENABLED=false`.
    pub enabled: bool,
    /// Sustained requests per second per client IP on `/api/v1`.
    pub per_second: u32,
    /// Burst above the sustained rate.
    pub burst: u32,
    /// Sign-ins per minute per client IP.
    pub login_per_minute_per_ip: u32,
    /// Sign-ins per minute per account.
    pub login_per_minute_per_account: u32,
    /// Registrations per minute per client IP.
    pub registrations_per_minute_per_ip: u32,
    /// Proxies (our own gateway) whose `x-forwarded-for` names the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl RateLimitSettings {
    /// A per-minute limit, or `None` when limits are off.
    pub fn per_minute(&self, limit: u32) -> Option<u32> {
        self.enabled.then_some(limit)
    }
}

/// `[cors]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    /// Origins (`https://host[:port]`) allowed to call the API cross-site.
    pub allowed_origins: Vec<String>,
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

const DEFAULT_TOML: &str = include_str!("../../config/default.toml");
const BUILT_IN_ENVIRONMENTS: &[(&str, &str)] = &[
    ("development", include_str!("../../config/development.toml")),
    ("production", include_str!("../../config/production.toml")),
];

impl Settings {
    /// Loads the settings for `APP_ENV` (default `development`) from the
    /// built-in files, `config_dir` and the environment, and checks them.
    ///
    /// # Errors
    /// [`ConfigError`] with a one-line message naming the key.
    pub fn load(config_dir: &Path) -> Result<Settings, ConfigError> {
        let environment = std::env::var("APP_ENV").unwrap_or_else(|_| "development".to_owned());
        let env_vars: Vec<(String, String)> = std::env::vars().collect();
        Settings::load_from(config_dir, &environment, &env_vars)
    }

    /// [`Settings::load`] with the environment given explicitly (tests).
    ///
    /// # Errors
    /// [`ConfigError`] with a one-line message naming the key.
    pub fn load_from(
        config_dir: &Path,
        environment: &str,
        env_vars: &[(String, String)],
    ) -> Result<Settings, ConfigError> {
        use config::{Environment, File, FileFormat};

        let compiled_in: Vec<&str> = ModuleName::ALL
            .iter()
            .filter(|m| m.compiled_in())
            .map(|m| m.as_str())
            .collect();
        let mut builder = config::Config::builder()
            .set_default("modules.enabled", compiled_in)
            .map_err(|e| ConfigError(one_line(&e.to_string())))?
            .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some((_, text)) = BUILT_IN_ENVIRONMENTS
            .iter()
            .find(|(n, _)| *n == environment)
        {
            builder = builder.add_source(File::from_str(text, FileFormat::Toml));
        }
        builder = builder
            .add_source(File::from(config_dir.join("default.toml")).required(false))
            .add_source(File::from(config_dir.join(format!("{environment}.toml"))).required(false))
            .add_source(
                Environment::with_prefix("APP")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("modules.enabled")
                    .with_list_parse_key("auth.previous_key_files")
                    .with_list_parse_key("cors.allowed_origins")
                    .with_list_parse_key("rate_limit.trusted_proxies")
                    .with_list_parse_key("notification.webhook_allow")
                    .with_list_parse_key("remote.extra_root_certificates")
                    .try_parsing(true)
                    .source(Some(env_vars.iter().cloned().collect())),
            );
        if let Some((_, url)) = env_vars.iter().rev().find(|(k, _)| k == "DATABASE_URL") {
            builder = builder
                .set_override("database.url", url.as_str())
                .map_err(|e| ConfigError(one_line(&e.to_string())))?;
        }
        let mut settings: Settings = builder
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| ConfigError(one_line(&e.to_string())))?;
        settings.environment = environment.to_owned();
        let known = BUILT_IN_ENVIRONMENTS.iter().any(|(n, _)| *n == environment)
            || config_dir.join(format!("{environment}.toml")).is_file();
        if !known {
            return Err(ConfigError(format!(
                "APP_ENV: unknown environment `{environment}` (built in: development, production; \
                 or a {environment}.toml in the config directory)"
            )));
        }
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot.
    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, msg: String| Err(ConfigError(format!("{key}: {msg}")));
        if let Some(url) = &self.database.url {
            check_postgres_url("database.url", url)?;
        }
        for (key, database) in ModuleName::ALL
            .iter()
            .filter_map(|m| Some((m.as_str(), self.module_database(*m)?)))
        {
            if let Some(url) = &database.url {
                check_postgres_url(&format!("{key}.database.url"), url)?;
            }
            if database.max_connections == 0 {
                return fail(
                    &format!("{key}.database.max_connections"),
                    "must be at least 1".into(),
                );
            }
        }
        let limits = &self.rate_limit;
        if limits.enabled && (limits.per_second == 0 || limits.burst == 0) {
            return fail(
                "rate_limit.per_second",
                "and rate_limit.burst must be at least 1 (or set rate_limit.enabled = false)"
                    .into(),
            );
        }
        for origin in &self.cors.allowed_origins {
            match Url::parse(origin) {
                Ok(url)
                    if matches!(url.scheme(), "http" | "https")
                        && url.path() == "/"
                        && !origin.ends_with('/') => {}
                _ => {
                    return fail(
                        "cors.allowed_origins",
                        format!("`{origin}` is not an origin like https://shop.example.com"),
                    );
                }
            }
        }
        if self.environment == "production" && !self.rate_limit.enabled {
            return fail(
                "rate_limit.enabled",
                "must be true in production (limits off are for load tests)".into(),
            );
        }
        #[cfg(feature = "notification")]
        if self.environment == "production"
            && self.notification.email.transport == notification::EmailTransport::Smtp
            && self.notification.email.smtp_tls == notification::SmtpTls::None
        {
            return fail(
                "notification.email.smtp_tls",
                "must be starttls or tls in production: email would cross the network in clear"
                    .into(),
            );
        }
        if self.environment == "production" && self.auth.generate_dev_key {
            return fail(
                "auth.generate_dev_key",
                "must be false in production: mount a signing key and set auth.signing_key_file"
                    .into(),
            );
        }
        #[cfg(feature = "payment")]
        if self.environment == "production" && self.payment.sandbox_embedded {
            return fail(
                "payment.sandbox_embedded",
                "must be false in production: set payment.provider_url".into(),
            );
        }
        #[cfg(feature = "order")]
        {
            if self.environment == "production" && self.order.crash_at.is_some() {
                return fail(
                    "order.crash_at",
                    "is a failpoint for tests and must be unset in production".into(),
                );
            }
            if self.order.max_step_attempts < 1 {
                return fail("order.max_step_attempts", "must be at least 1".into());
            }
            if self.order.lease_secs == 0 || self.order.recovery_interval_ms == 0 {
                return fail(
                    "order.lease_secs",
                    "and order.recovery_interval_ms must be at least 1".into(),
                );
            }
        }
        if self.server.body_limit_bytes == 0 {
            return fail("server.body_limit_bytes", "must be at least 1".into());
        }
        for dependency in self.resilience.dependencies.keys() {
            if Dependency::parse(dependency).is_none() {
                let known: Vec<&str> = Dependency::ALL.iter().map(|d| d.as_str()).collect();
                return fail(
                    &format!("resilience.{dependency}"),
                    format!("unknown dependency (known: default, {})", known.join(", ")),
                );
            }
        }
        if let Err((field, msg)) = self.resilience.default.validate() {
            return fail(&format!("resilience.default.{field}"), msg);
        }
        for dependency in Dependency::ALL.map(Dependency::as_str) {
            if let Err((field, msg)) = self.resilience.for_dependency(dependency).validate() {
                return fail(&format!("resilience.{dependency}.{field}"), msg);
            }
        }
        if self.events.transport == events::TransportKind::RabbitMq {
            match Url::parse(&self.events.rabbitmq.url) {
                // RabbitMQ's well-known default account: anyone who reaches
                // the broker could publish forged events with it.
                Ok(url)
                    if self.environment == "production"
                        && (url.username().is_empty()
                            || url.username() == "guest"
                            || url.password().is_none_or(|p| p.is_empty() || p == "guest")) =>
                {
                    return fail(
                        "events.rabbitmq.url",
                        "must name an account of its own in production, not the default \
                         guest/guest (nor an empty password)"
                            .into(),
                    );
                }
                Ok(url) if matches!(url.scheme(), "amqp" | "amqps") => {}
                _ => {
                    return fail(
                        "events.rabbitmq.url",
                        "must be an amqp://user:password@host:port/vhost URL".into(),
                    );
                }
            }
        }
        self.modules
            .validate()
            .map_err(|(key, msg)| ConfigError(format!("{key}: {msg}")))?;
        if self.events.transport == events::TransportKind::InProcess
            && let Some(crossing) = self.modules.crossing_event()
        {
            let (here, there) = if self.modules.is_local(crossing.publisher) {
                (crossing.publisher, crossing.subscriber)
            } else {
                (crossing.subscriber, crossing.publisher)
            };
            return fail(
                "events.transport",
                format!(
                    "\"in-process\" would lose `{}` ({} publishes it, {} subscribes): {} runs in this \
                     process and {} does not; set events.transport = \"rabbitmq\"",
                    crossing.event_type,
                    crossing.publisher.as_str(),
                    crossing.subscriber.as_str(),
                    here.as_str(),
                    there.as_str(),
                ),
            );
        }
        if self.environment == "production" && self.needs_database() && self.database.url.is_none()
        {
            return fail(
                "database.url",
                "is required in production (set DATABASE_URL or APP__DATABASE__URL); \
                 production never starts an embedded database"
                    .into(),
            );
        }
        Ok(())
    }

    /// Whether any module served here keeps data in this process.
    pub fn needs_database(&self) -> bool {
        self.modules.local().next().is_some()
    }

    /// The database URL of `module`: its own, or the shared one.
    pub fn module_database_url<'a>(&'a self, module: ModuleName, shared: &'a str) -> &'a str {
        self.module_database(module)
            .and_then(|database| database.url.as_deref())
            .unwrap_or(shared)
    }

    /// `[<module>.database]`, when the module is compiled in.
    pub fn module_database(&self, module: ModuleName) -> Option<&db::ModuleDatabase> {
        crate::registry::registration(module).map(|r| (r.database)(self))
    }
}

fn check_postgres_url(key: &str, raw: &str) -> Result<(), ConfigError> {
    match Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "postgres" | "postgresql") && url.host().is_some() => {
            Ok(())
        }
        Ok(_) => Err(ConfigError(format!(
            "{key}: must be a postgres://user:password@host:port/database URL"
        ))),
        Err(e) => Err(ConfigError(format!("{key}: not a URL ({e})"))),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        load_env("development", vars)
    }

    fn load_env(environment: &str, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::load_from(Path::new("/nonexistent"), environment, &vars)
    }

    #[test]
    fn built_in_defaults_load_without_a_config_directory() {
        let s = load(&[]).unwrap();
        assert_eq!(s.server.port, 8080);
        assert_eq!(
            s.modules.enabled,
            vec![
                ModuleName::User,
                ModuleName::Catalog,
                ModuleName::Notification,
                ModuleName::Inventory,
                ModuleName::Payment,
                ModuleName::Order,
            ]
        );
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
        ])
        .unwrap();
        assert_eq!(s.cors.allowed_origins.len(), 2);
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
        let production = [("DATABASE_URL", "postgres://u@db/shop")];
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
        let staging = Settings::load_from(&dir, "staging", &[]).unwrap();
        assert_eq!(staging.server.port, 9000);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn production_requires_a_database_url() {
        let err = load_env("production", &[]).unwrap_err().to_string();
        assert!(err.contains("database.url"), "{err}");
        let ok = load_env("production", &[("DATABASE_URL", "postgres://u@db/shop")]).unwrap();
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
        let production = [("DATABASE_URL", "postgres://u@db/shop")];
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
}
