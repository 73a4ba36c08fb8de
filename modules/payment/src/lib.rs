//! The payment module: card payments for orders, through a provider adapter.
//!
//! Owns the `payment` schema: one payment per order and its append-only
//! ledger (a trigger refuses updates and deletes). Card numbers go straight
//! to the provider, which answers a token; only the token and the last four
//! digits are stored. The provider is reached over HTTP through
//! [`provider::PaymentProvider`] (ADR 0012: the sandbox provider, `shop
//! sandbox-provider`, until a real one is plugged in at that seam), every
//! call under the `payment` resilience policy.

mod domain;
pub mod http;
pub mod provider;
mod registration;
mod repo;
mod service;

pub use registration::REGISTRATION;
pub use service::PaymentModule;

use serde::Deserialize;
use url::Url;

/// Name of the module, of its schema and of its config section.
pub const NAME: &str = "payment";

db::module_migrations!(NAME, "../../migrations/payment");

/// The `[payment]` config section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Database of this module.
    pub database: db::ModuleDatabase,
    /// Base URL of the card provider's API (the sandbox's, for now). Unset:
    /// the process starts the sandbox provider itself on a loopback port,
    /// when `sandbox_embedded` allows it (development, tests).
    pub provider_url: Option<Url>,
    /// Whether an unset `provider_url` starts the sandbox provider in this
    /// process. Never in production.
    pub sandbox_embedded: bool,
}
