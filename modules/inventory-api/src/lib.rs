//! Public contract of the inventory module. Other modules depend on this crate only.
//!
//! [`InventoryApi`] has two implementations: `inventory::InventoryModule`
//! (in process) and [`client::InventoryClient`] (over HTTP, feature
//! `client`); the contract suite in [`contract`] runs against both.
//!
//! Stock is counted per SKU: `available = on_hand - reserved`, never
//! negative. A reservation holds stock for an order (all lines or none,
//! idempotent by order id) until it is committed (a sale), released, or
//! expires.

mod error;
pub mod events;
pub mod observed;
mod stock;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "contract-tests")]
pub mod contract;

pub use error::InventoryError;
pub use stock::{
    Adjustment, ListMovements, Movement, OrderId, Reservation, ReservationLine, ReservationStatus,
    ReserveStock, StockLevel, valid_idempotency_key,
};

use catalog_api::Sku;
use kernel::{CallContext, Page};

/// Route prefixes (below `/api/v1`) served by the inventory module.
pub const ROUTE_PREFIXES: &[&str] = &["/inventory"];

/// Whether `path` (below `/api/v1`) is a POST route that honours an
/// `Idempotency-Key`, `/inventory/{sku}/adjustments`: a repeat with the key
/// is answered as a replay, so a gateway may send it again after a timeout.
pub fn is_keyed_post(path: &str) -> bool {
    let mut segments = path.trim_start_matches('/').split('/');
    matches!(
        (segments.next(), segments.next(), segments.next(), segments.next()),
        (Some("inventory"), Some(sku), Some("adjustments"), None) if !sku.is_empty()
    )
}

/// What other modules (and the inventory's own routes) may ask of the inventory.
///
/// Stock, adjustments and movements are for admins; reservations are made
/// and moved (reserve, commit, release, restock) by the order module only,
/// calling with the `service` role (its saga owns them), and read by both.
/// The in-process module checks it, so the HTTP edge does too.
#[async_trait::async_trait]
pub trait InventoryApi: Send + Sync {
    /// Stock of one SKU (all zero for a SKU never stocked).
    ///
    /// # Errors
    /// [`Failure::Unauthenticated`](kernel::Failure::Unauthenticated), [`Failure::Forbidden`](kernel::Failure::Forbidden).
    async fn stock(&self, cx: &CallContext, sku: &Sku) -> Result<StockLevel, InventoryError>;

    /// Receives (positive) or corrects (negative) stock; records a movement.
    /// With [`Adjustment::idempotency_key`], asked again with that key (and
    /// the same quantity and reason) it changes nothing and answers the
    /// stock as it is now: the key's movement was made once. Only a movement
    /// made is kept under its key: after a refusal the key is still free.
    ///
    /// # Errors
    /// [`InventoryError::InsufficientStock`] when a correction would take
    /// available below zero; [`Failure::Validation`](kernel::Failure::Validation);
    /// [`InventoryError::IdempotencyKeyReused`] for a key this SKU's stock
    /// was adjusted with by another quantity or reason;
    /// [`InventoryError::InvalidIdempotencyKey`].
    async fn adjust(
        &self,
        cx: &CallContext,
        sku: &Sku,
        adjustment: Adjustment,
    ) -> Result<StockLevel, InventoryError>;

    /// The stock history of a SKU, newest first.
    ///
    /// # Errors
    /// [`Failure::InvalidCursor`](kernel::Failure::InvalidCursor), also for
    /// a cursor of another SKU's history.
    async fn movements(
        &self,
        cx: &CallContext,
        sku: &Sku,
        query: ListMovements,
    ) -> Result<Page<Movement>, InventoryError>;

    /// Reserves every line for an order, or nothing. Calling it again for
    /// the same order returns the same reservation while it holds stock (or
    /// its sale stands).
    ///
    /// # Errors
    /// [`InventoryError::InsufficientStock`] naming every short SKU;
    /// [`InventoryError::ReservationConflict`] when the order already holds a
    /// different reservation; [`InventoryError::InvalidTransition`] when the
    /// order's reservation was released, expired or returned (or released
    /// before it was made: see [`InventoryApi::release`]), so a late or
    /// replayed call holds nothing; [`Failure::Validation`](kernel::Failure::Validation);
    /// [`Failure::Forbidden`](kernel::Failure::Forbidden) for any caller
    /// but the `service` role.
    async fn reserve(
        &self,
        cx: &CallContext,
        request: ReserveStock,
    ) -> Result<Reservation, InventoryError>;

    /// Turns an active reservation into a sale (idempotent).
    ///
    /// # Errors
    /// [`InventoryError::ReservationNotFound`];
    /// [`InventoryError::InvalidTransition`] for a released, expired or
    /// returned one.
    async fn commit(&self, cx: &CallContext, order: OrderId)
    -> Result<Reservation, InventoryError>;

    /// Gives an active reservation's stock back (idempotent). An order
    /// with no reservation yet is fenced off: a reservation for it that
    /// arrives later (a reserve whose caller gave up waiting) is refused.
    ///
    /// # Errors
    /// [`InventoryError::ReservationNotFound`] (the order is fenced off);
    /// [`InventoryError::InvalidTransition`] for a committed or returned one.
    async fn release(
        &self,
        cx: &CallContext,
        order: OrderId,
    ) -> Result<Reservation, InventoryError>;

    /// Puts a committed reservation's units back on hand (the order was
    /// cancelled after the sale). Idempotent.
    ///
    /// # Errors
    /// [`InventoryError::ReservationNotFound`];
    /// [`InventoryError::InvalidTransition`] for one never committed.
    async fn restock(
        &self,
        cx: &CallContext,
        order: OrderId,
    ) -> Result<Reservation, InventoryError>;

    /// One reservation.
    ///
    /// # Errors
    /// [`InventoryError::ReservationNotFound`].
    async fn reservation(
        &self,
        cx: &CallContext,
        order: OrderId,
    ) -> Result<Reservation, InventoryError>;
}
