//! The handler of `PaymentCompleted` (payments → orders), run by the inbox
//! consumer inside its transaction, right after the event id was recorded:
//! the order moves from NEW to its final status; the status trigger NOTIFYs
//! watchers on commit. A final status never changes, so a redelivered result
//! changes nothing.

use crate::domain::{CancelReason, Status};
use crate::persistence;
use shop_db::Transaction;
use shop_db::inbox::{HandleError, Handler, Inbound};
use shop_db::outbox::NewEvent;
use shop_proto::events::{DeclineReason, PaymentCompleted, PaymentOutcome};
use shop_proto::values::OrderId;
use uuid::Uuid;

/// The status a payment result leads to.
pub fn status_of(event: &PaymentCompleted) -> Result<Status, HandleError> {
    match (event.outcome(), event.cancel_reason()) {
        (PaymentOutcome::Paid, _) => Ok(Status::Finished),
        (PaymentOutcome::Declined, DeclineReason::InsufficientFunds) => {
            Ok(Status::Cancelled(CancelReason::InsufficientFunds))
        }
        (PaymentOutcome::Declined, DeclineReason::AccountNotFound) => {
            Ok(Status::Cancelled(CancelReason::AccountNotFound))
        }
        (outcome, reason) => Err(HandleError::Permanent(format!(
            "PaymentCompleted with outcome {outcome:?} and reason {reason:?}"
        ))),
    }
}

/// Applies `PaymentCompleted` to its order.
#[derive(Debug, Clone, Default)]
pub struct OnPaymentCompleted;

impl Handler for OnPaymentCompleted {
    type Event = PaymentCompleted;

    fn event_id(event: &PaymentCompleted) -> Option<Uuid> {
        Uuid::parse_str(&event.event_id).ok()
    }

    /// Finalises every order of the batch with one statement; an order
    /// already final stays as it is, an order that does not exist makes the
    /// event permanently invalid.
    async fn handle(
        &self,
        tx: &Transaction<'_>,
        events: Vec<Inbound<PaymentCompleted>>,
    ) -> Result<Vec<NewEvent>, HandleError> {
        let changes = events
            .iter()
            .map(|inbound| {
                let order = OrderId::parse(&inbound.event.order_id)
                    .map_err(|e| HandleError::Permanent(e.to_string()))?;
                Ok((order, status_of(&inbound.event)?))
            })
            .collect::<Result<Vec<_>, HandleError>>()?;
        let finalised: std::collections::HashMap<OrderId, f64> =
            persistence::finalise_all(tx, &changes)
                .await?
                .into_iter()
                .collect();
        for (order, status) in &changes {
            if let Some(seconds) = finalised.get(order) {
                metrics::histogram!("shop_order_settle_seconds").record(*seconds);
                tracing::info!(order_id = %order, status = status.column(), "order finalised");
            }
        }
        let unchanged: Vec<OrderId> = changes
            .iter()
            .map(|(order, _)| *order)
            .filter(|order| !finalised.contains_key(order))
            .collect();
        if !unchanged.is_empty() {
            let existing = persistence::existing(tx, &unchanged).await?;
            if let Some(missing) = unchanged.iter().find(|o| !existing.contains(o)) {
                return Err(HandleError::Permanent(format!(
                    "order {missing} does not exist"
                )));
            }
            tracing::info!(orders = unchanged.len(), "orders already final");
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
            cancel_reason: reason.into(),
            ..Default::default()
        }
    }

    #[test]
    fn outcomes_map_to_final_statuses() {
        assert_eq!(
            status_of(&event(PaymentOutcome::Paid, DeclineReason::Unspecified)).ok(),
            Some(Status::Finished)
        );
        assert_eq!(
            status_of(&event(
                PaymentOutcome::Declined,
                DeclineReason::AccountNotFound
            ))
            .ok(),
            Some(Status::Cancelled(CancelReason::AccountNotFound))
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
