//! Finding the database and preparing each local module's pool.

use std::time::Duration;

use db::embedded::{EmbeddedOptions, EmbeddedPostgres};

use crate::Settings;
use crate::modules::ModuleName;

/// The database server this process uses, and the embedded server if it
/// started one (stopped again on shutdown).
#[derive(Debug)]
pub struct DatabaseServer {
    /// URL of the shop's database.
    pub url: String,
    embedded: Option<EmbeddedPostgres>,
}

impl DatabaseServer {
    /// The configured server, or in development an embedded one (started
    /// from the machine's PostgreSQL binaries, data under `database.embedded_dir`).
    ///
    /// # Errors
    /// No URL and no embedded server allowed, or the embedded server failed.
    pub async fn resolve(settings: &Settings) -> anyhow::Result<DatabaseServer> {
        if let Some(url) = &settings.database.url {
            return Ok(DatabaseServer {
                url: url.clone(),
                embedded: None,
            });
        }
        anyhow::ensure!(
            settings.database.embedded && settings.environment != "production",
            "database.url is not set (set DATABASE_URL or APP__DATABASE__URL)"
        );
        let options = EmbeddedOptions {
            data_dir: settings.database.embedded_dir.clone(),
            durable: true,
            port: None,
        };
        let server =
            tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&options)).await??;
        db::create_database(&server.url("postgres"), "shop").await?;
        Ok(DatabaseServer {
            url: server.url("shop"),
            embedded: Some(server),
        })
    }

    /// Stops the embedded server if this process started it.
    pub async fn shutdown(self) {
        if let Some(server) = self.embedded {
            drop(tokio::task::spawn_blocking(move || server.stop()).await);
        }
    }
}

/// The schema and migrations of `module`, when it is compiled in.
pub fn migrations(module: ModuleName) -> Option<db::ModuleMigrations> {
    crate::registry::registration(module).map(|r| r.migrations)
}

/// [`migrations`] of a local module: settings refuse to serve a module
/// that is not compiled in, so its absence is a bug, reported as an error.
fn local_migrations(module: ModuleName) -> anyhow::Result<db::ModuleMigrations> {
    Ok(crate::registry::local(module)?.migrations)
}

/// Applies pending migrations of every local module.
///
/// # Errors
/// The first migration that fails.
pub async fn migrate_local_modules(settings: &Settings, shared_url: &str) -> anyhow::Result<()> {
    // All at once: each module's history is in its own schema, and no
    // migration touches another module's (start time, docs/BENCHMARKS.md).
    let runs = settings.modules.local().map(|module| {
        let url = settings.module_database_url(module, shared_url).to_owned();
        async move {
            let applied = db::migrate(&url, local_migrations(module)?).await?;
            tracing::info!(module = module.as_str(), applied = ?applied, "migrations up to date");
            Ok::<_, anyhow::Error>(())
        }
    });
    futures_util::future::try_join_all(runs).await?;
    Ok(())
}

/// The pool of a local module, configured from `[database]` and the
/// module's own `[<module>.database]`.
///
/// # Errors
/// Invalid pool settings.
pub fn module_pool(
    settings: &Settings,
    module: ModuleName,
    shared_url: &str,
) -> anyhow::Result<db::Pool> {
    let max_size = settings
        .module_database(module)
        .ok_or_else(|| anyhow::anyhow!("the {} module is not compiled in", module.as_str()))?
        .max_connections;
    db::build_pool(&db::PoolOptions {
        url: settings.module_database_url(module, shared_url).to_owned(),
        schema: local_migrations(module)?.schema,
        max_size,
        // The server's workers and the main runtime (relays, workers).
        runtimes: settings.server.worker_threads() + 1,
        acquire_timeout: Duration::from_millis(settings.database.acquire_timeout_ms),
        connect_timeout: Duration::from_millis(settings.database.connect_timeout_ms),
        statement_timeout: Duration::from_millis(settings.database.statement_timeout_ms),
    })
}
