//! All of the orders database: its migrations (`migrations/`, plus the shared
//! messaging schema), the NOTIFY channel its status trigger fires, and the
//! SQL as free functions over any client or transaction, rows mapped once.

use crate::domain::{NewOrder, Order, Status};
use shop_db::{GenericClient, migrate};
use shop_proto::values::{IdempotencyKey, OrderId, UserId};
use tokio_postgres::Row;
use uuid::Uuid;

/// The channel the `order_status_changed` trigger (`migrations/V1__orders.sql`)
/// notifies on every status change, with the order id as payload; it must
/// match `pg_notify('order_status', …)` there (a test checks).
pub const STATUS_CHANNEL: &str = "order_status";

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Every migration of the orders database, the shared messaging schema included.
pub fn migrations() -> anyhow::Result<Vec<refinery::Migration>> {
    Ok(migrate::with_messaging(&embedded::migrations::runner())?)
}

/// A row that breaks the schema's own rules.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error(transparent)]
    Query(#[from] tokio_postgres::Error),
    #[error("order row has an impossible status {0:?}")]
    BadStatus(String),
}

impl TryFrom<&Row> for Order {
    type Error = RowError;

    fn try_from(row: &Row) -> Result<Self, Self::Error> {
        let status: String = row.try_get("status")?;
        let reason: Option<String> = row.try_get("cancel_reason")?;
        Ok(Self {
            id: OrderId::from(row.try_get::<_, Uuid>("id")?),
            user_id: UserId::from(row.try_get::<_, Uuid>("user_id")?),
            amount: row.try_get("amount")?,
            description: row.try_get("description")?,
            status: Status::from_columns(&status, reason.as_deref())
                .ok_or(RowError::BadStatus(status))?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

const COLUMNS: &str =
    "id, user_id, amount, description, status, cancel_reason, created_at, updated_at";

fn map_rows(rows: &[Row]) -> Result<Vec<Order>, RowError> {
    rows.iter().map(Order::try_from).collect()
}

/// Inserts a NEW order; `None` when the user's idempotency key is already taken.
pub async fn insert(
    db: &impl GenericClient,
    id: OrderId,
    new: &NewOrder,
) -> Result<Option<Order>, RowError> {
    let sql = format!(
        "INSERT INTO orders (id, user_id, amount, description, idempotency_key)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING {COLUMNS}"
    );
    let rows = db
        .query(
            &sql,
            &[
                id.as_uuid(),
                new.user_id.as_uuid(),
                &new.amount.get(),
                &new.description.as_str(),
                &new.idempotency_key.as_ref().map(IdempotencyKey::as_str),
            ],
        )
        .await?;
    Ok(map_rows(&rows)?.pop())
}

/// The order created under the user's idempotency key, if any.
pub async fn find_by_key(
    db: &impl GenericClient,
    user: UserId,
    key: &IdempotencyKey,
) -> Result<Option<Order>, RowError> {
    let sql = format!("SELECT {COLUMNS} FROM orders WHERE user_id = $1 AND idempotency_key = $2");
    let rows = db.query(&sql, &[user.as_uuid(), &key.as_str()]).await?;
    Ok(map_rows(&rows)?.pop())
}

/// One order.
pub async fn find(db: &impl GenericClient, id: OrderId) -> Result<Option<Order>, RowError> {
    let sql = format!("SELECT {COLUMNS} FROM orders WHERE id = $1");
    let rows = db.query(&sql, &[id.as_uuid()]).await?;
    Ok(map_rows(&rows)?.pop())
}

/// Up to `limit` of the user's orders older than `before`, newest first.
pub async fn list(
    db: &impl GenericClient,
    user: UserId,
    before: Option<OrderId>,
    limit: i64,
) -> Result<Vec<Order>, RowError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM orders
         WHERE user_id = $1 AND ($2::uuid IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3"
    );
    let rows = db
        .query(
            &sql,
            &[user.as_uuid(), &before.map(|b| *b.as_uuid()), &limit],
        )
        .await?;
    map_rows(&rows)
}

/// Moves a NEW order to `status`; `false` if it was not NEW (or does not exist).
pub async fn finalise(
    db: &impl GenericClient,
    id: OrderId,
    status: Status,
) -> Result<bool, tokio_postgres::Error> {
    let updated = db
        .execute(
            "UPDATE orders SET status = $2, cancel_reason = $3, updated_at = now()
             WHERE id = $1 AND status = 'NEW'",
            &[id.as_uuid(), &status.column(), &status.reason_column()],
        )
        .await?;
    Ok(updated == 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_status_channel_is_the_one_the_trigger_notifies() {
        let sql = include_str!("../migrations/V1__orders.sql");
        assert!(sql.contains(&format!("pg_notify('{}'", super::STATUS_CHANNEL)));
    }
}
