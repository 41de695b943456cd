//! Orders and their life:
//!
//! ```text
//! NEW ──payment result──▶ FINISHED ──refund──▶ REFUNDING ──▶ REFUNDED
//!  │                   └▶ CANCELLED (INSUFFICIENT_FUNDS, ACCOUNT_NOT_FOUND)
//!  └──cancel / expiry──▶ CANCELLING ──ledger──▶ CANCELLED (CANCELLED_BY_USER, EXPIRED)
//! ```
//!
//! CANCELLED and REFUNDED never change; FINISHED → REFUNDING is the only
//! change of a final status. The ledger (payments) decides what happens to
//! the money, once per order; this side only follows its answers.

use shop_proto::values::{Amount, Description, IdempotencyKey, OrderId, UserId};
use std::time::SystemTime;

/// Why an order was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    InsufficientFunds,
    AccountNotFound,
    CancelledByUser,
    Expired,
}

impl CancelReason {
    /// The database spelling (also the API's).
    pub const fn column(self) -> &'static str {
        match self {
            Self::InsufficientFunds => "INSUFFICIENT_FUNDS",
            Self::AccountNotFound => "ACCOUNT_NOT_FOUND",
            Self::CancelledByUser => "CANCELLED_BY_USER",
            Self::Expired => "EXPIRED",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::InsufficientFunds,
            Self::AccountNotFound,
            Self::CancelledByUser,
            Self::Expired,
        ]
        .into_iter()
        .find(|r| r.column() == s)
    }
}

/// Where an order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    New,
    Finished,
    Cancelled(CancelReason),
    /// A cancellation was accepted; the ledger settles its money.
    Cancelling(CancelReason),
    /// A refund was accepted; the ledger credits the amount back.
    Refunding,
    Refunded,
}

impl Status {
    /// True for FINISHED, CANCELLED and REFUNDED: where a payment, a cancel
    /// or a refund ends (only FINISHED may still be refunded).
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Finished | Self::Cancelled(_) | Self::Refunded)
    }

    /// The database spelling of the status column.
    pub const fn column(self) -> &'static str {
        match self {
            Self::New => "NEW",
            Self::Finished => "FINISHED",
            Self::Cancelled(_) => "CANCELLED",
            Self::Cancelling(_) => "CANCELLING",
            Self::Refunding => "REFUNDING",
            Self::Refunded => "REFUNDED",
        }
    }

    /// The database spelling of the cancel_reason column.
    pub const fn reason_column(self) -> Option<&'static str> {
        match self {
            Self::Cancelled(reason) | Self::Cancelling(reason) => Some(reason.column()),
            _ => None,
        }
    }

    /// Reads the two columns back.
    pub fn from_columns(status: &str, reason: Option<&str>) -> Option<Self> {
        let reason = reason.map(CancelReason::parse);
        Some(match (status, reason) {
            ("NEW", None) => Self::New,
            ("FINISHED", None) => Self::Finished,
            ("REFUNDING", None) => Self::Refunding,
            ("REFUNDED", None) => Self::Refunded,
            ("CANCELLED", Some(Some(reason))) => Self::Cancelled(reason),
            ("CANCELLING", Some(Some(reason))) => Self::Cancelling(reason),
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
            Status::Cancelled(CancelReason::CancelledByUser),
            Status::Cancelled(CancelReason::Expired),
            Status::Cancelling(CancelReason::CancelledByUser),
            Status::Cancelling(CancelReason::Expired),
            Status::Refunding,
            Status::Refunded,
        ] {
            assert_eq!(
                Status::from_columns(status.column(), status.reason_column()),
                Some(status)
            );
        }
        assert_eq!(Status::from_columns("CANCELLED", None), None);
        assert_eq!(Status::from_columns("CANCELLED", Some("LATER")), None);
        assert_eq!(Status::from_columns("REFUNDED", Some("EXPIRED")), None);
        assert_eq!(Status::from_columns("PAID", None), None);
    }

    #[test]
    fn payments_cancels_and_refunds_end_in_final_statuses() {
        assert!(!Status::New.is_final());
        assert!(!Status::Cancelling(CancelReason::Expired).is_final());
        assert!(!Status::Refunding.is_final());
        assert!(Status::Finished.is_final());
        assert!(Status::Cancelled(CancelReason::AccountNotFound).is_final());
        assert!(Status::Refunded.is_final());
    }
}
