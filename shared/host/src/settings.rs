//! Configuration: layered files and environment, checked once at start.
//!
//! Layers, later wins: the built-in `config/default.toml`, the built-in
//! `config/$APP_ENV.toml`, the same two files from the config directory (if
//! present), then environment variables `APP__SECTION__KEY`; `DATABASE_URL`
//! overrides `database.url`. Any error names the key it is about.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use url::Url;

mod sections;

pub use sections::{
    AuthSettings, CorsSettings, DatabaseSettings, LogSettings, RateLimitSettings, RemoteSettings,
    ServerSettings,
};

use crate::compose::Dependency;
use crate::modules::{ModuleName, ModulesSettings};
use crate::registry::{Registration, Section};

/// Everything the `shop` binary can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The HTTP server: address, workers, limits, shutdown.
    pub server: ServerSettings,
    /// The shared database.
    pub database: DatabaseSettings,
    /// Log level and format.
    pub log: LogSettings,
    /// Calls to modules in other processes.
    pub remote: RemoteSettings,
    /// Which modules run here, and where the others are.
    pub modules: ModulesSettings,
    /// Access tokens: keys, lifetimes, issuer and audience.
    pub auth: AuthSettings,
    /// Request rate limits.
    pub rate_limit: RateLimitSettings,
    /// Cross-origin browser access.
    pub cors: CorsSettings,
    /// Integration events between modules.
    pub events: events::EventsSettings,
    /// Timeouts, retries, breakers and bulkheads of remote calls.
    pub resilience: resilience::ResilienceSettings,
    /// `APP_ENV` this was loaded for (not read from files).
    #[serde(skip)]
    pub environment: String,
    /// The sections of the modules compiled in, `[<module>]`, each typed by
    /// its module (see [`Settings::section`]).
    #[serde(skip)]
    sections: Sections,
}

/// The modules' own sections, by module.
#[derive(Debug, Clone, Default)]
struct Sections(Vec<(ModuleName, db::ModuleDatabase, Arc<dyn Section>)>);

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");
const BUILT_IN_ENVIRONMENTS: &[(&str, &str)] = &[
    (
        "development",
        include_str!("../../../config/development.toml"),
    ),
    (
        "production",
        include_str!("../../../config/production.toml"),
    ),
];

