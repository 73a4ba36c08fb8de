//! Configuration: layered files and environment, checked once at start.
//!
//! Layers, later wins: the built-in `config/default.toml`, the built-in
//! `config/$APP_ENV.toml`, the same two files from the config directory (if
//! present), then environment variables `APP__SECTION__KEY`; `DATABASE_URL`
//! overrides `database.url`. Any error names the key it is about.

use std::path::Path;

use serde::Deserialize;
use url::Url;

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
    /// The catalog module's own section.
    pub catalog: catalog::Settings,
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

        let mut builder =
            config::Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
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
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot.
    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, msg: String| Err(ConfigError(format!("{key}: {msg}")));
        if let Some(url) = &self.database.url {
            check_postgres_url("database.url", url)?;
        }
        if let Some(url) = &self.catalog.database.url {
            check_postgres_url("catalog.database.url", url)?;
        }
        if self.catalog.database.max_connections == 0 {
            return fail(
                "catalog.database.max_connections",
                "must be at least 1".into(),
            );
        }
        if self.server.body_limit_bytes == 0 {
            return fail("server.body_limit_bytes", "must be at least 1".into());
        }
        self.modules
            .validate()
            .map_err(|(key, msg)| ConfigError(format!("{key}: {msg}")))?;
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
        match module {
            ModuleName::Catalog => self.catalog.database.url.as_deref().unwrap_or(shared),
        }
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
        assert_eq!(s.modules.enabled, vec![ModuleName::Catalog]);
        assert!(s.database.url.is_none());
        assert!(s.database.embedded);
    }

    #[test]
    fn env_vars_and_database_url_override_files() {
        let s = load(&[
            ("APP__SERVER__PORT", "9090"),
            ("APP__MODULES__CATALOG__MODE", "remote"),
            ("APP__MODULES__CATALOG__URL", "http://127.0.0.1:1234"),
            ("DATABASE_URL", "postgres://u:p@db:5432/shop"),
        ])
        .unwrap();
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
    fn production_requires_a_database_url() {
        let err = load_env("production", &[]).unwrap_err().to_string();
        assert!(err.contains("database.url"), "{err}");
        let ok = load_env("production", &[("DATABASE_URL", "postgres://u@db/shop")]).unwrap();
        assert!(!ok.database.embedded);
    }
}
