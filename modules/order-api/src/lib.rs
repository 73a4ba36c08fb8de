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

/// The POST routes (below `/api/v1`) that honour an `Idempotency-Key`:
/// the first answer is kept and a repeat gets it back, so a gateway may
/// send such a request again after a timeout. Any other POST goes once.
pub const KEYED_POSTS: &[&str] = &["/orders"];
