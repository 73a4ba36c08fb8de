//! Inventory module: stock per SKU, its append-only history, and
//! reservations that never oversell.
//!
//! Owns the `inventory` schema. `available = on_hand - reserved` can never
//! go negative: a CHECK constraint says so, and every change is a single
//! conditional `UPDATE ... WHERE on_hand - reserved >= n`, so concurrent
//! reservations serialise on the row and the losers see "insufficient
//! stock" without any application-level lock.

mod domain;
pub mod http;
mod registration;
mod repo;
mod service;
mod worker;

pub use registration::REGISTRATION;
pub use service::InventoryModule;
pub use worker::ExpiryJob;

use serde::Deserialize;

/// Name of the module, of its schema and of its config section.
pub const NAME: &str = "inventory";

db::module_migrations!(NAME, "../../migrations/inventory");

/// The `[inventory]` config section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Database of this module.
    pub database: db::ModuleDatabase,
    /// How long an active reservation holds stock before it expires, seconds.
    pub reservation_ttl_secs: u64,
    /// How often the expiry job looks for expired reservations, seconds.
    pub expiry_interval_secs: u64,
    /// Low-stock threshold of a SKU stocked for the first time.
    pub default_low_stock_threshold: i32,
}
