//! The one mapping of database failures to module errors, and the typed
//! abort of a transaction: a module's code says what went wrong in its own
//! error type, and the wording of "the database cannot answer" is the same
//! in every module (503 for an outage, 500 for anything else).

use diesel::result::Error as DieselError;
use kernel::ModuleError;

use crate::{Object, Pool, PoolError};

/// A connection from `module`'s pool, or `module`'s "unavailable" error
/// when none comes within the pool's timeout.
///
/// # Errors
/// [`ModuleError::unavailable`] when the pool cannot hand out a connection.
pub async fn checkout<E: ModuleError>(pool: &Pool, module: &'static str) -> Result<Object, E> {
    crate::connection(pool, module)
        .await
        .map_err(|e| pool_failure(module, e))
}

/// `module`'s error for a pool that handed out no connection (logged).
pub fn pool_failure<E: ModuleError>(module: &str, error: PoolError) -> E {
    tracing::warn!(error = %error, "{module} database unavailable");
    E::unavailable(format!("the {module} database is unavailable"))
}

/// `module`'s error for a failed statement: unavailable when the database
/// lost its connection or was too slow ([`crate::unavailable_reason`]),
/// unexpected otherwise.
pub fn query_failure<E: ModuleError>(module: &str, error: DieselError) -> E {
    match crate::unavailable_reason(&error) {
        Some(reason) => E::unavailable(format!("the {module} database {reason}")),
        None => E::unexpected(format!("{module} database error: {error}")),
    }
}

/// Why a transaction ended without committing: a statement failed, or the
/// work refused with the module's own error. `?` on a diesel result inside
/// the transaction gives the first; `Err(Abort::Refuse(e))` the second.
#[derive(Debug)]
pub enum Abort<E> {
    /// A statement failed.
    Db(DieselError),
    /// The work refused, with this error; nothing it wrote is kept.
    Refuse(E),
}

impl<E> From<DieselError> for Abort<E> {
    fn from(error: DieselError) -> Abort<E> {
        Abort::Db(error)
    }
}

impl<E: ModuleError> Abort<E> {
    /// The module error the caller answers with.
    pub fn into_error(self, module: &str) -> E {
        match self {
            Abort::Db(error) => query_failure(module, error),
            Abort::Refuse(error) => error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Failed {
        Unavailable(String),
        Unexpected(String),
        Refused,
    }

    impl ModuleError for Failed {
        fn unavailable(reason: String) -> Failed {
            Failed::Unavailable(reason)
        }
        fn unexpected(detail: String) -> Failed {
            Failed::Unexpected(detail)
        }
    }

    #[test]
    fn a_lost_connection_is_unavailable_and_anything_else_unexpected() {
        let lost = DieselError::DatabaseError(
            diesel::result::DatabaseErrorKind::ClosedConnection,
            Box::new("server closed the connection".to_owned()),
        );
        assert_eq!(
            query_failure::<Failed>("shop", lost),
            Failed::Unavailable("the shop database lost its connection".into())
        );
        assert_eq!(
            query_failure::<Failed>("shop", DieselError::NotFound),
            Failed::Unexpected("shop database error: Record not found".into())
        );
    }

    #[test]
    fn an_abort_answers_with_the_refusal_or_the_database_failure() {
        assert_eq!(
            Abort::Refuse(Failed::Refused).into_error("shop"),
            Failed::Refused
        );
        let failed = Abort::<Failed>::from(DieselError::NotFound).into_error("shop");
        assert!(matches!(failed, Failed::Unexpected(_)));
    }
}
