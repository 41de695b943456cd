//! The error of a database call (no connection, or the query failed),
//! whether retrying may help, and its one mapping to a gRPC status.

use shop_proto::error_code::ErrorCode;
use tokio_postgres::error::SqlState;

/// A failed database call.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
}

impl DbError {
    /// True when retrying later may succeed: no connection, a lost or
    /// timed-out connection, a serialization failure or deadlock, a lock or
    /// statement timeout (the transaction was rolled back, so nothing
    /// happened), or the server shutting down. A bad statement or a value that does not convert
    /// is not transient: retrying it would fail the same way. The gRPC edge
    /// uses this to choose UNAVAILABLE or INTERNAL; the inbox does not: it
    /// retries every database error in place (see `inbox/worker.rs`), because a
    /// database problem is never the message's fault.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Pool(_) => true,
            Self::Query(e) => match e.code() {
                Some(code) => {
                    *code == SqlState::T_R_SERIALIZATION_FAILURE
                        || *code == SqlState::T_R_DEADLOCK_DETECTED
                        || *code == SqlState::LOCK_NOT_AVAILABLE // lock_timeout
                        || *code == SqlState::QUERY_CANCELED // statement_timeout, cancel
                        || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
                        || code.code().starts_with("08") // connection exception
                        || code.code().starts_with("57P") // operator intervention (shutdown)
                        || code.code().starts_with("53") // insufficient resources
                }
                None => e.is_closed() || caused_by_io(e),
            },
        }
    }
}

impl DbError {
    /// The status for a failed database call: UNAVAILABLE when retrying may
    /// help, else INTERNAL with no internal text (the cause is logged here, once).
    pub fn to_status(&self) -> tonic::Status {
        if self.is_transient() {
            tracing::warn!(error = %self, "database unavailable");
            ErrorCode::Unavailable.status(
                tonic::Code::Unavailable,
                "database unavailable, retry later",
            )
        } else {
            tracing::error!(error = %self, "internal error");
            ErrorCode::Internal.status(tonic::Code::Internal, "internal error")
        }
    }
}

fn caused_by_io(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    e.to_string().contains("timeout")
}

/// Lets `?` turn a driver or pool error into `$error` through its
/// `From<DbError>`: the one place these two conversions are written, for
/// every error type that wraps a [`DbError`].
#[macro_export]
macro_rules! from_db_errors {
    ($error:ty) => {
        impl From<$crate::deadpool_postgres::tokio_postgres::Error> for $error {
            fn from(e: $crate::deadpool_postgres::tokio_postgres::Error) -> Self {
                $crate::DbError::from(e).into()
            }
        }

        impl From<$crate::deadpool_postgres::PoolError> for $error {
            fn from(e: $crate::deadpool_postgres::PoolError) -> Self {
                $crate::DbError::from(e).into()
            }
        }
    };
}
