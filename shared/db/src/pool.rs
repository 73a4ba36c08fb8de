//! One connection pool per module, each connection set up for that module,
//! and each kept on the async runtime that opened it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::FutureExt;
use tokio::runtime::{Handle, Id};

/// One share of a module's pool.
type Shard = diesel_async::pooled_connection::deadpool::Pool<AsyncPgConnection>;
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
    /// Most connections open at once, over all runtimes.
    pub max_size: usize,
    /// How many async runtimes use the pool (the HTTP server's workers and
    /// the main runtime): `max_size` is shared out between them, each
    /// keeping connections of its own.
    pub runtimes: usize,
    /// How long a request waits for a free connection before failing (503).
    pub acquire_timeout: Duration,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// `statement_timeout` of every connection.
    pub statement_timeout: Duration,
}

/// A module's connection pool.
///
/// A connection is driven by a task on the runtime that opened it
/// (tokio-postgres's connection future, spawned by diesel-async), and every
/// actix worker is a runtime of its own. A query over a connection another
/// runtime opened wakes that runtime's thread twice, to write and to hand
/// the answer back. So the pool is split into shares (a deadpool each), one
/// per runtime, assigned on the runtime's first borrow: a connection stays
/// with the thread that drives it.
///
/// `max_size` is the total, never exceeded: it is shared out evenly, and
/// every share gets at least [`MIN_SHARE`] connections (a task may hold one
/// while it borrows another), so a small pool has fewer shares than
/// runtimes. Runtimes beyond the shares are given existing shares in turn.
#[derive(Clone)]
pub struct Pool(Arc<Shared>);

/// The fewest connections a share gets: one held, one more borrowed.
pub const MIN_SHARE: usize = 2;

/// Runtimes a pool remembers; later ones (runtimes made and dropped over
/// and over, as tests do) borrow from the first share.
const MAX_RUNTIMES: usize = 256;

struct Shared {
    options: PoolOptions,
    state: RwLock<Shares>,
    closed: AtomicBool,
    /// The last [`ping`] made on a connection of its own (every pooled one
    /// busy), and when: one at a time, its answer taken for a second, so
    /// a flood of readiness checks opens one connection, not one each.
    fallback_ping: tokio::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
}

/// How long a [`ping`] on a connection of its own answers for the next.
const FALLBACK_PING_REUSE: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Shares {
    shares: Vec<Shard>,
    /// Each runtime seen, and the index of its share.
    runtimes: Vec<(Id, usize)>,
}

impl Shares {
    fn of(&self, id: Id) -> Option<Shard> {
        let (_, index) = self.runtimes.iter().find(|(of, _)| *of == id)?;
        self.shares.get(*index).cloned()
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("schema", &self.0.options.schema)
            .field("status", &self.status())
            .finish()
    }
}

impl Pool {
    /// A connection of the calling runtime's share, waiting up to the
    /// acquire timeout for one.
    ///
    /// # Errors
    /// No connection within the acquire timeout, or none can be opened.
    pub async fn get(&self) -> Result<Object, PoolError> {
        let shard = self.shard()?;
        shard.get().await
    }

    /// The calling runtime's share, assigned on its first borrow.
    fn shard(&self) -> Result<Shard, PoolError> {
        let closed = || self.0.closed.load(Ordering::Acquire);
        if closed() {
            return Err(PoolError::Closed);
        }
        // The pool's timeouts need a tokio runtime anyway.
        let id = Handle::try_current()
            .map_err(|_| PoolError::NoRuntimeSpecified)?
            .id();
        let known = self
            .0
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .of(id);
        if let Some(shard) = known {
            return Ok(shard);
        }
        let mut state = self.0.state.write().unwrap_or_else(|e| e.into_inner());
        // Again under the lock, so that `close` cannot miss a share made now.
        if closed() {
            return Err(PoolError::Closed);
        }
        if let Some(shard) = state.of(id) {
            return Ok(shard);
        }
        if state.runtimes.len() >= MAX_RUNTIMES
            && let Some(first) = state.shares.first()
        {
            return Ok(first.clone());
        }
        let count = shares(&self.0.options);
        let index = state.runtimes.len() % count;
        if index == state.shares.len() {
            let size = share_of(self.0.options.max_size, count, index);
            // `build_pool` built one with these options: this cannot fail.
            let shard = build_shard(&self.0.options, size).map_err(|_| PoolError::Closed)?;
            state.shares.push(shard);
        }
        state.runtimes.push((id, index));
        state.shares.get(index).cloned().ok_or(PoolError::Closed)
    }

