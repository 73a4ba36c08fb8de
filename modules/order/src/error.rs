//! [`OrderError`]: what the order routes answer when they cannot do what was asked.

use kernel::{Degradation, FieldError, ModuleError, ProblemCode};

/// Everything an order operation can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// No such order (or not the caller's).
    #[error("no such order")]
    NotFound,
    /// Well-formed but invalid input.
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    /// The order is not in a state that allows this.
    #[error("the order is {status}: {action} is not possible")]
    InvalidTransition {
        /// Its status.
        status: String,
        /// What was asked.
        action: &'static str,
    },
    /// The cursor was not handed out by this list.
    #[error("the cursor is not valid for this list")]
    InvalidCursor,
    /// `POST /orders` without an `Idempotency-Key` header.
    #[error("send an Idempotency-Key header (1 to 255 visible characters)")]
    IdempotencyKeyRequired,
    /// The key was used with another request body.
    #[error("this Idempotency-Key was used with another request")]
    IdempotencyKeyReused,
    /// The first request with this key is still running.
    #[error("a request with this Idempotency-Key is still running; retry later")]
    IdempotencyKeyInUse,
    /// The card was refused before the order was placed.
    #[error("the card was refused: {0}")]
    CardRejected(String),
    /// Not signed in.
    #[error("this needs a signed-in user")]
    Unauthenticated,
    /// Not allowed.
    #[error("this is for admins")]
    Forbidden,
    /// A dependency (database, catalog, payments) cannot answer now.
    #[error("orders are unavailable: {0}")]
    Unavailable(String),
    /// A call to another module was cut short.
    #[error("{0}")]
    Degraded(Degradation),
    /// A bug; details are in the logs.
    #[error("unexpected order error: {0}")]
    Unexpected(String),
}

impl ModuleError for OrderError {
    fn unavailable(reason: String) -> OrderError {
        OrderError::Unavailable(reason)
    }

    fn unexpected(detail: String) -> OrderError {
        OrderError::Unexpected(detail)
    }
}

impl ProblemCode for OrderError {
    fn status(&self) -> u16 {
        match self {
            OrderError::NotFound => 404,
            OrderError::Validation(_) | OrderError::IdempotencyKeyReused => 422,
            OrderError::InvalidTransition { .. } | OrderError::IdempotencyKeyInUse => 409,
            OrderError::IdempotencyKeyRequired | OrderError::InvalidCursor => 400,
            OrderError::CardRejected(_) => 402,
            OrderError::Unauthenticated => 401,
            OrderError::Forbidden => 403,
            OrderError::Unavailable(_) | OrderError::Degraded(_) => 503,
            OrderError::Unexpected(_) => 500,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            OrderError::NotFound => "order_not_found",
            OrderError::Validation(_) => "validation_failed",
            OrderError::InvalidTransition { .. } => "invalid_order_transition",
            OrderError::IdempotencyKeyRequired => "idempotency_key_required",
            OrderError::InvalidCursor => "invalid_cursor",
            OrderError::IdempotencyKeyReused => "idempotency_key_reused",
            OrderError::IdempotencyKeyInUse => "idempotency_key_in_use",
            OrderError::CardRejected(_) => "card_rejected",
            OrderError::Unauthenticated => "unauthenticated",
            OrderError::Forbidden => "forbidden",
            OrderError::Unavailable(_) => "order_unavailable",
            OrderError::Degraded(d) => d.code(),
            OrderError::Unexpected(_) => "internal_error",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            OrderError::Degraded(d) => Some(d.retry_after()),
            OrderError::IdempotencyKeyInUse => Some(1),
            _ => None,
        }
    }

    fn field_errors(&self) -> Vec<FieldError> {
        match self {
            OrderError::Validation(errors) => errors.clone(),
            _ => Vec::new(),
        }
    }

    fn decline_code(&self) -> Option<String> {
        match self {
            OrderError::CardRejected(code) => Some(code.clone()),
            _ => None,
        }
    }
}
