//! The handler of the requests topic (orders → payments), run by the inbox
//! consumer inside its transaction, right after the event ids were recorded:
//!
//! - `PaymentRequested`: the exactly-once debit ([`persistence::decide_all`]),
//!   answered by `PaymentCompleted`;
//! - `CancellationRequested`: the order voided or its payment given back,
//!   once ([`persistence::cancel`]), answered by `CancellationCompleted`;
//! - `RefundRequested`: a paid order's amount credited back, once
//!   ([`persistence::refund`]), answered by `RefundCompleted`.
//!
//! One user's requests share a partition, so they are applied in the order
//! they were accepted, and the first decision for an order is the one every
//! redelivery gets. The answers go to the outbox in the same transaction; the
//! relay publishes them to the results topic after the commit.

use crate::domain::{CancellationRequest, PaymentRequest, RefundRequest};
use crate::persistence::{self, DecideError};
use shop_db::inbox::{HandleError, Handler, Inbound, InboxEvent, decode_as};
use shop_db::outbox::NewEvent;
use shop_db::{Transaction, headers};
use shop_proto::events::{
    CancellationCompleted, CancellationReason, CancellationRequested, PaymentCompleted,
    PaymentRequested, RefundCompleted, RefundRequested,
};
use shop_proto::time::to_timestamp;
use shop_proto::values::{Amount, OrderId, UserId};
use std::time::SystemTime;
use uuid::Uuid;

/// What the requests topic carries.
#[derive(Debug, Clone)]
pub enum Request {
    Payment(PaymentRequested),
    Cancellation(CancellationRequested),
    Refund(RefundRequested),
}

impl InboxEvent for Request {
    fn decode(event_type: Option<&str>, payload: &[u8]) -> Result<Self, String> {
        if let Some(e) = decode_as::<PaymentRequested>(event_type, payload)? {
            return Ok(Self::Payment(e));
        }
        if let Some(e) = decode_as::<CancellationRequested>(event_type, payload)? {
            return Ok(Self::Cancellation(e));
        }
        if let Some(e) = decode_as::<RefundRequested>(event_type, payload)? {
            return Ok(Self::Refund(e));
        }
        Err(format!("unexpected event type {event_type:?}"))
    }

    fn event_id(&self) -> Option<Uuid> {
        let id = match self {
            Self::Payment(e) => &e.event_id,
            Self::Cancellation(e) => &e.event_id,
            Self::Refund(e) => &e.event_id,
        };
        Uuid::parse_str(id).ok()
    }

    fn order_id(&self) -> Option<&str> {
        Some(match self {
            Self::Payment(e) => &e.order_id,
            Self::Cancellation(e) => &e.order_id,
            Self::Refund(e) => &e.order_id,
        })
    }
}

fn invalid(what: &str) -> impl Fn(String) -> HandleError + '_ {
    move |detail| HandleError::Permanent(format!("invalid {what}: {detail}"))
}

/// The ids and amount every request carries, checked.
fn checked(
    what: &str,
    event_id: &str,
    order_id: &str,
    user_id: &str,
    amount: i64,
) -> Result<(Uuid, OrderId, UserId, Amount), HandleError> {
    let bad = invalid(what);
    Ok((
        Uuid::parse_str(event_id).map_err(|_| bad("event_id".into()))?,
        OrderId::parse(order_id).map_err(|v| bad(v.to_string()))?,
        UserId::parse(user_id).map_err(|v| bad(v.to_string()))?,
        Amount::try_from(amount).map_err(|v| bad(v.to_string()))?,
    ))
}

fn payment_request(e: &PaymentRequested) -> Result<PaymentRequest, HandleError> {
    let (event_id, order_id, user_id, amount) = checked(
        "PaymentRequested",
        &e.event_id,
        &e.order_id,
        &e.user_id,
        e.amount,
    )?;
    let pay_before = e.pay_before.as_ref().map(shop_proto::time::from_timestamp);
    Ok(PaymentRequest {
        event_id,
        order_id,
        user_id,
        amount,
        pay_before,
    })
}

fn cancellation_request(e: &CancellationRequested) -> Result<CancellationRequest, HandleError> {
    let (event_id, order_id, user_id, amount) = checked(
        "CancellationRequested",
        &e.event_id,
        &e.order_id,
        &e.user_id,
        e.amount,
    )?;
    let reason = match e.reason() {
        CancellationReason::Unspecified => {
            return Err(invalid("CancellationRequested")("no reason".into()));
        }
        reason => reason,
    };
    Ok(CancellationRequest {
        event_id,
        order_id,
        user_id,
        amount,
        reason,
    })
}

fn refund_request(e: &RefundRequested) -> Result<RefundRequest, HandleError> {
    let (event_id, order_id, user_id, amount) = checked(
        "RefundRequested",
        &e.event_id,
        &e.order_id,
        &e.user_id,
        e.amount,
    )?;
    Ok(RefundRequest {
        event_id,
        order_id,
        user_id,
        amount,
    })
}

fn transient(e: DecideError) -> HandleError {
    match e {
        DecideError::NotPaid(_) => HandleError::Permanent(e.to_string()),
        other => HandleError::Transient(other.to_string()),
    }
}

