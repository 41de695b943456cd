//! The payments service's domain: accounts with their balance, credits
//! recorded under an idempotency key, a checked payment request and the
//! decision made for it, once per order; and the requests that take an
//! order back (a cancellation, a refund), each settled once per order.

use shop_proto::events::{CancellationOutcome, CancellationReason, DeclineReason, PaymentOutcome};
use shop_proto::values::{Amount, OrderId, UserId};
use std::time::SystemTime;
use uuid::Uuid;

/// A user's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user_id: UserId,
    pub balance: i64,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

/// A credit that was recorded under an idempotency key.
#[derive(Debug, Clone)]
pub struct KeyedCredit {
    pub amount: i64,
    pub balance_after: i64,
    pub created_at: SystemTime,
}

/// The ledger's decision for one order: the one name for it in this crate.
/// It is stored in the ledger row's `outcome` column ([`Decision::as_str`];
/// the column keeps its name so that replicas of the previous version,
/// still running during a rolling deploy, go on reading it) and published
/// in `PaymentCompleted` as its `outcome` and `decline_reason`
/// ([`Decision::to_event`]). On the orders side it becomes the order's status
/// and `cancel_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Paid,
    InsufficientFunds,
    AccountNotFound,
    /// Cancelled before it was decided: never charged.
    Voided,
}

impl Decision {
    /// The ledger's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Paid => "PAID",
            Self::InsufficientFunds => "INSUFFICIENT_FUNDS",
            Self::AccountNotFound => "ACCOUNT_NOT_FOUND",
            Self::Voided => "VOIDED",
        }
    }

    /// Reads the ledger's spelling back.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Paid,
            Self::InsufficientFunds,
            Self::AccountNotFound,
            Self::Voided,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }

    /// The outcome and reason `PaymentCompleted` carries.
    pub fn to_event(self) -> (PaymentOutcome, DeclineReason) {
        match self {
            Self::Paid => (PaymentOutcome::Paid, DeclineReason::Unspecified),
            Self::InsufficientFunds => (PaymentOutcome::Declined, DeclineReason::InsufficientFunds),
            Self::AccountNotFound => (PaymentOutcome::Declined, DeclineReason::AccountNotFound),
            Self::Voided => (PaymentOutcome::Voided, DeclineReason::Unspecified),
        }
    }
}

/// A checked request to cancel an order (`CancellationRequested`).
#[derive(Debug, Clone)]
pub struct CancellationRequest {
    pub event_id: Uuid,
    pub order_id: OrderId,
    pub user_id: UserId,
    pub amount: Amount,
    pub reason: CancellationReason,
}

/// A checked request to refund a paid order (`RefundRequested`).
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub event_id: Uuid,
    pub order_id: OrderId,
    pub user_id: UserId,
    pub amount: Amount,
}

/// What a cancellation did, decided once per order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancellation {
    /// The payment was not decided: the ledger row now says VOIDED.
    Voided,
    /// The payment had been taken and was credited back (once).
    Refunded,
    /// The payment had been declined.
    NothingCharged,
}

impl Cancellation {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Voided => "voided",
            Self::Refunded => "refunded",
            Self::NothingCharged => "nothing_charged",
        }
    }

    pub const fn to_event(self) -> CancellationOutcome {
        match self {
            Self::Voided => CancellationOutcome::Voided,
            Self::Refunded => CancellationOutcome::Refunded,
            Self::NothingCharged => CancellationOutcome::NothingCharged,
        }
    }
}

/// A checked payment request.
#[derive(Debug, Clone)]
pub struct PaymentRequest {
    pub event_id: Uuid,
    pub order_id: OrderId,
    pub user_id: UserId,
    pub amount: Amount,
    /// When the order expires unpaid: a request first seen later is voided.
    pub pay_before: Option<SystemTime>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_round_trip_through_the_ledger_spelling() {
        for d in [
            Decision::Paid,
            Decision::InsufficientFunds,
            Decision::AccountNotFound,
            Decision::Voided,
        ] {
            assert_eq!(Decision::parse(d.as_str()), Some(d));
        }
        assert_eq!(Decision::parse("MAYBE"), None);
    }
}