    /// Size and use, summed over the shares; `max_size` is the total.
    pub fn status(&self) -> deadpool::Status {
        let state = self.0.state.read().unwrap_or_else(|e| e.into_inner());
        let mut total = deadpool::Status {
            max_size: self.0.options.max_size,
            size: 0,
            available: 0,
            waiting: 0,
        };
        for share in &state.shares {
            let status = share.status();
            total.size += status.size;
            total.available += status.available;
            total.waiting += status.waiting;
        }
        total
    }

    /// Closes every share: waiting and later borrows fail, open
    /// connections are dropped as they come back.
    pub fn close(&self) {
        self.0.closed.store(true, Ordering::Release);
        let state = self.0.state.read().unwrap_or_else(|e| e.into_inner());
        for share in &state.shares {
            share.close();
        }
    }
}

/// Into how many shares a pool is split: one per runtime, as many as give
/// each at least [`MIN_SHARE`] connections, and at least one.
fn shares(options: &PoolOptions) -> usize {
    options.runtimes.min(options.max_size / MIN_SHARE).max(1)
}

/// How many of `total` connections the `index`th of `shares` gets: an even
/// split, the remainder to the first ones.
fn share_of(total: usize, shares: usize, index: usize) -> usize {
    total / shares + usize::from(index < total % shares)
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
    anyhow::ensure!(options.max_size > 0, "a pool needs at least one connection");
    // Checked here, so that a share built later cannot fail.
    build_shard(options, 1)?;
    Ok(Pool(Arc::new(Shared {
        options: options.clone(),
        state: RwLock::new(Shares::default()),
        closed: AtomicBool::new(false),
        fallback_ping: tokio::sync::Mutex::new(None),
    })))
}

