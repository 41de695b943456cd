//! Stable machine-readable error codes, carried on gRPC statuses in the
//! `error-code` metadata entry so the gateway can turn them into problem
//! documents without parsing messages.

use tonic::{Code, Status, metadata::MetadataValue};

/// The metadata key that carries the error code.
pub const METADATA_KEY: &str = "error-code";

/// The machine-readable codes shared by services and gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    ValidationFailed,
    InvalidAmount,
    AccountExists,
    AccountNotFound,
    BalanceOverflow,
    IdempotencyKeyReused,
    OrderNotFound,
    OrderNotCancellable,
    OrderNotRefundable,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// All codes, for tables and tests.
    pub const ALL: [ErrorCode; 11] = [
        Self::ValidationFailed,
        Self::InvalidAmount,
        Self::AccountExists,
        Self::AccountNotFound,
        Self::BalanceOverflow,
        Self::IdempotencyKeyReused,
        Self::OrderNotFound,
        Self::OrderNotCancellable,
        Self::OrderNotRefundable,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The stable SCREAMING_SNAKE_CASE spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ValidationFailed => "VALIDATION_FAILED",
            Self::InvalidAmount => "INVALID_AMOUNT",
            Self::AccountExists => "ACCOUNT_EXISTS",
            Self::AccountNotFound => "ACCOUNT_NOT_FOUND",
            Self::BalanceOverflow => "BALANCE_OVERFLOW",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::OrderNotFound => "ORDER_NOT_FOUND",
            Self::OrderNotCancellable => "ORDER_NOT_CANCELLABLE",
            Self::OrderNotRefundable => "ORDER_NOT_REFUNDABLE",
            Self::Unavailable => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
        }
    }

    /// Parses the stable spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// A status with this code in its metadata.
    pub fn status(self, code: Code, message: impl Into<String>) -> Status {
        let mut status = Status::new(code, message);
        status
            .metadata_mut()
            .insert(METADATA_KEY, MetadataValue::from_static(self.as_str()));
        status
    }

    /// The code carried by a status, if any.
    pub fn of(status: &Status) -> Option<Self> {
        let value = status.metadata().get(METADATA_KEY)?.to_str().ok()?;
        Self::parse(value)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// INVALID_ARGUMENT for a value rule that failed; amounts have their own code.
pub fn invalid_argument(e: &crate::values::ValueError) -> Status {
    let code = match e {
        crate::values::ValueError::AmountOutOfRange(_) => ErrorCode::InvalidAmount,
        _ => ErrorCode::ValidationFailed,
    };
    code.status(Code::InvalidArgument, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_a_status() {
        for code in ErrorCode::ALL {
            let status = code.status(Code::NotFound, "x");
            assert_eq!(ErrorCode::of(&status), Some(code));
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
    }

    #[test]
    fn invalid_amount_has_its_own_code() {
        let s = invalid_argument(&crate::values::ValueError::AmountOutOfRange(0));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(ErrorCode::of(&s), Some(ErrorCode::InvalidAmount));
        let s = invalid_argument(&crate::values::ValueError::BadIdempotencyKey);
        assert_eq!(ErrorCode::of(&s), Some(ErrorCode::ValidationFailed));
    }

    #[test]
    fn status_without_code_has_none() {
        assert_eq!(ErrorCode::of(&Status::internal("boom")), None);
    }
}
