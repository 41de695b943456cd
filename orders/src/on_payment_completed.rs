//! The handler of the results topic (payments → orders), run by the inbox
//! consumer inside its transaction, right after the event ids were recorded.
//! Each result moves its order one step, and only from the status it
//! answers:
//!
//! - `PaymentCompleted`: NEW → FINISHED or CANCELLED (a VOIDED payment
//!   changes nothing: its order's cancellation settles it);
//! - `CancellationCompleted`: CANCELLING → CANCELLED, keeping the reason;
//! - `RefundCompleted`: REFUNDING → REFUNDED.
//!
//! So a redelivered, replayed or late result changes nothing, and nothing
//! reverses a final status. The status trigger NOTIFYs watchers on commit.

use crate::domain::{CancelReason, Status};
use crate::persistence::{self, Transition};
use shop_db::Transaction;
use shop_db::inbox::{HandleError, Handler, Inbound, InboxEvent, decode_as};
use shop_db::outbox::NewEvent;
use shop_proto::events::{
    CancellationCompleted, CancellationOutcome, CancellationReason, DeclineReason,
    PaymentCompleted, PaymentOutcome, RefundCompleted,
};
use shop_proto::values::OrderId;
use uuid::Uuid;

/// The histogram of each order's create → final time (the payment's
/// result), recorded as the result is applied; its buckets are in
/// [`crate::config::SPEC`].
pub const SETTLE_SECONDS: &str = "shop_order_settle_seconds";

/// What the results topic carries.
#[derive(Debug, Clone)]
pub enum Outcome {
    Payment(PaymentCompleted),
    Cancellation(CancellationCompleted),
    Refund(RefundCompleted),
}

impl InboxEvent for Outcome {
    fn decode(event_type: Option<&str>, payload: &[u8]) -> Result<Self, String> {
        if let Some(e) = decode_as::<PaymentCompleted>(event_type, payload)? {
            return Ok(Self::Payment(e));
        }
        if let Some(e) = decode_as::<CancellationCompleted>(event_type, payload)? {
            return Ok(Self::Cancellation(e));
        }
        if let Some(e) = decode_as::<RefundCompleted>(event_type, payload)? {
            return Ok(Self::Refund(e));
        }
        Err(format!("unexpected event type {event_type:?}"))
    }

    fn event_id(&self) -> Option<Uuid> {
        Uuid::parse_str(self.ids().0).ok()
    }

    fn order_id(&self) -> Option<&str> {
        Some(self.ids().1)
    }
}

impl Outcome {
    /// (event id, order id) as sent.
    fn ids(&self) -> (&str, &str) {
        match self {
            Self::Payment(e) => (&e.event_id, &e.order_id),
            Self::Cancellation(e) => (&e.event_id, &e.order_id),
            Self::Refund(e) => (&e.event_id, &e.order_id),
        }
    }

    /// The step this result asks for: `None` for a payment voided by a
    /// cancellation (that cancellation's own result moves the order).
    fn transition(&self) -> Result<Option<Transition>, HandleError> {
        let order =
            OrderId::parse(self.ids().1).map_err(|e| HandleError::Permanent(e.to_string()))?;
        Ok(Some(match self {
            Self::Payment(e) => match status_of(e)? {
                Some(to) => Transition {
                    order,
                    from: "NEW",
                    to,
                },
                None => return Ok(None),
            },
            Self::Cancellation(e) => Transition {
                order,
                from: "CANCELLING",
                to: Status::Cancelled(reason_of(e)?),
            },
            Self::Refund(_) => Transition {
                order,
                from: "REFUNDING",
                to: Status::Refunded,
            },
        }))
    }
}

/// The status a payment result leads to; `None` for VOIDED.
pub fn status_of(event: &PaymentCompleted) -> Result<Option<Status>, HandleError> {
    match (event.outcome(), event.decline_reason()) {
        (PaymentOutcome::Paid, _) => Ok(Some(Status::Finished)),
        (PaymentOutcome::Declined, DeclineReason::InsufficientFunds) => {
            Ok(Some(Status::Cancelled(CancelReason::InsufficientFunds)))
        }
        (PaymentOutcome::Declined, DeclineReason::AccountNotFound) => {
            Ok(Some(Status::Cancelled(CancelReason::AccountNotFound)))
        }
        (PaymentOutcome::Voided, _) => Ok(None),
        (outcome, reason) => Err(HandleError::Permanent(format!(
            "PaymentCompleted with outcome {outcome:?} and reason {reason:?}"
        ))),
    }
}

