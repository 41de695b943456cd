//! The exactly-once debit for an order (DESIGN.md §5.3), run by the inbox
//! consumer inside its transaction: insert the ledger row (UNIQUE order id),
//! debit conditionally, record the decision, enqueue `PaymentCompleted`.

use shop_db::inbox::{Delivery, HandleError, Handler};
use shop_db::outbox::{self, NewEvent};
use shop_db::{GenericClient, Transaction, trace};
use shop_proto::events::{DeclineReason, PaymentCompleted, PaymentOutcome, PaymentRequested};
use shop_proto::time::to_timestamp;
use shop_proto::values::{Amount, OrderId, UserId};
use std::time::SystemTime;
use uuid::Uuid;

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

    fn parse(s: &str) -> Option<Self> {
        [Self::Paid, Self::InsufficientFunds, Self::AccountNotFound]
            .into_iter()
            .find(|d| d.as_str() == s)
    }

    fn to_event(self) -> (PaymentOutcome, DeclineReason) {
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

impl TryFrom<PaymentRequested> for PaymentRequest {
    type Error = HandleError;

    fn try_from(e: PaymentRequested) -> Result<Self, Self::Error> {
        let bad =
            |what: String| HandleError::Permanent(format!("invalid PaymentRequested: {what}"));
        Ok(Self {
            event_id: Uuid::parse_str(&e.event_id).map_err(|_| bad("event_id".into()))?,
            order_id: OrderId::parse(&e.order_id).map_err(|v| bad(v.to_string()))?,
            user_id: UserId::parse(&e.user_id).map_err(|v| bad(v.to_string()))?,
            amount: Amount::try_from(e.amount).map_err(|v| bad(v.to_string()))?,
        })
    }
}

/// Decides an order once; a repeated request returns the first decision.
pub async fn decide(
    db: &impl GenericClient,
    request: &PaymentRequest,
) -> Result<Decision, tokio_postgres::Error> {
    let inserted = db
        .execute(
            "INSERT INTO payments (order_id, user_id, amount, request_event_id)
             VALUES ($1, $2, $3, $4) ON CONFLICT (order_id) DO NOTHING",
            &[
                request.order_id.as_uuid(),
                request.user_id.as_uuid(),
                &request.amount.get(),
                &request.event_id,
            ],
        )
        .await?;
    if inserted == 0 {
        let row = db
            .query_one(
                "SELECT outcome FROM payments WHERE order_id = $1",
                &[request.order_id.as_uuid()],
            )
            .await?;
        let outcome: Option<String> = row.try_get(0)?;
        // A committed row always carries its outcome (set in the same transaction).
        if let Some(decision) = outcome.as_deref().and_then(Decision::parse) {
            tracing::info!(order_id = %request.order_id, decision = decision.as_str(), "order already decided");
            return Ok(decision);
        }
    }
    let debited = db
        .execute(
            "UPDATE accounts SET balance = balance - $2, updated_at = now()
             WHERE user_id = $1 AND balance >= $2",
            &[request.user_id.as_uuid(), &request.amount.get()],
        )
        .await?;
    let decision = if debited == 1 {
        Decision::Paid
    } else if db
        .query_opt(
            "SELECT 1 FROM accounts WHERE user_id = $1",
            &[request.user_id.as_uuid()],
        )
        .await?
        .is_some()
    {
        Decision::InsufficientFunds
    } else {
        Decision::AccountNotFound
    };
    db.execute(
        "UPDATE payments SET outcome = $2 WHERE order_id = $1",
        &[request.order_id.as_uuid(), &decision.as_str()],
    )
    .await?;
    tracing::info!(order_id = %request.order_id, user_id = %request.user_id, amount = request.amount.get(), decision = decision.as_str(), "payment decided");
    Ok(decision)
}

/// Consumes `PaymentRequested` and publishes `PaymentCompleted` to `results_topic`.
#[derive(Debug, Clone)]
pub struct PaymentRequestHandler {
    results_topic: String,
}

impl PaymentRequestHandler {
    /// A handler publishing results to `results_topic`.
    pub fn new(results_topic: &str) -> Self {
        Self {
            results_topic: results_topic.to_owned(),
        }
    }
}

impl Handler for PaymentRequestHandler {
    type Event = PaymentRequested;

    fn event_id(event: &PaymentRequested) -> Option<Uuid> {
        Uuid::parse_str(&event.event_id).ok()
    }

    async fn handle(
        &self,
        tx: &Transaction<'_>,
        event: PaymentRequested,
        delivery: &Delivery,
    ) -> Result<(), HandleError> {
        let request = PaymentRequest::try_from(event)?;
        let decision = decide(tx, &request).await?;
        let (outcome, reason) = decision.to_event();
        let result_id = Uuid::now_v7();
        let completed = PaymentCompleted {
            event_id: result_id.to_string(),
            order_id: request.order_id.to_string(),
            user_id: request.user_id.to_string(),
            amount: request.amount.get(),
            outcome: outcome.into(),
            cancel_reason: reason.into(),
            completed_at: Some(to_timestamp(SystemTime::now())),
        };
        let event = NewEvent::encode(
            result_id,
            &self.results_topic,
            request.order_id,
            &completed,
            trace::child_of(delivery.traceparent.as_deref()),
        );
        outbox::enqueue(tx, &event).await?;
        Ok(())
    }
}
