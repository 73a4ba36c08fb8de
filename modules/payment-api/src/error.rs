//! [`PaymentError`]: the one error type of the payment contract.

use kernel::{Degradation, FieldError, ModuleError, ProblemBody, ProblemCode};

use crate::PaymentStatus;

/// Everything a payment call can fail with, in process or over HTTP.
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
    /// Well-formed but invalid fields.
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    /// The call needs a signed-in caller.
    #[error("this needs a signed-in caller")]
    Unauthenticated,
    /// The caller may not do this.
    #[error("this is for the shop's modules and admins")]
    Forbidden,
    /// The payment module or the provider cannot answer now; for an
    /// authorization the outcome is unknown until it is asked again.
    #[error("payments are unavailable: {0}")]
    Unavailable(String),
    /// A call to the module in another process was cut short (circuit
    /// open, too many in flight, out of time); no answer was had.
    #[error("{0}")]
    Degraded(Degradation),
    /// A bug or an unexpected answer; details are in the logs.
    #[error("unexpected payment error: {0}")]
    Unexpected(String),
}

impl PaymentError {
    /// Whether asking again later may succeed (the outcome is unknown).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PaymentError::Unavailable(_) | PaymentError::Degraded(_) | PaymentError::Unexpected(_)
        )
    }

    /// Rebuilds the error a remote payment module answered with.
    pub fn from_problem(problem: ProblemBody) -> PaymentError {
        let detail = problem
            .detail
            .clone()
            .unwrap_or_else(|| problem.title.clone());
        if let Some(degradation) = Degradation::from_code(&problem.code, 1) {
            return PaymentError::Degraded(degradation);
        }
        match problem.code.as_str() {
            "payment_declined" => match problem.decline_code {
                Some(code) => PaymentError::Declined(code),
                None => PaymentError::Unexpected("a decline without its decline_code".to_owned()),
            },
            "payment_not_found" => PaymentError::NotFound,
            "payment_conflict" => PaymentError::Conflict,
            "invalid_payment_transition" => {
                match problem.current_status.as_deref().map(str::parse) {
                    Some(Ok(status)) => PaymentError::InvalidTransition(status),
                    _ => PaymentError::Unexpected(format!(
                        "a refused transition with current_status {:?}",
                        problem.current_status
                    )),
                }
            }
            "validation_failed" => PaymentError::Validation(problem.errors),
            "unauthenticated" | "invalid_token" => PaymentError::Unauthenticated,
            "forbidden" => PaymentError::Forbidden,
            _ if problem.status == 503 => PaymentError::Unavailable(detail),
            code => PaymentError::Unexpected(format!("{} {code}: {detail}", problem.status)),
        }
    }
}

impl ModuleError for PaymentError {
    fn unavailable(reason: String) -> PaymentError {
        PaymentError::Unavailable(reason)
    }

    fn unexpected(detail: String) -> PaymentError {
        PaymentError::Unexpected(detail)
    }
}

impl ProblemCode for PaymentError {
    fn status(&self) -> u16 {
        match self {
            PaymentError::Declined(_) => 402,
            PaymentError::NotFound => 404,
            PaymentError::Conflict | PaymentError::InvalidTransition(_) => 409,
            PaymentError::Validation(_) => 422,
            PaymentError::Unauthenticated => 401,
            PaymentError::Forbidden => 403,
            PaymentError::Unavailable(_) | PaymentError::Degraded(_) => 503,
            PaymentError::Unexpected(_) => 500,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            PaymentError::Declined(_) => "payment_declined",
            PaymentError::NotFound => "payment_not_found",
            PaymentError::Conflict => "payment_conflict",
            PaymentError::InvalidTransition(_) => "invalid_payment_transition",
            PaymentError::Validation(_) => "validation_failed",
            PaymentError::Unauthenticated => "unauthenticated",
            PaymentError::Forbidden => "forbidden",
            PaymentError::Unavailable(_) => "payment_unavailable",
            PaymentError::Degraded(d) => d.code(),
            PaymentError::Unexpected(_) => "internal_error",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            PaymentError::Degraded(d) => Some(d.retry_after()),
            _ => None,
        }
    }

    fn field_errors(&self) -> Vec<FieldError> {
        match self {
            PaymentError::Declined(reason) => vec![FieldError::new("card", reason.clone())],
            PaymentError::Validation(errors) => errors.clone(),
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
            PaymentError::Unexpected(_)
        ));
        let mut unknown = problem(409, "invalid_payment_transition", "x");
        unknown.current_status = Some("lost".to_owned());
        assert!(matches!(
            PaymentError::from_problem(unknown),
            PaymentError::Unexpected(_)
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
