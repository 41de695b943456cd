//! All of the orders database: its migrations (`migrations/`, plus the shared
//! messaging schema), the NOTIFY channel its status trigger fires, and the
//! SQL as free functions over any client or transaction, rows mapped once.

use crate::domain::{NewOrder, Order, Status};
use shop_db::outbox::{self, NewEvent};
use shop_db::retention::{Age, Sweep};
use shop_db::{GenericClient, migrate};
use shop_proto::values::{IdempotencyKey, OrderId, UserId};
use std::time::SystemTime;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

/// The channel the `order_statuses_changed` trigger
/// (`migrations/V9__status_notify_per_statement.sql`) notifies once per
/// UPDATE that changes statuses, with the changed order ids as payload,
/// comma-separated, at most 200 per notification; it must match
/// `pg_notify('order_statuses', …)` there (a test checks).
pub const STATUS_CHANNEL: &str = "order_statuses";

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Idempotency keys expire: the key is cleared, the order stays.
pub const RETENTION: [Sweep; 1] = [Sweep {
    name: "expired order idempotency keys",
    age: Age::Idempotency,
    sql: "UPDATE orders SET idempotency_key = NULL WHERE id IN (
              SELECT id FROM orders
              WHERE idempotency_key IS NOT NULL
                AND created_at < now() - $1::bigint * interval '1 millisecond'
              LIMIT $2)",
}];

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

/// Inserts a NEW order and its payment request in the outbox, in one
/// statement (so one round trip and one commit); `None` when the user's
/// idempotency key is already taken (then nothing is written).
pub async fn insert_order(
    db: &impl GenericClient,
    id: OrderId,
    created_at: SystemTime,
    new: &NewOrder,
    event: &NewEvent,
) -> Result<Option<Order>, RowError> {
    let sql = format!(
        "WITH inserted AS (
             INSERT INTO orders (id, user_id, amount, description, idempotency_key, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)
             ON CONFLICT (user_id, idempotency_key) DO NOTHING
             RETURNING {COLUMNS}
         ), event AS ({})
         SELECT {COLUMNS} FROM inserted",
        outbox::insert_per_row("inserted", 7)
    );
    let statement = db.prepare_cached(&sql).await?;
    let amount = new.amount.get();
    let description = new.description.as_str();
    let key = new.idempotency_key.as_ref().map(IdempotencyKey::as_str);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        id.as_uuid(),
        new.user_id.as_uuid(),
        &amount,
        &description,
        &key,
        &created_at,
    ];
    params.extend(event.params());
    let rows = db.query(&statement, &params).await?;
    Ok(map_rows(&rows)?.pop())
}

/// The order created under the user's idempotency key, if any.
pub async fn find_order_by_key(
    db: &impl GenericClient,
    user: UserId,
    key: &IdempotencyKey,
) -> Result<Option<Order>, RowError> {
    let sql = format!("SELECT {COLUMNS} FROM orders WHERE user_id = $1 AND idempotency_key = $2");
    let statement = db.prepare_cached(&sql).await?;
    let rows = db
        .query(&statement, &[user.as_uuid(), &key.as_str()])
        .await?;
    Ok(map_rows(&rows)?.pop())
}

/// One order.
pub async fn find_order(db: &impl GenericClient, id: OrderId) -> Result<Option<Order>, RowError> {
    let sql = format!("SELECT {COLUMNS} FROM orders WHERE id = $1");
    let statement = db.prepare_cached(&sql).await?;
    let rows = db.query(&statement, &[id.as_uuid()]).await?;
    Ok(map_rows(&rows)?.pop())
}

/// Up to `limit` of the user's orders older than `before`, newest first.
pub async fn list_orders(
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
    let statement = db.prepare_cached(&sql).await?;
    let rows = db
        .query(
            &statement,
            &[user.as_uuid(), &before.map(|b| *b.as_uuid()), &limit],
        )
        .await?;
    map_rows(&rows)
}

/// One step of an order's life, applied only from the status it expects.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub order: OrderId,
    /// The status column the order must have (`NEW`, `CANCELLING`, …).
    pub from: &'static str,
    pub to: Status,
}