/// The reason a settled cancellation keeps.
fn reason_of(event: &CancellationCompleted) -> Result<CancelReason, HandleError> {
    match event.reason() {
        CancellationReason::ByUser => Ok(CancelReason::CancelledByUser),
        CancellationReason::Expired => Ok(CancelReason::Expired),
        CancellationReason::Unspecified => Err(HandleError::Permanent(
            "CancellationCompleted without a reason".to_owned(),
        )),
    }
}

fn cancellation_outcome(event: &CancellationCompleted) -> &'static str {
    match event.outcome() {
        CancellationOutcome::Voided => "voided",
        CancellationOutcome::Refunded => "refunded",
        CancellationOutcome::NothingCharged => "nothing_charged",
        CancellationOutcome::Unspecified => "unspecified",
    }
}

/// Applies payment, cancellation and refund results to their orders.
#[derive(Debug, Clone, Default)]
pub struct OnPaymentCompleted;

impl Handler for OnPaymentCompleted {
    type Event = Outcome;

    /// Moves every order of the batch one step with one statement; a
    /// result whose order is not in the status it answers changes nothing,
    /// an order that does not exist makes the event permanently invalid.
    async fn handle(
        &self,
        tx: &Transaction<'_>,
        events: Vec<Inbound<Outcome>>,
    ) -> Result<Vec<NewEvent>, HandleError> {
        let mut changes = Vec::with_capacity(events.len());
        let mut orders = Vec::with_capacity(events.len());
        for inbound in &events {
            let order = OrderId::parse(inbound.event.ids().1)
                .map_err(|e| HandleError::Permanent(e.to_string()))?;
            orders.push(order);
            if let Some(change) = inbound.event.transition()? {
                changes.push(change);
            }
        }
        let moved: std::collections::HashMap<OrderId, f64> =
            persistence::transition_all(tx, &changes)
                .await?
                .into_iter()
                .collect();
        for inbound in &events {
            let Ok(order) = OrderId::parse(inbound.event.ids().1) else {
                continue;
            };
            let Some(seconds) = moved.get(&order) else {
                continue;
            };
            match &inbound.event {
                Outcome::Payment(_) => {
                    metrics::histogram!(SETTLE_SECONDS).record(*seconds);
                    tracing::info!(order_id = %order, "order finalised");
                }
                Outcome::Cancellation(e) => {
                    let reason = reason_of(e)?.column();
                    let outcome = cancellation_outcome(e);
                    metrics::counter!("shop_order_cancellations_total", "reason" => reason, "outcome" => outcome)
                        .increment(1);
                    tracing::info!(order_id = %order, reason, outcome, "order cancelled");
                }
                Outcome::Refund(_) => {
                    metrics::counter!("shop_order_refunds_total", "outcome" => "refunded")
                        .increment(1);
                    tracing::info!(order_id = %order, "order refunded");
                }
            }
        }
        let unchanged: Vec<OrderId> = orders
            .iter()
            .filter(|order| !moved.contains_key(order))
            .copied()
            .collect();
        if !unchanged.is_empty() {
            let existing = persistence::existing(tx, &unchanged).await?;
            if let Some(missing) = unchanged.iter().find(|o| !existing.contains(o)) {
                return Err(HandleError::Permanent(format!(
                    "order {missing} does not exist"
                )));
            }
            tracing::info!(results = unchanged.len(), "results that change nothing");
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(outcome: PaymentOutcome, reason: DeclineReason) -> PaymentCompleted {
        PaymentCompleted {
            outcome: outcome.into(),
            decline_reason: reason.into(),
            ..Default::default()
        }
    }

    #[test]
    fn outcomes_map_to_final_statuses() {
        assert_eq!(
            status_of(&event(PaymentOutcome::Paid, DeclineReason::Unspecified)).ok(),
            Some(Some(Status::Finished))
        );
        assert_eq!(
            status_of(&event(PaymentOutcome::Voided, DeclineReason::Unspecified)).ok(),
            Some(None)
        );
        assert_eq!(
            status_of(&event(
                PaymentOutcome::Declined,
                DeclineReason::AccountNotFound
            ))
            .ok(),
            Some(Some(Status::Cancelled(CancelReason::AccountNotFound)))
        );
        assert!(status_of(&event(PaymentOutcome::Declined, DeclineReason::Unspecified)).is_err());
        assert!(
            status_of(&event(
                PaymentOutcome::Unspecified,
                DeclineReason::Unspecified
            ))
            .is_err()
        );
    }
}
