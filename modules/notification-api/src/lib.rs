//! What other processes need to know about the notification module without
//! holding its code: the routes a gateway forwards to it and the events it
//! subscribes to (a publisher declares the module's queue, so no event is
//! lost while the module's process is down or not yet started).
//!
//! Nobody calls the notification module: it has no trait, only events in
//! and email and webhooks out.

/// The module's name in config, metrics, logs and queue names.
pub const NAME: &str = "notification";

/// Route prefixes (below `/api/v1`) served by the module.
pub const ROUTE_PREFIXES: &[&str] = &["/notifications", "/admin/webhooks"];

/// Event types the module handles.
pub const SUBSCRIBES: &[&str] = &[
    "catalog.product_created.v1",
    "catalog.product_updated.v1",
    "catalog.product_price_changed.v1",
    "user.registered.v1",
    "user.email_changed.v1",
    "user.preferences_changed.v1",
    "user.display_name_changed.v1",
    "user.status_changed.v1",
    "inventory.low_stock.v1",
    "inventory.out_of_stock.v1",
    "order.confirmed.v1",
    "order.failed.v1",
    "order.cancelled.v1",
];
