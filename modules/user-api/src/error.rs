//! [`UserError`]: the one error type of the user contract.

use kernel::{Failure, ProblemBody, ProblemCode};

use crate::UserId;

/// Everything a user-module call can fail with, in process or over HTTP:
/// the user module's own refusals, and the failures every module shares.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// No such user, or not one the caller may see.
    #[error("user `{0}` does not exist")]
    NotFound(UserId),
    /// Another account has this email address.
    #[error("an account with this email address already exists")]
    EmailTaken,
    /// Too many password checks are queued already: retry in a second.
    #[error("too many password checks at once; retry shortly")]
    Busy,
    /// Invalid input, no caller or the wrong one, an outage, a bug.
    #[error("user: {0}")]
    Common(#[from] Failure),
}

impl ProblemCode for UserError {
    fn status(&self) -> u16 {
        match self {
            UserError::NotFound(_) => 404,
            UserError::EmailTaken => 409,
            UserError::Busy => 503,
            UserError::Common(failure) => failure.status(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            UserError::NotFound(_) => "user_not_found",
            UserError::EmailTaken => "email_taken",
            UserError::Busy => "password_hashing_busy",
            UserError::Common(failure) => failure.code("user_unavailable"),
        }
    }

    fn failure(&self) -> Option<&Failure> {
        match self {
            UserError::Common(failure) => Some(failure),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            UserError::Busy => Some(1),
            other => other.failure().and_then(Failure::retry_after),
        }
    }
}

impl UserError {
    /// Rebuilds the error a remote user module answered with; `user` is the
    /// id the request was about.
    pub fn from_problem(problem: ProblemBody, user: Option<UserId>) -> UserError {
        match (problem.code.as_str(), user) {
            ("user_not_found", Some(id)) => UserError::NotFound(id),
            ("email_taken", _) => UserError::EmailTaken,
            ("password_hashing_busy", _) => UserError::Busy,
            _ => Failure::from_problem(problem).into(),
        }
    }
}