/// Applies each transition whose order is in its `from` status, in one
/// statement; returns the orders that moved, each with the seconds from its
/// creation to now. An order in any other status is left alone, so a
/// redelivered or late result changes nothing and nothing reverses a final
/// status. A CANCELLING order keeps its reason (a customer's cancel of an
/// expiring order makes it theirs). (Two transitions of one order in one
/// call cannot both match: an order is in one status.)
pub async fn transition_all(
    db: &impl GenericClient,
    changes: &[Transition],
) -> Result<Vec<(OrderId, f64)>, tokio_postgres::Error> {
    let ids: Vec<Uuid> = changes.iter().map(|c| *c.order.as_uuid()).collect();
    let from: Vec<&str> = changes.iter().map(|c| c.from).collect();
    let statuses: Vec<&str> = changes.iter().map(|c| c.to.column()).collect();
    let reasons: Vec<Option<&str>> = changes.iter().map(|c| c.to.reason_column()).collect();
    let statement = db
        .prepare_cached(
            "UPDATE orders AS o
             SET status = c.status, cancel_reason = coalesce(o.cancel_reason, c.reason),
                 updated_at = clock_timestamp()
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])
                  AS c(id, from_status, status, reason)
             WHERE o.id = c.id AND o.status = c.from_status
             RETURNING o.id, extract(epoch FROM o.updated_at - o.created_at)::float8",
        )
        .await?;
    db.query(&statement, &[&ids, &from, &statuses, &reasons])
        .await?
        .iter()
        .map(|row| Ok((OrderId::from(row.try_get::<_, Uuid>(0)?), row.try_get(1)?)))
        .collect()
}

/// The order, locked until the end of the caller's transaction.
pub async fn lock_order(db: &impl GenericClient, id: OrderId) -> Result<Option<Order>, RowError> {
    let sql = format!("SELECT {COLUMNS} FROM orders WHERE id = $1 FOR UPDATE");
    let statement = db.prepare_cached(&sql).await?;
    let rows = db.query(&statement, &[id.as_uuid()]).await?;
    Ok(map_rows(&rows)?.pop())
}

/// Sets the status of an order the caller has locked.
pub async fn set_status(
    db: &impl GenericClient,
    id: OrderId,
    status: Status,
) -> Result<Order, RowError> {
    let sql = format!(
        "UPDATE orders SET status = $2, cancel_reason = $3, updated_at = clock_timestamp()
         WHERE id = $1 RETURNING {COLUMNS}"
    );
    let statement = db.prepare_cached(&sql).await?;
    let rows = db
        .query(
            &statement,
            &[id.as_uuid(), &status.column(), &status.reason_column()],
        )
        .await?;
    map_rows(&rows)?
        .pop()
        .ok_or_else(|| RowError::BadStatus("locked order vanished".to_owned()))
}

/// Up to `limit` orders still NEW `age_ms` after they were created, oldest
/// first, locked until the end of the caller's transaction; orders another
/// transaction holds (another replica's sweep, a cancel) are skipped.
pub async fn lock_expired(
    db: &impl GenericClient,
    age_ms: i64,
    limit: i64,
) -> Result<Vec<Order>, RowError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM orders
         WHERE status = 'NEW' AND created_at < now() - $1::bigint * interval '1 millisecond'
         ORDER BY created_at LIMIT $2
         FOR UPDATE SKIP LOCKED"
    );
    let statement = db.prepare_cached(&sql).await?;
    let rows = db.query(&statement, &[&age_ms, &limit]).await?;
    map_rows(&rows)
}

/// Moves the locked orders `ids` to CANCELLING with reason EXPIRED.
pub async fn expire_all(db: &impl GenericClient, ids: &[OrderId]) -> Result<u64, RowError> {
    let ids: Vec<Uuid> = ids.iter().map(|id| *id.as_uuid()).collect();
    let statement = db
        .prepare_cached(
            "UPDATE orders SET status = 'CANCELLING', cancel_reason = 'EXPIRED',
                    updated_at = clock_timestamp()
             WHERE id = ANY($1) AND status = 'NEW'",
        )
        .await?;
    Ok(db.execute(&statement, &[&ids]).await?)
}

/// Which of `ids` exist.
pub async fn existing(
    db: &impl GenericClient,
    ids: &[OrderId],
) -> Result<Vec<OrderId>, tokio_postgres::Error> {
    let ids: Vec<Uuid> = ids.iter().map(|id| *id.as_uuid()).collect();
    let statement = db
        .prepare_cached("SELECT id FROM orders WHERE id = ANY($1)")
        .await?;
    db.query(&statement, &[&ids])
        .await?
        .iter()
        .map(|row| Ok(OrderId::from(row.try_get::<_, Uuid>(0)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_status_channel_is_the_one_the_trigger_notifies() {
        let sql = include_str!("../migrations/V9__status_notify_per_statement.sql");
        assert!(sql.contains(&format!("pg_notify('{}'", super::STATUS_CHANNEL)));
    }
}
