//! Public contract of the payment module. Other modules depend on this crate only.
//!
//! [`PaymentApi`] has two implementations: `payment::PaymentModule` (in
//! process) and [`client::PaymentClient`] (over HTTP, feature `client`); the
//! contract suite in [`contract`] runs against both.
//!
//! One payment per order. Every operation is keyed by the order, so a
//! repeated call (a retry, a resumed saga) finds the payment already in the
//! state asked for and changes nothing: a card is never charged twice.
//! Tokenize, authorize, capture, void and refund are for the shop's own
//! modules (the `service` role) only: the order's saga owns its payment
//! and would not learn of a step taken past it. Owners and admins read
//! payments; an admin gives money back by cancelling the order.

mod error;
pub mod observed;
mod payment;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "contract-tests")]
pub mod contract;

pub use error::PaymentError;
pub use payment::{
    AuthorizePayment, LedgerEntry, Payment, PaymentId, PaymentMethod, PaymentStatus, PositiveMoney,
    Tokenize,
};

use kernel::{CallContext, OrderId};

/// Route prefixes (below `/api/v1`) served by the payment module.
pub const ROUTE_PREFIXES: &[&str] = &["/payments"];

/// What other modules (and the payment module's own routes) may ask of payments.
#[async_trait::async_trait]
pub trait PaymentApi: Send + Sync {
    /// Hands a card number to the provider; the token answered stands for
    /// the card from then on (only it and the last four digits are stored).
    ///
    /// # Errors
    /// [`Failure::Validation`](kernel::Failure::Validation) for a number that is not one;
    /// [`Failure::Unavailable`](kernel::Failure::Unavailable), [`Failure::Degraded`](kernel::Failure::Degraded).
    async fn tokenize(
        &self,
        cx: &CallContext,
        request: Tokenize,
    ) -> Result<PaymentMethod, PaymentError>;

    /// Holds the amount on the card for the order. Idempotent by order:
    /// the same order answers the same payment; an unknown outcome (the
    /// provider did not answer) is settled by asking again.
    ///
    /// # Errors
    /// [`PaymentError::Declined`] with the provider's reason;
    /// [`PaymentError::Conflict`] when the order already has a payment for
    /// another amount, customer or card (its last four digits: the same
    /// card tokenized again is the same payment, asked for with the token
    /// first given); [`Failure::Unavailable`](kernel::Failure::Unavailable) (outcome unknown, ask
    /// again).
    async fn authorize(
        &self,
        cx: &CallContext,
        request: AuthorizePayment,
    ) -> Result<Payment, PaymentError>;

    /// Takes the held amount (idempotent).
    ///
    /// # Errors
    /// [`PaymentError::NotFound`]; [`PaymentError::InvalidTransition`] for a
    /// payment that is not authorized.
    async fn capture(&self, cx: &CallContext, order: OrderId) -> Result<Payment, PaymentError>;

    /// Releases the hold (idempotent). A payment whose authorization's
    /// outcome is unknown is settled first, then voided.
    ///
    /// # Errors
    /// [`PaymentError::InvalidTransition`] for a captured payment (refund it).
    async fn void(&self, cx: &CallContext, order: OrderId) -> Result<Payment, PaymentError>;

    /// Gives a captured amount back (idempotent).
    ///
    /// # Errors
    /// [`PaymentError::InvalidTransition`] for a payment never captured.
    async fn refund(&self, cx: &CallContext, order: OrderId) -> Result<Payment, PaymentError>;

    /// The payment of an order, with its ledger.
    ///
    /// # Errors
    /// [`PaymentError::NotFound`] (also for another customer's order).
    async fn payment_for_order(
        &self,
        cx: &CallContext,
        order: OrderId,
    ) -> Result<Payment, PaymentError>;

    /// One payment, with its ledger.
    ///
    /// # Errors
    /// [`PaymentError::NotFound`] (also for another customer's payment).
    async fn payment(&self, cx: &CallContext, id: PaymentId) -> Result<Payment, PaymentError>;
}
