//! [`OrderError`]: what the order routes answer when they cannot do what was asked.

use kernel::{Failure, ProblemCode};

/// Everything an order operation can fail with: the order module's own
/// refusals, and the failures every module shares.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// No such order (or not the caller's).
    #[error("no such order")]
    NotFound,
    /// The order is not in a state that allows this.
    #[error("the order is {status}: {action} is not possible")]
    InvalidTransition {
        /// The order's current status (`pending`, `shipped`, `cancelled`...),
        /// or, while its saga gives everything back, how it will end (`being
        /// cancelled`, `failing`): words for "the order is ...", never a sentence.
        status: String,
        /// What was asked.
        action: &'static str,
    },
    /// `POST /orders` without an `Idempotency-Key` header.
    #[error("send an Idempotency-Key header (1 to 255 visible characters)")]
    IdempotencyKeyRequired,
    /// The key was used with another request body.
    #[error("this Idempotency-Key was used with another request")]
    IdempotencyKeyReused,
    /// The first request with this key is still running.
    #[error("a request with this Idempotency-Key is still running; retry later")]
    IdempotencyKeyInUse,
    /// The cart changed while the order was being placed, twice in a row
    /// (another order took it, or it was replaced): nothing was ordered.
    #[error("the cart changed while the order was placed: look at it and order again")]
    CartChanged,
    /// The card was refused before the order was placed.
    #[error("the card was refused: {0}")]
    CardRejected(String),
    /// Invalid input, no caller or the wrong one, an outage (of the
    /// database or of a module it calls), a bug.
    #[error("orders: {0}")]
    Common(#[from] Failure),
}

impl ProblemCode for OrderError {
    fn status(&self) -> u16 {
        match self {
            OrderError::NotFound => 404,
            OrderError::IdempotencyKeyReused => 422,
            OrderError::InvalidTransition { .. }
            | OrderError::IdempotencyKeyInUse
            | OrderError::CartChanged => 409,
            OrderError::IdempotencyKeyRequired => 400,
            OrderError::CardRejected(_) => 402,
            OrderError::Common(failure) => failure.status(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            OrderError::NotFound => "order_not_found",
            OrderError::InvalidTransition { .. } => "invalid_order_transition",
            OrderError::IdempotencyKeyRequired => "idempotency_key_required",
            OrderError::IdempotencyKeyReused => "idempotency_key_reused",
            OrderError::IdempotencyKeyInUse => "idempotency_key_in_use",
            OrderError::CartChanged => "cart_changed",
            OrderError::CardRejected(_) => "card_rejected",
            OrderError::Common(failure) => failure.code("order_unavailable"),
        }
    }

    fn failure(&self) -> Option<&Failure> {
        match self {
            OrderError::Common(failure) => Some(failure),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            OrderError::IdempotencyKeyInUse => Some(1),
            other => other.failure().and_then(Failure::retry_after),
        }
    }

    fn decline_code(&self) -> Option<String> {
        match self {
            OrderError::CardRejected(code) => Some(code.clone()),
            _ => None,
        }
    }
}
