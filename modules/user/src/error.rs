//! [`AuthFlowError`], and how pool, database and hashing failures become a
//! [`UserError`].

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use kernel::{Failure, FieldError, ProblemCode};
use user_api::UserError;

use crate::password::HashError;
use crate::repo;

/// Why a sign-in, refresh or password change failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFlowError {
    /// Unknown email or wrong password: the same answer for both.
    #[error("the email or password is wrong")]
    InvalidCredentials,
    /// Unknown, expired, spent or revoked refresh token.
    #[error("the refresh token is not valid")]
    InvalidRefreshToken,
    /// The password was right, but the account is disabled.
    #[error("this account is disabled")]
    AccountDisabled,
    /// Something else the user module reports.
    #[error(transparent)]
    User(#[from] UserError),
}

impl From<Failure> for AuthFlowError {
    fn from(failure: Failure) -> AuthFlowError {
        AuthFlowError::User(failure.into())
    }
}

impl ProblemCode for AuthFlowError {
    fn status(&self) -> u16 {
        match self {
            AuthFlowError::InvalidCredentials | AuthFlowError::InvalidRefreshToken => 401,
            AuthFlowError::AccountDisabled => 403,
            AuthFlowError::User(e) => e.status(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            AuthFlowError::InvalidCredentials => "invalid_credentials",
            AuthFlowError::InvalidRefreshToken => "invalid_refresh_token",
            AuthFlowError::AccountDisabled => "account_disabled",
            AuthFlowError::User(e) => e.code(),
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            AuthFlowError::User(e) => e.retry_after(),
            _ => None,
        }
    }

    fn field_errors(&self) -> Vec<FieldError> {
        match self {
            AuthFlowError::User(e) => e.field_errors(),
            _ => Vec::new(),
        }
    }
}

/// A failed statement, as this module answers it (`db::query_failure`:
/// 503 when the database cannot answer now, 500 otherwise).
pub(crate) fn database(error: DieselError) -> UserError {
    db::query_failure(crate::NAME, error)
}

/// As [`database`], but a clash on the unique email is `EmailTaken`.
pub(crate) fn taken_or(error: DieselError) -> UserError {
    match &error {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
            if info.constraint_name() == Some(repo::EMAIL_UNIQUE) =>
        {
            UserError::EmailTaken
        }
        _ => database(error),
    }
}

/// A full hashing queue is `Busy` (503 with `Retry-After`); a failed hash
/// is `Unexpected`.
pub(crate) fn hash_error(e: HashError) -> UserError {
    match e {
        HashError::Busy => UserError::Busy,
        HashError::Failed(e) => UserError::Common(Failure::Unexpected(e)),
    }
}
