//! [`PaymentError`]: the one error type of the payment contract.

use kernel::{Failure, FieldError, ProblemBody, ProblemCode};

use crate::PaymentStatus;

/// Everything a payment call can fail with, in process or over HTTP: the
/// payment module's own refusals, and the failures every module shares.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The card was refused; the provider's reason (`card_declined`,
    /// `insufficient_funds`, `incorrect_number`...).
    #[error("the card was declined ({0})")]
    Declined(String),
    /// No such payment (or not the caller's).
    #[error("no such payment")]
    NotFound,
    /// The order already has a payment for another amount or card.
    #[error("the order already has a different payment")]
    Conflict,
    /// The payment is not in a state that allows this; its current status.
    #[error("the payment is {0}")]
    InvalidTransition(PaymentStatus),
    /// Invalid input, no caller or the wrong one, an outage (of the module
    /// or the provider: for an authorization the outcome is then unknown
    /// until it is asked again), a bug.
    #[error("payment: {0}")]
    Common(#[from] Failure),
}

impl PaymentError {
    /// Whether asking again later may succeed (the outcome is unknown).
    pub fn is_transient(&self) -> bool {
        self.failure().is_some_and(Failure::is_transient)
    }

    /// Rebuilds the error a remote payment module answered with.
    pub fn from_problem(problem: ProblemBody) -> PaymentError {
        match problem.code.as_str() {
            "payment_declined" => match problem.decline_code {
                Some(code) => PaymentError::Declined(code),
                None => Failure::Unexpected("a decline without its decline_code".to_owned()).into(),
            },
            "payment_not_found" => PaymentError::NotFound,
            "payment_conflict" => PaymentError::Conflict,
            "invalid_payment_transition" => {
                match problem.current_status.as_deref().map(str::parse) {
                    Some(Ok(status)) => PaymentError::InvalidTransition(status),
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

impl ProblemCode for PaymentError {
    fn status(&self) -> u16 {
        match self {
            PaymentError::Declined(_) => 402,
            PaymentError::NotFound => 404,
            PaymentError::Conflict | PaymentError::InvalidTransition(_) => 409,
            PaymentError::Common(failure) => failure.status(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            PaymentError::Declined(_) => "payment_declined",
            PaymentError::NotFound => "payment_not_found",
            PaymentError::Conflict => "payment_conflict",
            PaymentError::InvalidTransition(_) => "invalid_payment_transition",
            PaymentError::Common(failure) => failure.code("payment_unavailable"),
        }
    }

    fn failure(&self) -> Option<&Failure> {
        match self {
            PaymentError::Common(failure) => Some(failure),
            _ => None,
        }
    }

    fn field_errors(&self) -> Vec<FieldError> {
        match self {
            PaymentError::Declined(reason) => vec![FieldError::new("card", reason.clone())],
            PaymentError::Common(failure) => failure.field_errors(),
            _ => Vec::new(),
        }
    }

    fn current_status(&self) -> Option<&'static str> {
        match self {
            PaymentError::InvalidTransition(status) => Some(status.as_str()),
            _ => None,
        }
    }

    fn decline_code(&self) -> Option<String> {
        match self {
            PaymentError::Declined(code) => Some(code.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(status: u16, code: &str, detail: &str) -> ProblemBody {
        ProblemBody::new(status, code, "title", Some(detail.to_owned()))
    }

    #[test]
    fn facts_travel_as_typed_members_and_detail_is_never_read() {
        // The wording of `detail` is for people: it can say anything.
        let mut refused = problem(409, "invalid_payment_transition", "the payment is captured");
        refused.current_status = Some("refunded".to_owned());
        assert_eq!(
            PaymentError::from_problem(refused),
            PaymentError::InvalidTransition(PaymentStatus::Refunded)
        );
        let mut declined = problem(402, "payment_declined", "no");
        declined.decline_code = Some("insufficient_funds".to_owned());
        assert_eq!(
            PaymentError::from_problem(declined),
            PaymentError::Declined("insufficient_funds".to_owned())
        );
        // Without the member (or with a status the contract lacks) the
        // answer is not understood, rather than guessed from the text.
        let bare = problem(409, "invalid_payment_transition", "the payment is captured");
        assert!(matches!(
            PaymentError::from_problem(bare),
            PaymentError::Common(Failure::Unexpected(_))
        ));
        let mut unknown = problem(409, "invalid_payment_transition", "x");
        unknown.current_status = Some("lost".to_owned());
        assert!(matches!(
            PaymentError::from_problem(unknown),
            PaymentError::Common(Failure::Unexpected(_))
        ));
    }

    #[test]
    fn the_problem_carries_what_the_client_reads() {
        let error = PaymentError::InvalidTransition(PaymentStatus::Voided);
        assert_eq!(error.current_status(), Some("voided"));
        let error = PaymentError::Declined("card_declined".to_owned());
        assert_eq!(error.decline_code().as_deref(), Some("card_declined"));
        assert_eq!(error.current_status(), None);
    }
}
