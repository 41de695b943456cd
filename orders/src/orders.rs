//! Order use cases, called by [`crate::grpc`]. Creating an order writes the
//! order and its `PaymentRequested` event to the outbox in ONE statement, so
//! they commit together (no Kafka call on the request path); the relay
//! publishes the event after the commit.

use crate::domain::{NewOrder, Order};
use crate::persistence::{self, RowError};
use shop_db::outbox::{NewEvent, RelayWake};
use shop_db::{DbError, GenericClient, headers};
use shop_proto::events::PaymentRequested;
use shop_proto::time::to_timestamp;
use shop_proto::values::{DEFAULT_PAGE, MAX_PAGE, OrderId, UserId};
use std::time::SystemTime;
use uuid::Uuid;

/// Why an order operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("order {0} not found")]
    NotFound(OrderId),
    #[error("idempotency key was already used with a different request")]
    IdempotencyKeyReused,
    #[error("limit must be between 1 and {MAX_PAGE}, got {0}")]
    BadLimit(u32),
    #[error("cursor is not one this service issued")]
    BadCursor,
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

impl From<tokio_postgres::Error> for OrderError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

impl From<shop_db::deadpool_postgres::PoolError> for OrderError {
    fn from(e: shop_db::deadpool_postgres::PoolError) -> Self {
        Self::Db(e.into())
    }
}

/// Creates a NEW order and enqueues its payment request on `requests_topic`
/// with ONE statement (order row and outbox row commit together), then
/// wakes `relay`. Under an idempotency key the same request returns the
/// same order, and a different one is refused.
pub async fn create(
    client: &impl GenericClient,
    relay: &RelayWake,
    requests_topic: &str,
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
    };
    let event = NewEvent::encode(
        event_id,
        requests_topic,
        new.user_id,
        &requested,
        headers::new_root(),
    );
    if let Some(order) =
        persistence::insert_with_event(client, id, created_at, &new, &event).await?
    {
        relay.wake();
        tracing::info!(order_id = %order.id, user_id = %order.user_id, amount = order.amount, "order created");
        return Ok(order);
    }
    // The user's idempotency key is taken: by this request before, or another.
    let existing = match &new.idempotency_key {
        Some(key) => persistence::find_by_key(client, new.user_id, key).await?,
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
    persistence::find(client, id)
        .await?
        .ok_or(OrderError::NotFound(id))
}

/// One page of the user's orders, newest first, and the cursor of the next.
pub async fn list(
    client: &impl GenericClient,
    user: UserId,
    limit: u32,
    cursor: &str,
) -> Result<(Vec<Order>, Option<String>), OrderError> {
    let limit = match limit {
        0 => DEFAULT_PAGE,
        l if l <= MAX_PAGE => l,
        l => return Err(OrderError::BadLimit(l)),
    };
    let before = match cursor {
        "" => None,
        c => Some(OrderId::parse(c).map_err(|_| OrderError::BadCursor)?),
    };
    let mut page = persistence::list(client, user, before, i64::from(limit) + 1).await?;
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let next = if more {
        page.last().map(|o| o.id.to_string())
    } else {
        None
    };
    Ok((page, next))
}
