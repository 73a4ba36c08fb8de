//! Order module: carts, orders, and the checkout saga that places them.
//!
//! Owns the `orders` schema (`order` is a reserved word in SQL). An order
//! is event-sourced: `order_events` is the append-only truth (a trigger
//! refuses updates and deletes), `orders` the projection that the same fold
//! (`domain::OrderState::apply`) keeps current and can rebuild. The
//! checkout saga (`saga/`) runs reserve → authorize → commit → capture →
//! confirm through the inventory and payment modules' `-api` traits, and
//! compensates in reverse; its state lives in `sagas`, leased by the
//! instance driving it, so a crash anywhere is resumed by any instance.

pub mod http;
pub mod model;

mod checkout;
mod domain;
mod error;
mod gauges;
mod registration;
mod repo;
mod saga;
mod service;
mod worker;

pub use checkout::PlaceOutcome;
pub use domain::idempotency_key;
pub use error::OrderError;
pub use gauges::record_metrics;
pub use registration::REGISTRATION;
pub use service::{Dependencies, OrderModule};
pub use worker::RecoveryWorker;

use serde::Deserialize;

/// Name of the module and of its config section.
pub const NAME: &str = "order";

/// The module's schema (`order` is reserved in SQL).
pub const SCHEMA: &str = "orders";

db::module_migrations!(SCHEMA, "../../migrations/order");

/// The `[order]` config section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Database of this module.
    pub database: db::ModuleDatabase,
    /// How long `POST /orders` waits for the saga before answering 202.
    pub checkout_wait_ms: u64,
    /// Lease of a saga's driver, renewed at each step, seconds. Longer than
    /// the slowest step (the `payment` policy's deadline): more than one and
    /// a half times `step_timeout_ms` (checked; on the way forward it is
    /// renewed every third of it).
    pub lease_secs: u64,
    /// How often the recovery worker looks for sagas to resume.
    pub recovery_interval_ms: u64,
    /// Deadline of one step's call; under two thirds of the lease.
    pub step_timeout_ms: u64,
    /// Tries of a forward step that cannot get an answer before the order
    /// is failed and compensated. Compensation steps are retried until
    /// they succeed.
    pub max_step_attempts: i32,
    /// Backoff between tries of a step (full jitter).
    pub retry_base_ms: u64,
    /// Largest backoff.
    pub retry_max_ms: u64,
    /// A key whose first request has not answered after this long (its
    /// process died) is answered from the order it created, or freed.
    /// Longer than `checkout_wait_ms` (checked).
    pub idempotency_stale_secs: u64,
    /// Idempotency keys are kept this long, then pruned: a retry with the
    /// same key after that places a new order. At least the 24 hours keys
    /// answer for (checked).
    pub idempotency_retention_hours: u32,
    /// How often the recovery worker prunes expired idempotency keys.
    pub prune_interval_secs: u64,
    /// Tests only: the process aborts at this saga point (`before_<step>`,
    /// `after_<step>`, `after_<step>_recorded`).
    #[serde(default)]
    pub crash_at: Option<String>,
}
