//! Database plumbing shared by every module: one pool per module, per-schema
//! migrations, readiness checks, and the embedded PostgreSQL launcher used by
//! `cargo run` and the tests.
//!
//! Modules own their schema. A module's pool puts that schema alone on the
//! `search_path`, so its SQL cannot reach another module's tables by accident,
//! and each module may point at its own database URL.

pub mod embedded;
mod failure;
mod migrate;
mod pool;
mod sql;

pub use failure::{Abort, checkout, pool_failure, query_failure};
pub use migrate::{ModuleMigrations, create_database, migrate};
pub use pool::{
    MIN_SHARE, ModuleDatabase, Object, Pool, PoolError, PoolOptions, build_pool, connection, ping,
    record_pool_metrics, unavailable_reason,
};

pub use sql::{Bind, Cached, NoBinds, Sql, cached, sql};

pub use diesel_async::AsyncPgConnection;
pub use diesel_migrations::EmbeddedMigrations;
