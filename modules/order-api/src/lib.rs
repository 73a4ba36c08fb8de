//! Public contract of the order module.
//!
//! No other module calls the order module: it orchestrates the checkout
//! saga and calls them (inventory, payment, catalog). What others see of
//! it are its routes (forwarded by the gateway when it runs elsewhere) and
//! the events below, which the notification module turns into emails.

pub mod events;

mod status;

pub use status::OrderStatus;

/// Route prefixes (below `/api/v1`) served by the order module.
pub const ROUTE_PREFIXES: &[&str] = &["/cart", "/orders"];
