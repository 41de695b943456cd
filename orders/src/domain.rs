//! Orders and their life: NEW, then exactly one final status.

use shop_proto::values::{Amount, Description, IdempotencyKey, OrderId, UserId};
use std::time::SystemTime;

/// Why an order was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    InsufficientFunds,
    AccountNotFound,
}

/// Where an order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    New,
    Finished,
    Cancelled(CancelReason),
}

impl Status {
    /// True for FINISHED and CANCELLED, which never change again.
    pub const fn is_final(self) -> bool {
        !matches!(self, Self::New)
    }

    /// The database spelling of the status column.
    pub const fn column(self) -> &'static str {
        match self {
            Self::New => "NEW",
            Self::Finished => "FINISHED",
            Self::Cancelled(_) => "CANCELLED",
        }
    }

    /// The database spelling of the cancel_reason column.
    pub const fn reason_column(self) -> Option<&'static str> {
        match self {
            Self::Cancelled(CancelReason::InsufficientFunds) => Some("INSUFFICIENT_FUNDS"),
            Self::Cancelled(CancelReason::AccountNotFound) => Some("ACCOUNT_NOT_FOUND"),
            _ => None,
        }
    }

    /// Reads the two columns back.
    pub fn from_columns(status: &str, reason: Option<&str>) -> Option<Self> {
        Some(match (status, reason) {
            ("NEW", None) => Self::New,
            ("FINISHED", None) => Self::Finished,
            ("CANCELLED", Some("INSUFFICIENT_FUNDS")) => {
                Self::Cancelled(CancelReason::InsufficientFunds)
            }
            ("CANCELLED", Some("ACCOUNT_NOT_FOUND")) => {
                Self::Cancelled(CancelReason::AccountNotFound)
            }
            _ => return None,
        })
    }
}

/// A stored order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub user_id: UserId,
    pub amount: i64,
    pub description: String,
    pub status: Status,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

/// A checked request to create an order.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub user_id: UserId,
    pub amount: Amount,
    pub description: Description,
    pub idempotency_key: Option<IdempotencyKey>,
}

impl NewOrder {
    /// Whether `existing` is what this request would have created (for key replays).
    pub fn matches(&self, existing: &Order) -> bool {
        existing.user_id == self.user_id
            && existing.amount == self.amount.get()
            && existing.description == self.description.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_columns() {
        for status in [
            Status::New,
            Status::Finished,
            Status::Cancelled(CancelReason::InsufficientFunds),
            Status::Cancelled(CancelReason::AccountNotFound),
        ] {
            assert_eq!(
                Status::from_columns(status.column(), status.reason_column()),
                Some(status)
            );
        }
        assert_eq!(Status::from_columns("CANCELLED", None), None);
        assert_eq!(Status::from_columns("PAID", None), None);
    }

    #[test]
    fn only_new_is_not_final() {
        assert!(!Status::New.is_final());
        assert!(Status::Finished.is_final());
        assert!(Status::Cancelled(CancelReason::AccountNotFound).is_final());
    }
}