impl Settings {
    /// Loads the settings for `APP_ENV` (default `development`) from the
    /// built-in files, `config_dir` and the environment, and checks them;
    /// `compiled` are the modules this binary holds (their sections are
    /// read, the others' ignored).
    ///
    /// # Errors
    /// [`ConfigError`] with a one-line message naming the key.
    pub fn load(
        config_dir: &Path,
        compiled: &[&'static Registration],
    ) -> Result<Settings, ConfigError> {
        let environment = std::env::var("APP_ENV").unwrap_or_else(|_| "development".to_owned());
        let env_vars: Vec<(String, String)> = std::env::vars().collect();
        Settings::load_from(config_dir, &environment, &env_vars, compiled)
    }

    /// [`Settings::load`] with the environment given explicitly (tests).
    ///
    /// # Errors
    /// [`ConfigError`] with a one-line message naming the key.
    pub fn load_from(
        config_dir: &Path,
        environment: &str,
        env_vars: &[(String, String)],
        compiled: &[&'static Registration],
    ) -> Result<Settings, ConfigError> {
        use config::{Environment, File, FileFormat};

        let compiled_in: Vec<&str> = ModuleName::ALL
            .iter()
            .filter(|m| compiled.iter().any(|r| r.module == **m))
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
        let mut environment_source = Environment::with_prefix("APP")
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("modules.enabled")
            .with_list_parse_key("auth.previous_key_files")
            .with_list_parse_key("auth.accepted_service_key_files")
            .with_list_parse_key("cors.allowed_origins")
            .with_list_parse_key("rate_limit.trusted_proxies")
            .with_list_parse_key("remote.extra_root_certificates");
        for registration in compiled {
            for key in registration.list_keys {
                environment_source = environment_source
                    .with_list_parse_key(&format!("{}.{key}", registration.module.as_str()));
            }
        }
        builder = builder
            .add_source(File::from(config_dir.join("default.toml")).required(false))
            .add_source(File::from(config_dir.join(format!("{environment}.toml"))).required(false))
            .add_source(AsWritten {
                parsed: environment_source
                    .try_parsing(true)
                    .source(Some(env_vars.iter().cloned().collect())),
                written: env_vars
                    .iter()
                    .filter_map(|(name, value)| {
                        let key = name.strip_prefix("APP__")?;
                        Some((key.to_lowercase().replace("__", "."), value.clone()))
                    })
                    .collect(),
            });
        if let Some((_, url)) = env_vars.iter().rev().find(|(k, _)| k == "DATABASE_URL") {
            builder = builder
                .set_override("database.url", url.as_str())
                .map_err(|e| ConfigError(one_line(&e.to_string())))?;
        }
        let config = builder
            .build()
            .map_err(|e| ConfigError(one_line(&e.to_string())))?;
        let mut settings =
            Settings::read(&config, compiled).map_err(|e| ConfigError(one_line(&e.to_string())))?;
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

    /// The process's own keys, then the sections of the modules compiled
    /// in, each read by its registration; the sections of modules not
    /// compiled in are ignored.
    fn read(
        config: &config::Config,
        compiled: &[&'static Registration],
    ) -> Result<Settings, config::ConfigError> {
        let mut own: config::Map<String, config::Value> = config.clone().try_deserialize()?;
        own.retain(|key, _| ModuleName::parse(key).is_none());
        let mut settings = Settings::deserialize(config::Value::new(None, own))?;
        for registration in compiled {
            let key = registration.module.as_str();
            let (section, database) = (registration.settings)(config, key)?;
            settings
                .sections
                .0
                .push((registration.module, database, section));
        }
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
            if database.max_connections < db::MIN_SHARE {
                return fail(
                    &format!("{key}.database.max_connections"),
                    format!(
                        "must be at least {}: a task may hold one connection while it borrows \
                         another (the outbox relay holds one while the module's own event \
                         handlers run; with one, its events would never be delivered)",
                        db::MIN_SHARE
                    ),
                );
            }
        }
        let limits = &self.rate_limit;
        if limits.enabled && !limits.per_second_is_valid() {
            return fail(
                "rate_limit.per_second",
                "must be a rate from one a day (1/86400 = 0.0000115741) to 1000000000 requests \
                 per second, fractions allowed (or set rate_limit.enabled = false)"
                    .into(),
            );
        }
        if limits.enabled && limits.burst == 0 {
            return fail(
                "rate_limit.burst",
                "must be at least 1 (or set rate_limit.enabled = false)".into(),
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
        if self.environment == "production" && self.auth.generate_dev_key {
            return fail(
                "auth.generate_dev_key",
                "must be false in production: mount a signing key and set auth.signing_key_file"
                    .into(),
            );
        }
        for (module, _, section) in &self.sections.0 {
            if let Err((key, msg)) = section.validate(&self.environment) {
                return fail(&format!("{}.{key}", module.as_str()), msg);
            }
        }
        if self.server.body_limit_bytes == 0 {
            return fail("server.body_limit_bytes", "must be at least 1".into());
        }
        if self.server.max_connections == 0 {
            return fail("server.max_connections", "must be at least 1".into());
        }
        if self.server.body_timeout_ms == 0 {
            return fail("server.body_timeout_ms", "must be at least 1".into());
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
            .validate(|module| self.compiled_in(module))
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
        // Last: what the modules served here need of their sections.
        for (module, _, section) in &self.sections.0 {
            if !self.modules.is_local(*module) {
                continue;
            }
            if let Err((key, msg)) = section.validate_served(&self.environment) {
                return fail(&format!("{}.{key}", module.as_str()), msg);
            }
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
        self.sections
            .0
            .iter()
            .find(|(m, _, _)| *m == module)
            .map(|(_, database, _)| database)
    }

    /// Whether this binary holds `module` (its section was read).
    pub fn compiled_in(&self, module: ModuleName) -> bool {
        self.sections.0.iter().any(|(m, _, _)| *m == module)
    }

    /// A module's own section, by its type.
    ///
    /// # Errors
    /// No section of type `S` was read: its module is not compiled in.
    pub fn section<S: Section>(&self) -> anyhow::Result<&S> {
        self.sections
            .0
            .iter()
            .find_map(|(_, _, section)| (&**section as &dyn std::any::Any).downcast_ref::<S>())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no settings section of type {} (its module is not compiled in)",
                    std::any::type_name::<S>()
                )
            })
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

/// The environment as a configuration source, each value typed as config's
/// parsing types it (numbers, booleans, lists) only where that reads back
/// as written. Otherwise it stays the text given: `0123456` is not the
/// number 123456, nor `1e3` 1000, nor `TRUE` `true`, which a password, a
/// user name or a namespace of that shape would silently become. Keys
/// naming a secret (`*password`, `*username`) are always taken as written.
#[derive(Debug, Clone)]
struct AsWritten {
    parsed: config::Environment,
    /// Each `APP__` variable by its key (`notification.email.smtp_password`).
    written: std::collections::HashMap<String, String>,
}

impl config::Source for AsWritten {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<config::Map<String, config::Value>, config::ConfigError> {
        use config::ValueKind;
        let mut values = self.parsed.collect()?;
        for (key, value) in &mut values {
            let Some(written) = self.written.get(key) else {
                continue;
            };
            let secret = key.ends_with("password") || key.ends_with("username");
            let reads_back = match &value.kind {
                ValueKind::Boolean(b) => b.to_string() == *written,
                ValueKind::I64(n) => n.to_string() == *written,
                ValueKind::Float(f) => f.to_string() == *written,
                _ => continue,
            };
            if secret || !reads_back {
                let origin = value.origin().map(str::to_owned);
                *value = config::Value::new(origin.as_ref(), ValueKind::String(written.clone()));
            }
        }
        Ok(values)
    }
}
