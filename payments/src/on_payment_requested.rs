//! The handler of `PaymentRequested` (orders → payments), run by the inbox
//! consumer inside its transaction, right after the event id was recorded:
//! the exactly-once debit ([`persistence::decide_all`]) and, in the same
//! transaction, the `PaymentCompleted` answers in the outbox. The relay
//! publishes it to the results topic after the commit.

use crate::domain::PaymentRequest;
use crate::persistence;
use shop_db::inbox::{HandleError, Handler, Inbound};
use shop_db::outbox::NewEvent;
use shop_db::{Transaction, headers};
use shop_proto::events::{PaymentCompleted, PaymentRequested};
use shop_proto::time::to_timestamp;
use shop_proto::values::{Amount, OrderId, UserId};
use std::time::SystemTime;
use uuid::Uuid;

/// The checked request inside an event; a bad one is permanently invalid.
fn payment_request(e: PaymentRequested) -> Result<PaymentRequest, HandleError> {
    let bad = |what: String| HandleError::Permanent(format!("invalid PaymentRequested: {what}"));
    Ok(PaymentRequest {
        event_id: Uuid::parse_str(&e.event_id).map_err(|_| bad("event_id".into()))?,
        order_id: OrderId::parse(&e.order_id).map_err(|v| bad(v.to_string()))?,
        user_id: UserId::parse(&e.user_id).map_err(|v| bad(v.to_string()))?,
        amount: Amount::try_from(e.amount).map_err(|v| bad(v.to_string()))?,
    })
}

/// Decides each `PaymentRequested` once and enqueues its `PaymentCompleted`
/// on `results_topic`.
#[derive(Debug, Clone)]
pub struct OnPaymentRequested {
    results_topic: String,
}

impl OnPaymentRequested {
    /// A handler publishing results to `results_topic`.
    pub fn new(results_topic: &str) -> Self {
        Self {
            results_topic: results_topic.to_owned(),
        }
    }
}

impl Handler for OnPaymentRequested {
    type Event = PaymentRequested;

    fn event_id(event: &PaymentRequested) -> Option<Uuid> {
        Uuid::parse_str(&event.event_id).ok()
    }

    /// Decides every order of the batch once, in order, and answers each
    /// with a `PaymentCompleted` (written to the outbox by the inbox, in the
    /// same transaction).
    async fn handle(
        &self,
        tx: &Transaction<'_>,
        events: Vec<Inbound<PaymentRequested>>,
    ) -> Result<Vec<NewEvent>, HandleError> {
        let mut requests = Vec::with_capacity(events.len());
        let mut traces = Vec::with_capacity(events.len());
        for inbound in events {
            requests.push(payment_request(inbound.event)?);
            traces.push(inbound.delivery.traceparent);
        }
        let decisions = persistence::decide_all(tx, &requests)
            .await
            .map_err(|e| HandleError::Transient(e.to_string()))?;
        let completed_at = Some(to_timestamp(SystemTime::now()));
        let answers = requests
            .iter()
            .zip(decisions)
            .zip(traces)
            .map(|((request, decision), traceparent)| {
                let (outcome, reason) = decision.to_event();
                let result_id = Uuid::now_v7();
                let completed = PaymentCompleted {
                    event_id: result_id.to_string(),
                    order_id: request.order_id.to_string(),
                    user_id: request.user_id.to_string(),
                    amount: request.amount.get(),
                    outcome: outcome.into(),
                    cancel_reason: reason.into(),
                    completed_at,
                };
                NewEvent::encode(
                    result_id,
                    &self.results_topic,
                    request.order_id,
                    &completed,
                    headers::child_of(traceparent.as_deref()),
                )
            })
            .collect();
        Ok(answers)
    }
}
