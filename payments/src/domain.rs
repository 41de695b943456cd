//! The payments service's domain: accounts with their balance, credits
//! recorded under an idempotency key, a checked payment request and the
//! decision made for it, once per order.

use shop_proto::events::{DeclineReason, PaymentOutcome};
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

/// The decision for one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Paid,
    InsufficientFunds,
    AccountNotFound,
}

impl Decision {
    /// The ledger's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Paid => "PAID",
            Self::InsufficientFunds => "INSUFFICIENT_FUNDS",
            Self::AccountNotFound => "ACCOUNT_NOT_FOUND",
        }
    }

    /// Reads the ledger's spelling back.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Paid, Self::InsufficientFunds, Self::AccountNotFound]
            .into_iter()
            .find(|d| d.as_str() == s)
    }

    /// The outcome and reason `PaymentCompleted` carries.
    pub fn to_event(self) -> (PaymentOutcome, DeclineReason) {
        match self {
            Self::Paid => (PaymentOutcome::Paid, DeclineReason::Unspecified),
            Self::InsufficientFunds => (PaymentOutcome::Declined, DeclineReason::InsufficientFunds),
            Self::AccountNotFound => (PaymentOutcome::Declined, DeclineReason::AccountNotFound),
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
        ] {
            assert_eq!(Decision::parse(d.as_str()), Some(d));
        }
        assert_eq!(Decision::parse("MAYBE"), None);
    }
}
