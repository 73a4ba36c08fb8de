//! [`UserError`]: the one error type of the user contract.

use kernel::{Degradation, FieldError, ModuleError, ProblemBody, ProblemCode};

use crate::UserId;

/// Everything a user-module call can fail with, in process or over HTTP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// No such user, or not one the caller may see.
    #[error("user `{0}` does not exist")]
    NotFound(UserId),
    /// Another account has this email address.
    #[error("an account with this email address already exists")]
    EmailTaken,
    /// Well-formed but invalid fields.
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    /// The cursor was not handed out by this list.
    #[error("the cursor is not valid for this list")]
    InvalidCursor,
    /// The call needs a signed-in caller.
    #[error("this needs a signed-in caller")]
    Unauthenticated,
    /// The caller lacks the role for this call.
    #[error("this is for admins")]
    Forbidden,
    /// The user module cannot answer now.
    #[error("the user module is unavailable: {0}")]
    Unavailable(String),
    /// Too many password checks are queued already: retry in a second.
    #[error("too many password checks at once; retry shortly")]
    Busy,
    /// A call to the module in another process was cut short (circuit
    /// open, too many in flight, out of time); no answer was had.
    #[error("{0}")]
    Degraded(Degradation),
    /// A bug or an unexpected answer; details are in the logs.
    #[error("unexpected user module error: {0}")]
    Unexpected(String),
}

impl ModuleError for UserError {
    fn unavailable(reason: String) -> UserError {
        UserError::Unavailable(reason)
    }

    fn unexpected(detail: String) -> UserError {
        UserError::Unexpected(detail)
    }
}

impl ProblemCode for UserError {
    fn status(&self) -> u16 {
        match self {
            UserError::NotFound(_) => 404,
            UserError::EmailTaken => 409,
            UserError::Validation(_) => 422,
            UserError::InvalidCursor => 400,
            UserError::Unauthenticated => 401,
            UserError::Forbidden => 403,
            UserError::Unavailable(_) => 503,
            UserError::Busy => 503,
            UserError::Degraded(_) => 503,
            UserError::Unexpected(_) => 500,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            UserError::NotFound(_) => "user_not_found",
            UserError::EmailTaken => "email_taken",
            UserError::Validation(_) => "validation_failed",
            UserError::InvalidCursor => "invalid_cursor",
            UserError::Unauthenticated => "unauthenticated",
            UserError::Forbidden => "forbidden",
            UserError::Unavailable(_) => "user_unavailable",
            UserError::Busy => "password_hashing_busy",
            UserError::Degraded(d) => d.code(),
            UserError::Unexpected(_) => "internal_error",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            UserError::Degraded(d) => Some(d.retry_after()),
            UserError::Busy => Some(1),
            _ => None,
        }
    }

    fn field_errors(&self) -> Vec<FieldError> {
        match self {
            UserError::Validation(errors) => errors.clone(),
            _ => Vec::new(),
        }
    }
}

impl UserError {
    /// Rebuilds the error a remote user module answered with; `user` is the
    /// id the request was about.
    pub fn from_problem(problem: ProblemBody, user: Option<UserId>) -> UserError {
        let detail = problem.detail.unwrap_or(problem.title);
        if let Some(degradation) = Degradation::from_code(&problem.code, 1) {
            return UserError::Degraded(degradation);
        }
        match (problem.code.as_str(), user) {
            ("user_not_found", Some(id)) => UserError::NotFound(id),
            ("email_taken", _) => UserError::EmailTaken,
            ("validation_failed", _) => UserError::Validation(problem.errors),
            ("invalid_cursor", _) => UserError::InvalidCursor,
            ("unauthenticated" | "invalid_token", _) => UserError::Unauthenticated,
            ("forbidden", _) => UserError::Forbidden,
            ("password_hashing_busy", _) => UserError::Busy,
            (_, _) if problem.status == 503 => UserError::Unavailable(detail),
            (code, _) => UserError::Unexpected(format!("{} {code}: {detail}", problem.status)),
        }
    }
}
