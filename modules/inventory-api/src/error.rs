//! [`InventoryError`]: the one error type of the inventory contract.

use kernel::{Failure, FieldError, ProblemBody, ProblemCode};

use crate::{OrderId, ReservationStatus};

/// Everything an inventory call can fail with, in process or over HTTP:
/// the inventory's own refusals, and the failures every module shares.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    /// Not enough available stock for these SKUs (sorted).
    #[error("insufficient stock for {}", .0.join(", "))]
    InsufficientStock(Vec<String>),
    /// No reservation for this order.
    #[error("no reservation for order `{0}`")]
    ReservationNotFound(OrderId),
    /// The order already holds a reservation with other lines.
    #[error("order `{0}` already holds a different reservation")]
    ReservationConflict(OrderId),
    /// The reservation is not in a state that allows this.
    #[error("the reservation of order `{order}` is {}", status.as_str())]
    InvalidTransition {
        /// The order whose reservation was to move.
        order: OrderId,
        /// Its current status.
        status: ReservationStatus,
    },
    /// An `Idempotency-Key` outside its form (1 to 255 visible ASCII
    /// characters): answered as `POST /orders` answers one,
    /// `idempotency_key_required` (400).
    #[error("send an Idempotency-Key of 1 to 255 visible ASCII characters, or none")]
    InvalidIdempotencyKey,
    /// The SKU's stock was adjusted with this `Idempotency-Key` by another
    /// quantity or reason: not the same adjustment asked again.
    #[error("this Idempotency-Key was used with another adjustment of this SKU")]
    IdempotencyKeyReused,
    /// Invalid input, no caller or the wrong one, an outage, a bug.
    #[error("inventory: {0}")]
    Common(#[from] Failure),
}

impl ProblemCode for InventoryError {
    fn status(&self) -> u16 {
        match self {
            InventoryError::InsufficientStock(_) => 409,
            InventoryError::ReservationNotFound(_) => 404,
            InventoryError::ReservationConflict(_) | InventoryError::InvalidTransition { .. } => {
                409
            }
            InventoryError::InvalidIdempotencyKey => 400,
            InventoryError::IdempotencyKeyReused => 422,
            InventoryError::Common(failure) => failure.status(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            InventoryError::InsufficientStock(_) => "insufficient_stock",
            InventoryError::ReservationNotFound(_) => "reservation_not_found",
            InventoryError::ReservationConflict(_) => "reservation_conflict",
            InventoryError::InvalidTransition { .. } => "invalid_reservation_transition",
            InventoryError::InvalidIdempotencyKey => "idempotency_key_required",
            InventoryError::IdempotencyKeyReused => "idempotency_key_reused",
            InventoryError::Common(failure) => failure.code("inventory_unavailable"),
        }
    }

    fn failure(&self) -> Option<&Failure> {
        match self {
            InventoryError::Common(failure) => Some(failure),
            _ => None,
        }
    }

    fn field_errors(&self) -> Vec<FieldError> {
        match self {
            InventoryError::InsufficientStock(skus) => skus
                .iter()
                .map(|sku| FieldError::new("sku", sku.clone()))
                .collect(),
            InventoryError::Common(failure) => failure.field_errors(),
            _ => Vec::new(),
        }
    }

    fn current_status(&self) -> Option<&'static str> {
        match self {
            InventoryError::InvalidTransition { status, .. } => Some(status.as_str()),
            _ => None,
        }
    }
}

impl InventoryError {
    /// Rebuilds the error a remote inventory answered with; `order` is the
    /// order the request was about. Short SKUs travel as field errors named
    /// `sku`.
    pub fn from_problem(problem: ProblemBody, order: Option<OrderId>) -> InventoryError {
        match (problem.code.as_str(), order) {
            ("insufficient_stock", _) => InventoryError::InsufficientStock(
                problem.errors.into_iter().map(|e| e.message).collect(),
            ),
            ("reservation_not_found", Some(id)) => InventoryError::ReservationNotFound(id),
            ("reservation_conflict", Some(id)) => InventoryError::ReservationConflict(id),
            ("idempotency_key_required", _) => InventoryError::InvalidIdempotencyKey,
            ("idempotency_key_reused", _) => InventoryError::IdempotencyKeyReused,
            ("invalid_reservation_transition", Some(id)) => {
                match problem.current_status.as_deref().map(str::parse) {
                    Some(Ok(status)) => InventoryError::InvalidTransition { order: id, status },
                    _ => Failure::Unexpected(format!(
                        "a refused transition with current_status {:?}",
                        problem.current_status
                    ))
                    .into(),
                }
            }
            _ => Failure::from_problem(problem).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_status_travels_as_a_typed_member_and_detail_is_never_read() {
        let order = OrderId::generate();
        let error = InventoryError::InvalidTransition {
            order,
            status: ReservationStatus::Returned,
        };
        assert_eq!(error.current_status(), Some("returned"));
        let mut problem = ProblemBody::new(
            409,
            "invalid_reservation_transition",
            "title",
            Some("the reservation is committed".to_owned()),
        );
        problem.current_status = Some("returned".to_owned());
        assert_eq!(
            InventoryError::from_problem(problem.clone(), Some(order)),
            error
        );
        problem.current_status = None;
        assert!(matches!(
            InventoryError::from_problem(problem, Some(order)),
            InventoryError::Common(Failure::Unexpected(_))
        ));
    }
}
