//! [`Failure`]: the part of every module's error type that is the same in
//! all of them.

use crate::error::{Degradation, FieldError, ProblemBody};

/// What any module's call can fail with, whatever the module. Each module's
/// error type embeds it as one variant (`CatalogError::Common`) beside its
/// own refusals, so that these answers (status, problem code,
/// `Retry-After`, field errors) and their rebuilding from a remote
/// module's problem are written once, here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Well-formed but invalid fields (422).
    #[error("the request is invalid: {}", summary(.0))]
    Validation(Vec<FieldError>),
    /// The cursor was not handed out by this list (400).
    #[error("the cursor is not valid for this list")]
    InvalidCursor,
    /// The call needs a signed-in caller (401).
    #[error("this needs a signed-in caller")]
    Unauthenticated,
    /// The caller's roles do not allow the call (403).
    #[error("the caller's roles do not allow this")]
    Forbidden,
    /// The resource is no longer the version the request's `If-Match`
    /// names: changed since the caller read it (412).
    #[error("the resource changed since the version named in If-Match")]
    PreconditionFailed,
    /// The module (its database, or its process) cannot answer now (503).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A call to a module in another process was cut short (circuit open,
    /// too many in flight, out of time); no answer was had (503).
    #[error("{0}")]
    Degraded(Degradation),
    /// A bug or an answer not understood; details are in the logs (500).
    #[error("unexpected: {0}")]
    Unexpected(String),
}

fn summary(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Failure {
    /// The HTTP status it answers with.
    pub fn status(&self) -> u16 {
        match self {
            Failure::Validation(_) => 422,
            Failure::InvalidCursor => 400,
            Failure::Unauthenticated => 401,
            Failure::Forbidden => 403,
            Failure::PreconditionFailed => 412,
            Failure::Unavailable(_) | Failure::Degraded(_) => 503,
            Failure::Unexpected(_) => 500,
        }
    }

    /// Its problem code; `unavailable` is the module's own
    /// (`catalog_unavailable`), so that a client sees which module is down.
    pub fn code(&self, unavailable: &'static str) -> &'static str {
        match self {
            Failure::Validation(_) => "validation_failed",
            Failure::InvalidCursor => "invalid_cursor",
            Failure::Unauthenticated => "unauthenticated",
            Failure::Forbidden => "forbidden",
            Failure::PreconditionFailed => "precondition_failed",
            Failure::Unavailable(_) => unavailable,
            Failure::Degraded(d) => d.code(),
            Failure::Unexpected(_) => "internal_error",
        }
    }

    /// Seconds to wait before asking again, when that is known.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Failure::Degraded(d) => Some(d.retry_after()),
            _ => None,
        }
    }

    /// The invalid fields of a 422.
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            Failure::Validation(errors) => errors.clone(),
            _ => Vec::new(),
        }
    }

    /// Whether asking again later may succeed (the outcome is unknown).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Failure::Unavailable(_) | Failure::Degraded(_) | Failure::Unexpected(_)
        )
    }

    /// Rebuilds, from a remote module's problem, the failure it stands for;
    /// an answer that is none of them is [`Failure::Unexpected`]. A module
    /// matches its own codes first and hands the rest here.
    pub fn from_problem(problem: ProblemBody) -> Failure {
        if let Some(degradation) = Degradation::from_code(&problem.code, 1) {
            return Failure::Degraded(degradation);
        }
        let detail = problem.detail.unwrap_or(problem.title);
        match problem.code.as_str() {
            "validation_failed" => Failure::Validation(problem.errors),
            "invalid_cursor" => Failure::InvalidCursor,
            "unauthenticated" | "invalid_token" => Failure::Unauthenticated,
            "forbidden" => Failure::Forbidden,
            "precondition_failed" => Failure::PreconditionFailed,
            _ if problem.status == 503 => Failure::Unavailable(detail),
            code => Failure::Unexpected(format!("{} {code}: {detail}", problem.status)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(status: u16, code: &str) -> ProblemBody {
        ProblemBody::new(status, code, "title", Some("detail".to_owned()))
    }

    #[test]
    fn every_failure_survives_the_wire() {
        let failures = [
            Failure::Validation(vec![FieldError::new("name", "is empty")]),
            Failure::InvalidCursor,
            Failure::Unauthenticated,
            Failure::Forbidden,
            Failure::Unavailable("detail".to_owned()),
            Failure::Degraded(Degradation::Overloaded),
        ];
        for failure in failures {
            let mut answer = problem(failure.status(), failure.code("x_unavailable"));
            answer.errors = failure.field_errors();
            assert_eq!(Failure::from_problem(answer), failure);
        }
    }

    #[test]
    fn an_answer_not_understood_is_unexpected_and_names_its_code() {
        let failure = Failure::from_problem(problem(418, "teapot"));
        assert_eq!(
            failure,
            Failure::Unexpected("418 teapot: detail".to_owned())
        );
        assert_eq!(failure.status(), 500);
        assert_eq!(failure.code("x_unavailable"), "internal_error");
        assert!(failure.is_transient());
    }

    #[test]
    fn the_module_names_its_own_outage() {
        let down = Failure::Unavailable("the database did not answer".to_owned());
        assert_eq!(down.code("catalog_unavailable"), "catalog_unavailable");
        assert_eq!(down.status(), 503);
    }
}