fn build_shard(options: &PoolOptions, max_size: usize) -> anyhow::Result<Shard> {
    let setup = format!(
        "SET search_path TO {}; SET statement_timeout = {}; SET application_name = 'shop/{}'",
        options.schema,
        options.statement_timeout.as_millis(),
        options.schema,
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
    let shard = Shard::builder(manager)
        .max_size(max_size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(options.acquire_timeout))
        .create_timeout(Some(options.connect_timeout))
        .recycle_timeout(Some(options.connect_timeout))
        .build()?;
    Ok(shard)
}

/// Checks that the pool can reach its database (`SELECT 1`), within `timeout`.
///
/// On a connection of the pool when one is free within half of `timeout`;
/// when every connection is in use (a burst of slow requests), on one
/// opened for the check alone: a busy pool is not a database down, and
/// every instance of a shop under load would otherwise leave its load
/// balancer at once. Such a check is made once at a time per pool and its
/// answer reused for a second (`/health/ready` is open to anyone).
///
/// # Errors
/// A short, log-safe reason.
pub async fn ping(pool: &Pool, timeout: Duration) -> Result<(), String> {
    use diesel_async::RunQueryDsl as _;
    async fn select_one(conn: &mut AsyncPgConnection) -> Result<(), String> {
        // Raw: the cheapest round trip, no table.
        diesel::sql_query("SELECT 1")
            .execute(conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    let check = async {
        match tokio::time::timeout(timeout / 2, pool.get()).await {
            Ok(Ok(mut conn)) => select_one(&mut conn).await,
            Ok(Err(PoolError::Timeout(deadpool::managed::TimeoutType::Wait))) | Err(_) => {
                let mut last = pool.0.fallback_ping.lock().await;
                if let Some((at, outcome)) = &*last
                    && at.elapsed() < FALLBACK_PING_REUSE
                {
                    return outcome.clone();
                }
                let outcome = match AsyncPgConnection::establish(&pool.0.options.url).await {
                    Ok(mut conn) => select_one(&mut conn).await,
                    Err(e) => Err(e.to_string()),
                };
                *last = Some((std::time::Instant::now(), outcome.clone()));
                outcome
            }
            Ok(Err(e)) => Err(e.to_string()),
        }
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
/// later) rather than a bug: the connection was lost, the statement timed
/// out, or the transaction was chosen to give way to a concurrent one (a
/// deadlock or a serialization failure: the same request succeeds again).
/// `None` for every other error.
pub fn unavailable_reason(error: &diesel::result::Error) -> Option<&'static str> {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => Some("lost its connection"),
        // diesel-async reports every driver error without a SQLSTATE as a
        // command it could not send; only a connection that broke (closed,
        // reset, silent) is the database being away. An encoding or a
        // parameter error is the statement's own, and stays unexpected.
        Error::DatabaseError(DatabaseErrorKind::UnableToSendCommand, info)
            if [
                "connection closed",
                "error communicating with the server",
                "timeout waiting for server",
                "error connecting to server",
            ]
            .iter()
            .any(|lost| info.message().starts_with(lost)) =>
        {
            Some("lost its connection")
        }
        // 57P01-03: the server ended the session (an administrator, a
        // failover, a restart) or is not accepting any.
        Error::DatabaseError(_, info)
            if info.message().starts_with("terminating connection")
                || info.message().starts_with("the database system is") =>
        {
            Some("lost its connection")
        }
        Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => {
            Some("gave way to a concurrent change")
        }
        Error::DatabaseError(_, info) if info.message().contains("statement timeout") => {
            Some("is too slow to answer")
        }
        Error::DatabaseError(_, info) if info.message().starts_with("deadlock detected") => {
            Some("gave way to a concurrent change")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Of the driver's errors without a SQLSTATE, only a broken connection
    /// is the database being away.
    #[test]
    fn only_a_broken_connection_among_driver_errors_is_unavailability() {
        use diesel::result::{DatabaseErrorKind, Error};
        let driver = |message: &str| {
            Error::DatabaseError(
                DatabaseErrorKind::UnableToSendCommand,
                Box::new(message.to_owned()),
            )
        };
        assert!(unavailable_reason(&driver("connection closed")).is_some());
        assert!(
            unavailable_reason(&driver("error communicating with the server: reset")).is_some()
        );
        assert!(unavailable_reason(&driver("error serializing parameter 3")).is_none());
        assert!(unavailable_reason(&driver("error encoding message to server")).is_none());
    }

    fn options(max_size: usize, runtimes: usize) -> PoolOptions {
        PoolOptions {
            url: "postgres://nobody@127.0.0.1:1/none".to_owned(),
            schema: "catalog",
            max_size,
            runtimes,
            acquire_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            statement_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_shares_add_up_to_the_total_and_none_is_too_small() {
        for total in 1..=40 {
            for runtimes in 1..=9 {
                let count = shares(&options(total, runtimes));
                assert!(count >= 1 && count <= runtimes, "{total} over {runtimes}");
                let split: Vec<usize> = (0..count).map(|i| share_of(total, count, i)).collect();
                assert_eq!(
                    split.iter().sum::<usize>(),
                    total,
                    "{total} over {runtimes}"
                );
                let least = total.min(MIN_SHARE);
                assert!(
                    split.iter().all(|&n| n >= least),
                    "{total}/{runtimes}: {split:?}"
                );
                let (most, fewest) = (split.iter().max(), split.iter().min());
                let even = most.zip(fewest).is_some_and(|(m, f)| m - f <= 1);
                assert!(even, "{split:?}");
            }
        }
        assert_eq!(shares(&options(1, 3)), 1, "fewer connections than runtimes");
        assert_eq!(
            shares(&options(3, 2)),
            1,
            "a share of one would be too small"
        );
        assert_eq!(shares(&options(10, 3)), 3);
        assert_eq!(
            shares(&options(10, 9)),
            5,
            "two each for five of nine runtimes"
        );
    }

    #[tokio::test]
    async fn a_closed_pool_lends_nothing_and_reports_its_total() {
        let pool = build_pool(&options(4, 2)).unwrap();
        assert_eq!(pool.status().max_size, 4);
        pool.close();
        assert!(matches!(pool.get().await, Err(PoolError::Closed)));
    }

    #[test]
    fn a_transaction_that_gave_way_is_unavailability_not_a_bug() {
        use diesel::result::{DatabaseErrorKind, Error};
        let error = |kind, message: &str| Error::DatabaseError(kind, Box::new(message.to_owned()));
        let deadlock = error(DatabaseErrorKind::Unknown, "deadlock detected");
        assert_eq!(
            unavailable_reason(&deadlock),
            Some("gave way to a concurrent change")
        );
        let serialization = error(
            DatabaseErrorKind::SerializationFailure,
            "could not serialize access due to concurrent update",
        );
        assert_eq!(
            unavailable_reason(&serialization),
            Some("gave way to a concurrent change")
        );
        let timeout = error(
            DatabaseErrorKind::Unknown,
            "canceling statement due to statement timeout",
        );
        assert_eq!(unavailable_reason(&timeout), Some("is too slow to answer"));
        let bug = error(DatabaseErrorKind::Unknown, "column \"nope\" does not exist");
        assert_eq!(unavailable_reason(&bug), None);
        assert_eq!(unavailable_reason(&Error::NotFound), None);
    }
}
