//! [`InventoryError`]: the one error type of the inventory contract.

use kernel::{Degradation, FieldError, ModuleError, ProblemBody, ProblemCode};

use crate::{OrderId, ReservationStatus};

/// Everything an inventory call can fail with, in process or over HTTP.
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
        /// The order.
        order: OrderId,
        /// Its current status.
        status: ReservationStatus,
    },
    /// Well-formed but invalid fields.
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    /// The cursor was not handed out by this list.
    #[error("the cursor is not valid for this list")]
    InvalidCursor,
    /// The call needs a signed-in caller.
    #[error("this needs a signed-in admin")]
    Unauthenticated,
    /// The caller is not an admin.
    #[error("this is for admins")]
    Forbidden,
    /// The inventory cannot answer now.
    #[error("the inventory is unavailable: {0}")]
    Unavailable(String),
    /// A call to the module in another process was cut short (circuit
    /// open, too many in flight, out of time); no answer was had.
    #[error("{0}")]
    Degraded(Degradation),
    /// A bug or an unexpected answer; details are in the logs.
    #[error("unexpected inventory error: {0}")]
    Unexpected(String),
}

impl ModuleError for InventoryError {
    fn unavailable(reason: String) -> InventoryError {
        InventoryError::Unavailable(reason)
    }

    fn unexpected(detail: String) -> InventoryError {
        InventoryError::Unexpected(detail)
    }
}

impl ProblemCode for InventoryError {
    fn status(&self) -> u16 {
        match self {
            InventoryError::InsufficientStock(_) => 409,
            InventoryError::ReservationNotFound(_) => 404,
            InventoryError::ReservationConflict(_) | InventoryError::InvalidTransition { .. } => {
                409
            }
            InventoryError::Validation(_) => 422,
            InventoryError::InvalidCursor => 400,
            InventoryError::Unauthenticated => 401,
            InventoryError::Forbidden => 403,
            InventoryError::Unavailable(_) => 503,
            InventoryError::Degraded(_) => 503,
            InventoryError::Unexpected(_) => 500,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            InventoryError::InsufficientStock(_) => "insufficient_stock",
            InventoryError::ReservationNotFound(_) => "reservation_not_found",
            InventoryError::ReservationConflict(_) => "reservation_conflict",
            InventoryError::InvalidTransition { .. } => "invalid_reservation_transition",
            InventoryError::Validation(_) => "validation_failed",
            InventoryError::InvalidCursor => "invalid_cursor",
            InventoryError::Unauthenticated => "unauthenticated",
            InventoryError::Forbidden => "forbidden",
            InventoryError::Unavailable(_) => "inventory_unavailable",
            InventoryError::Degraded(d) => d.code(),
            InventoryError::Unexpected(_) => "internal_error",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            InventoryError::Degraded(d) => Some(d.retry_after()),
            _ => None,
        }
    }

    fn field_errors(&self) -> Vec<FieldError> {
        match self {
            InventoryError::InsufficientStock(skus) => skus
                .iter()
                .map(|sku| FieldError::new("sku", sku.clone()))
                .collect(),
            InventoryError::Validation(errors) => errors.clone(),
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
        let detail = problem
            .detail
            .clone()
            .unwrap_or_else(|| problem.title.clone());
        if let Some(degradation) = Degradation::from_code(&problem.code, 1) {
            return InventoryError::Degraded(degradation);
        }
        match (problem.code.as_str(), order) {
            ("insufficient_stock", _) => InventoryError::InsufficientStock(
                problem.errors.into_iter().map(|e| e.message).collect(),
            ),
            ("reservation_not_found", Some(id)) => InventoryError::ReservationNotFound(id),
            ("reservation_conflict", Some(id)) => InventoryError::ReservationConflict(id),
            ("invalid_reservation_transition", Some(id)) => {
                match problem.current_status.as_deref().map(str::parse) {
                    Some(Ok(status)) => InventoryError::InvalidTransition { order: id, status },
                    _ => InventoryError::Unexpected(format!(
                        "a refused transition with current_status {:?}",
                        problem.current_status
                    )),
                }
            }
            ("validation_failed", _) => InventoryError::Validation(problem.errors),
            ("invalid_cursor", _) => InventoryError::InvalidCursor,
            ("unauthenticated" | "invalid_token", _) => InventoryError::Unauthenticated,
            ("forbidden", _) => InventoryError::Forbidden,
            (_, _) if problem.status == 503 => InventoryError::Unavailable(detail),
            (code, _) => InventoryError::Unexpected(format!("{} {code}: {detail}", problem.status)),
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
            InventoryError::Unexpected(_)
        ));
    }
}