/// Settles every request once and enqueues its answer on `results_topic`.
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

    /// Decides a run of consecutive payment requests with one call (the
    /// common case: one statement claims every ledger row of the batch).
    async fn pay(
        &self,
        tx: &Transaction<'_>,
        run: &[(PaymentRequest, Option<String>)],
        answers: &mut Vec<NewEvent>,
    ) -> Result<(), HandleError> {
        if run.is_empty() {
            return Ok(());
        }
        let requests: Vec<PaymentRequest> = run.iter().map(|(r, _)| r.clone()).collect();
        let decisions = persistence::decide_all(tx, &requests)
            .await
            .map_err(transient)?;
        let completed_at = Some(to_timestamp(SystemTime::now()));
        for ((request, traceparent), decision) in run.iter().zip(decisions) {
            let (outcome, reason) = decision.to_event();
            let result_id = Uuid::now_v7();
            let completed = PaymentCompleted {
                event_id: result_id.to_string(),
                order_id: request.order_id.to_string(),
                user_id: request.user_id.to_string(),
                amount: request.amount.get(),
                outcome: outcome.into(),
                decline_reason: reason.into(),
                completed_at,
            };
            answers.push(NewEvent::encode(
                result_id,
                &self.results_topic,
                request.order_id,
                &completed,
                headers::continued(traceparent.as_deref()),
            ));
        }
        Ok(())
    }
}

impl OnPaymentRequested {
    /// Decides the pending run of payment requests, if any.
    async fn flush(
        &self,
        tx: &Transaction<'_>,
        run: &mut Vec<(PaymentRequest, Option<String>)>,
        answers: &mut Vec<NewEvent>,
    ) -> Result<(), HandleError> {
        self.pay(tx, run, answers).await?;
        run.clear();
        Ok(())
    }

    async fn cancel(
        &self,
        tx: &Transaction<'_>,
        event: &CancellationRequested,
        traceparent: Option<&str>,
    ) -> Result<NewEvent, HandleError> {
        let request = cancellation_request(event)?;
        let outcome = persistence::cancel(tx, &request).await.map_err(transient)?;
        metrics::counter!("shop_ledger_cancellations_total", "outcome" => outcome.as_str())
            .increment(1);
        tracing::info!(order_id = %request.order_id, outcome = outcome.as_str(), "cancellation settled");
        let result_id = Uuid::now_v7();
        let completed = CancellationCompleted {
            event_id: result_id.to_string(),
            order_id: request.order_id.to_string(),
            user_id: request.user_id.to_string(),
            amount: request.amount.get(),
            reason: request.reason.into(),
            outcome: outcome.to_event().into(),
            completed_at: Some(to_timestamp(SystemTime::now())),
        };
        Ok(NewEvent::encode(
            result_id,
            &self.results_topic,
            request.order_id,
            &completed,
            headers::continued(traceparent),
        ))
    }

    async fn refund(
        &self,
        tx: &Transaction<'_>,
        event: &RefundRequested,
        traceparent: Option<&str>,
    ) -> Result<NewEvent, HandleError> {
        let request = refund_request(event)?;
        let credited = persistence::refund(tx, &request).await.map_err(transient)?;
        let outcome = if credited {
            "refunded"
        } else {
            "already_refunded"
        };
        metrics::counter!("shop_ledger_refunds_total", "outcome" => outcome).increment(1);
        let result_id = Uuid::now_v7();
        let completed = RefundCompleted {
            event_id: result_id.to_string(),
            order_id: request.order_id.to_string(),
            user_id: request.user_id.to_string(),
            amount: request.amount.get(),
            completed_at: Some(to_timestamp(SystemTime::now())),
        };
        Ok(NewEvent::encode(
            result_id,
            &self.results_topic,
            request.order_id,
            &completed,
            headers::continued(traceparent),
        ))
    }
}

impl Handler for OnPaymentRequested {
    type Event = Request;

    /// Applies the batch in partition order: runs of payment requests are
    /// decided together, cancellations and refunds one at a time between
    /// them; each request gets its answer in the outbox.
    async fn handle(
        &self,
        tx: &Transaction<'_>,
        events: Vec<Inbound<Request>>,
    ) -> Result<Vec<NewEvent>, HandleError> {
        let mut answers = Vec::with_capacity(events.len());
        let mut run: Vec<(PaymentRequest, Option<String>)> = Vec::new();
        for inbound in events {
            let traceparent = inbound.delivery.traceparent;
            match inbound.event {
                Request::Payment(e) => run.push((payment_request(&e)?, traceparent)),
                Request::Cancellation(e) => {
                    self.flush(tx, &mut run, &mut answers).await?;
                    answers.push(self.cancel(tx, &e, traceparent.as_deref()).await?);
                }
                Request::Refund(e) => {
                    self.flush(tx, &mut run, &mut answers).await?;
                    answers.push(self.refund(tx, &e, traceparent.as_deref()).await?);
                }
            }
        }
        self.flush(tx, &mut run, &mut answers).await?;
        Ok(answers)
    }
}
