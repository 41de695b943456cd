//! Order use cases, called by [`crate::grpc`]: each opens and commits its
//! own transaction. Creating an order writes the order and its
//! `PaymentRequested` event to the outbox in ONE transaction (no Kafka call
//! on the request path); the relay publishes it after the commit.

use crate::domain::{NewOrder, Order};
use crate::persistence::{self, RowError};
use shop_db::outbox::{self, NewEvent};
use shop_db::{DbError, Pool, headers};
use shop_proto::events::PaymentRequested;
use shop_proto::time::to_timestamp;
use shop_proto::values::{DEFAULT_PAGE, MAX_PAGE, OrderId, UserId};
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

/// Creates a NEW order and enqueues its payment request on `requests_topic`.
/// Under an idempotency key the same request returns the same order.
pub async fn create(pool: &Pool, requests_topic: &str, new: NewOrder) -> Result<Order, OrderError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    if let Some(key) = &new.idempotency_key
        && let Some(existing) = persistence::find_by_key(&tx, new.user_id, key).await?
    {
        return replay(&new, existing);
    }
    let Some(order) = persistence::insert(&tx, OrderId::new(), &new).await? else {
        // A concurrent request with the same key committed first.
        let existing = match &new.idempotency_key {
            Some(key) => persistence::find_by_key(&tx, new.user_id, key).await?,
            None => None,
        };
        return existing.map_or(Err(OrderError::IdempotencyKeyReused), |e| replay(&new, e));
    };
    let event_id = Uuid::now_v7();
    let requested = PaymentRequested {
        event_id: event_id.to_string(),
        order_id: order.id.to_string(),
        user_id: order.user_id.to_string(),
        amount: order.amount,
        requested_at: Some(to_timestamp(order.created_at)),
    };
    let event = NewEvent::encode(
        event_id,
        requests_topic,
        order.user_id,
        &requested,
        headers::new_root(),
    );
    outbox::enqueue(&tx, &event).await?;
    tx.commit().await?;
    tracing::info!(order_id = %order.id, user_id = %order.user_id, amount = order.amount, "order created");
    Ok(order)
}

fn replay(new: &NewOrder, existing: Order) -> Result<Order, OrderError> {
    if new.matches(&existing) {
        Ok(existing)
    } else {
        Err(OrderError::IdempotencyKeyReused)
    }
}

/// One order with its current status.
pub async fn get(pool: &Pool, id: OrderId) -> Result<Order, OrderError> {
    let client = pool.get().await?;
    persistence::find(&client, id)
        .await?
        .ok_or(OrderError::NotFound(id))
}

/// One page of the user's orders, newest first, and the cursor of the next.
pub async fn list(
    pool: &Pool,
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
    let client = pool.get().await?;
    let mut page = persistence::list(&client, user, before, i64::from(limit) + 1).await?;
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let next = if more {
        page.last().map(|o| o.id.to_string())
    } else {
        None
    };
    Ok((page, next))
}
