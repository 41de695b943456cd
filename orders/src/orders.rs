//! Order use cases, called by [`crate::grpc`] and the expiry sweep.
//! Creating an order writes the order and its `PaymentRequested` event to
//! the outbox in ONE statement, so they commit together (no Kafka call on
//! the request path); the relay publishes the event after the commit.
//! Cancelling or refunding one moves it to CANCELLING or REFUNDING and
//! writes the request for the ledger to the outbox in one transaction, the
//! same way.

use crate::domain::{CancelReason, NewOrder, Order, Status};
use crate::persistence::{self, RowError};
use shop_db::outbox::{self, NewEvent, RelayWake};
use shop_db::{DbError, GenericClient, Transaction, headers};
use shop_proto::events::{
    CancellationReason, CancellationRequested, PaymentRequested, RefundRequested,
};
use shop_proto::time::to_timestamp;
use shop_proto::values::{OrderId, PageSize, UserId};
use std::time::SystemTime;
use tracing::Instrument as _;
use uuid::Uuid;

/// Why an order operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("order {0} not found")]
    NotFound(OrderId),
    #[error("idempotency key was already used with a different request")]
    IdempotencyKeyReused,
    #[error("cursor is not one this service issued")]
    BadCursor,
    #[error("order {0} is {1} and cannot be cancelled; a FINISHED order can be refunded")]
    NotCancellable(OrderId, &'static str),
    #[error("order {0} is {1}; only a FINISHED order can be refunded")]
    NotRefundable(OrderId, &'static str),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Corrupt(RowError),
}

impl From<RowError> for OrderError {
    fn from(e: RowError) -> Self {
        match e {
            RowError::Query(q) => Self::Db(q.into()),
            corrupt => Self::Corrupt(corrupt),
        }
    }
}

shop_db::from_db_errors!(OrderError);

/// Creates a NEW order and enqueues its payment request on `requests_topic`
/// with ONE statement (order row and outbox row commit together), then
/// wakes `relay`. The request tells the ledger to pay before
/// `payment_timeout` has passed (the order expires a little later). Under an
/// idempotency key the same request returns the same order, and a
/// different one is refused.
pub async fn create(
    client: &impl GenericClient,
    relay: &RelayWake,
    requests_topic: &str,
    payment_timeout: std::time::Duration,
    new: NewOrder,
) -> Result<Order, OrderError> {
    let id = OrderId::new();
    let created_at = SystemTime::now();
    let event_id = Uuid::now_v7();
    let requested = PaymentRequested {
        event_id: event_id.to_string(),
        order_id: id.to_string(),
        user_id: new.user_id.to_string(),
        amount: new.amount.get(),
        requested_at: Some(to_timestamp(created_at)),
        pay_before: created_at.checked_add(payment_timeout).map(to_timestamp),
    };
    // The order and outbox row's transaction; the event's publish and
    // everything after it are this span's descendants.
    let transaction = shop_runtime::traces::when_on(|| {
        tracing::info_span!(
            "create order",
            otel.name = "create order transaction",
            order_id = %id,
            user_id = %new.user_id,
            event_id = %event_id,
        )
    });
    let event = NewEvent::encode(
        event_id,
        requests_topic,
        new.user_id,
        &requested,
        headers::of_span(&transaction),
    );
    let inserted = persistence::insert_order(client, id, created_at, &new, &event)
        .instrument(transaction)
        .await?;
    if let Some(order) = inserted {
        relay.wake();
        tracing::info!(order_id = %order.id, user_id = %order.user_id, amount = order.amount, "order created");
        return Ok(order);
    }
    // The user's idempotency key is taken: by this request before, or another.
    let existing = match &new.idempotency_key {
        Some(key) => persistence::find_order_by_key(client, new.user_id, key).await?,
        None => None,
    };
    existing.map_or(Err(OrderError::IdempotencyKeyReused), |e| replay(&new, e))
}

fn replay(new: &NewOrder, existing: Order) -> Result<Order, OrderError> {
    if new.matches(&existing) {
        Ok(existing)
    } else {
        Err(OrderError::IdempotencyKeyReused)
    }
}

/// One order with its current status.
pub async fn get(client: &impl GenericClient, id: OrderId) -> Result<Order, OrderError> {
    persistence::find_order(client, id)
        .await?
        .ok_or(OrderError::NotFound(id))
}

/// One page of the user's orders, newest first, and the cursor of the next.
pub async fn list(
    client: &impl GenericClient,
    user: UserId,
    limit: PageSize,
    cursor: &str,
) -> Result<(Vec<Order>, Option<String>), OrderError> {
    let limit = limit.get();
    let before = match cursor {
        "" => None,
        c => Some(OrderId::parse(c).map_err(|_| OrderError::BadCursor)?),
    };
    let mut page = persistence::list_orders(client, user, before, i64::from(limit) + 1).await?;
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let next = if more {
        page.last().map(|o| o.id.to_string())
    } else {
        None
    };
    Ok((page, next))
}

/// What a cancel or refund call did.
#[derive(Debug, Clone)]
pub struct Taken {
    /// The order after the call.
    pub order: Order,
    /// Whether this call changed it (false: it was already on its way, or there).
    pub accepted: bool,
}

/// Accepts the customer's cancellation of `user`'s order `id` (someone
/// else's is "not found"): a NEW order moves to CANCELLING
/// (CANCELLED_BY_USER) and its `CancellationRequested` goes to the outbox,
/// in one transaction; an expiring order becomes the customer's cancel; an
/// order already cancelled by its customer, or CANCELLED, is unchanged; FINISHED,
/// REFUNDING and REFUNDED are refused. The caller commits, then wakes the
/// relay if the call was accepted.
pub async fn cancel(
    tx: &Transaction<'_>,
    requests_topic: &str,
    id: OrderId,
    user: UserId,
) -> Result<Taken, OrderError> {
    let reason = CancelReason::CancelledByUser;
    let order = locked_for(tx, id, user).await?;
    match order.status {
        Status::New => {}
        // Expiring already: the cancellation is on its way to the ledger;
        // the customer's cancel is accepted and the order ends theirs.
        Status::Cancelling(CancelReason::Expired) => {
            let order = persistence::set_status(tx, id, Status::Cancelling(reason)).await?;
            return Ok(Taken {
                order,
                accepted: true,
            });
        }
        Status::Cancelling(_) | Status::Cancelled(_) => {
            return Ok(Taken {
                order,
                accepted: false,
            });
        }
        other => return Err(OrderError::NotCancellable(id, other.column())),
    }
    let moved = persistence::set_status(tx, id, Status::Cancelling(reason)).await?;
    outbox::enqueue_all(
        tx,
        &[cancellation_requested(requests_topic, &moved, reason)],
    )
    .await?;
    tracing::info!(order_id = %id, reason = reason.column(), "cancellation accepted");
    Ok(Taken {
        order: moved,
        accepted: true,
    })
}

/// Accepts the refund of `user`'s FINISHED order `id`: it moves to
/// REFUNDING and its `RefundRequested` goes to the outbox, in one
/// transaction; an order REFUNDING or REFUNDED is returned unchanged; any
/// other status is refused.
pub async fn refund(
    tx: &Transaction<'_>,
    requests_topic: &str,
    id: OrderId,
    user: UserId,
) -> Result<Taken, OrderError> {
    let order = locked_for(tx, id, user).await?;
    match order.status {
        Status::Finished => {}
        Status::Refunding | Status::Refunded => {
            return Ok(Taken {
                order,
                accepted: false,
            });
        }
        other => return Err(OrderError::NotRefundable(id, other.column())),
    }
    let moved = persistence::set_status(tx, id, Status::Refunding).await?;
    outbox::enqueue_all(tx, &[refund_requested(requests_topic, &moved)]).await?;
    tracing::info!(order_id = %id, "refund accepted");
    Ok(Taken {
        order: moved,
        accepted: true,
    })
}

/// Cancels, with reason EXPIRED, up to `limit` orders still NEW `timeout`
/// after they were created, in one transaction with their
/// `CancellationRequested` events; returns how many. The order's state is
/// checked when the sweep runs (an order paid or cancelled meanwhile is not
/// NEW any more), so nothing has to be un-scheduled.
pub async fn expire(
    tx: &Transaction<'_>,
    requests_topic: &str,
    timeout: std::time::Duration,
    limit: i64,
) -> Result<usize, OrderError> {
    let age_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    let expired = persistence::lock_expired(tx, age_ms, limit).await?;
    if expired.is_empty() {
        return Ok(0);
    }
    let ids: Vec<OrderId> = expired.iter().map(|o| o.id).collect();
    persistence::expire_all(tx, &ids).await?;
    let events: Vec<NewEvent> = expired
        .iter()
        .map(|order| cancellation_requested(requests_topic, order, CancelReason::Expired))
        .collect();
    outbox::enqueue_all(tx, &events).await?;
    for order in &expired {
        tracing::info!(order_id = %order.id, "unpaid order expired: cancelling");
    }
    Ok(expired.len())
}

/// The order, locked, if `user` placed it.
async fn locked_for(tx: &Transaction<'_>, id: OrderId, user: UserId) -> Result<Order, OrderError> {
    match persistence::lock_order(tx, id).await? {
        Some(order) if order.user_id == user => Ok(order),
        _ => Err(OrderError::NotFound(id)),
    }
}

/// The ledger's request to cancel `order`, keyed by user like its payment
/// request, so both reach the ledger on one partition.
fn cancellation_requested(topic: &str, order: &Order, reason: CancelReason) -> NewEvent {
    let event_id = Uuid::now_v7();
    let reason = match reason {
        CancelReason::Expired => CancellationReason::Expired,
        _ => CancellationReason::ByUser,
    };
    let event = CancellationRequested {
        event_id: event_id.to_string(),
        order_id: order.id.to_string(),
        user_id: order.user_id.to_string(),
        amount: order.amount,
        reason: reason.into(),
        requested_at: Some(to_timestamp(SystemTime::now())),
    };
    NewEvent::encode(
        event_id,
        topic,
        order.user_id,
        &event,
        headers::of_current_span(),
    )
}

/// The ledger's request to refund `order`, keyed by user.
fn refund_requested(topic: &str, order: &Order) -> NewEvent {
    let event_id = Uuid::now_v7();
    let event = RefundRequested {
        event_id: event_id.to_string(),
        order_id: order.id.to_string(),
        user_id: order.user_id.to_string(),
        amount: order.amount,
        requested_at: Some(to_timestamp(SystemTime::now())),
    };
    NewEvent::encode(
        event_id,
        topic,
        order.user_id,
        &event,
        headers::of_current_span(),
    )
}
