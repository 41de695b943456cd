//! The error of a database call: no connection, or the query failed.

/// A failed database call.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
}

impl DbError {
    /// True when retrying later may succeed (no connection, connection lost,
    /// serialization failure, deadlock).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Pool(_) => true,
            Self::Query(e) => {
                e.is_closed()
                    || e.code().is_some_and(|c| {
                        *c == tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
                            || *c == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                            || c.code().starts_with("08")
                            || c.code().starts_with("57P")
                    })
                    || e.as_db_error().is_none() && e.code().is_none()
            }
        }
    }
}
