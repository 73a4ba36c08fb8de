//! One connection pool per module, each connection set up for that module.

use std::time::Duration;

use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::FutureExt;

/// A module's connection pool.
pub type Pool = diesel_async::pooled_connection::deadpool::Pool<AsyncPgConnection>;
/// A connection borrowed from a pool.
pub type Object = diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>;
/// Why no connection could be had.
pub type PoolError = diesel_async::pooled_connection::deadpool::PoolError;

/// `[<module>.database]`: where a module keeps its data.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleDatabase {
    /// A database URL of its own; when absent the shared `database.url` is used.
    #[serde(default)]
    pub url: Option<String>,
    /// Most connections this module's pool opens.
    pub max_connections: usize,
}

/// How to build a module's pool.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Connection URL (`postgres://user:pass@host:port/db`).
    pub url: String,
    /// The module's schema; the only one on its connections' `search_path`.
    pub schema: &'static str,
    /// Most connections open at once.
    pub max_size: usize,
    /// How long a request waits for a free connection before failing (503).
    pub acquire_timeout: Duration,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// `statement_timeout` of every connection.
    pub statement_timeout: Duration,
}

/// Builds a pool whose connections have the module's `search_path`,
/// `statement_timeout` and `application_name` (`shop/<schema>`, visible in
/// `pg_stat_activity`). Connections open lazily, on first use.
///
/// # Errors
/// Only for an invalid pool configuration (never for an unreachable server).
pub fn build_pool(options: &PoolOptions) -> anyhow::Result<Pool> {
    let schema = options.schema;
    anyhow::ensure!(
        !schema.is_empty() && schema.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "invalid schema name `{schema}`"
    );
    let setup = format!(
        "SET search_path TO {schema}; SET statement_timeout = {}; SET application_name = 'shop/{schema}'",
        options.statement_timeout.as_millis()
    );
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    // No `SELECT 1` per checkout (the default, `Verified`, cost one round
    // trip and one transaction per use: 39 per checkout, see
    // docs/BENCHMARKS.md). A connection whose socket closed (the server
    // restarted) is still detected and replaced without a round trip; one
    // that dies while idle fails its next query, which is answered 503.
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        let setup = setup.clone();
        async move {
            let mut conn = AsyncPgConnection::establish(url).await?;
            conn.batch_execute(&setup)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
        .boxed()
    });
    let manager = AsyncDieselConnectionManager::new_with_config(&options.url, config);
    let pool = Pool::builder(manager)
        .max_size(options.max_size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(options.acquire_timeout))
        .create_timeout(Some(options.connect_timeout))
        .recycle_timeout(Some(options.connect_timeout))
        .build()?;
    Ok(pool)
}

/// Checks that the pool can reach its database (`SELECT 1`), within `timeout`.
///
/// # Errors
/// A short, log-safe reason.
pub async fn ping(pool: &Pool, timeout: Duration) -> Result<(), String> {
    let check = async {
        let mut conn = pool.get().await.map_err(|e| e.to_string())?;
        // Raw: the cheapest round trip, no table.
        diesel::sql_query("SELECT 1")
            .execute(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(timeout, check).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// A connection from `module`'s pool. How long it waited for one is
/// recorded in `db_pool_wait_seconds{module}` (a full pool shows there
/// before requests fail).
///
/// # Errors
/// No connection within the pool's acquire timeout, or none can be opened.
pub async fn connection(pool: &Pool, module: &'static str) -> Result<Object, PoolError> {
    let started = std::time::Instant::now();
    let result = pool.get().await;
    metrics::histogram!("db_pool_wait_seconds", "module" => module)
        .record(started.elapsed().as_secs_f64());
    result
}

/// Publishes the pool's size and use as gauges labelled with the module.
pub fn record_pool_metrics(module: &'static str, pool: &Pool) {
    let status = pool.status();
    let in_use = status.size.saturating_sub(status.available);
    metrics::gauge!("db_pool_connections", "module" => module, "state" => "max")
        .set(status.max_size as f64);
    metrics::gauge!("db_pool_connections", "module" => module, "state" => "open")
        .set(status.size as f64);
    metrics::gauge!("db_pool_connections", "module" => module, "state" => "in_use")
        .set(in_use as f64);
    metrics::gauge!("db_pool_waiting", "module" => module).set(status.waiting as f64);
}

/// Why a query error means "the database cannot answer now" (503, retry
/// later) rather than a bug: the connection was lost or the statement timed
/// out. `None` for every other error.
pub fn unavailable_reason(error: &diesel::result::Error) -> Option<&'static str> {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => Some("lost its connection"),
        Error::DatabaseError(_, info) if info.message().contains("statement timeout") => {
            Some("is too slow to answer")
        }
        _ => None,
    }
}
