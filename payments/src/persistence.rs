//! SQL for accounts and credits: free functions over any client or
//! transaction, rows mapped once.

use shop_db::GenericClient;
use shop_proto::values::{Amount, IdempotencyKey, UserId};
use std::time::SystemTime;
use tokio_postgres::Row;
use uuid::Uuid;

/// An account row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user_id: UserId,
    pub balance: i64,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

impl TryFrom<&Row> for Account {
    type Error = tokio_postgres::Error;

    fn try_from(row: &Row) -> Result<Self, Self::Error> {
        Ok(Self {
            user_id: UserId::from(row.try_get::<_, Uuid>("user_id")?),
            balance: row.try_get("balance")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// A credit that was recorded under an idempotency key.
#[derive(Debug, Clone)]
pub struct KeyedCredit {
    pub amount: i64,
    pub balance_after: i64,
    pub created_at: SystemTime,
}

const ACCOUNT_COLUMNS: &str = "user_id, balance, created_at, updated_at";

/// Inserts a new account; `None` when the user already has one.
pub async fn insert_account(
    db: &impl GenericClient,
    user: UserId,
    key: Option<&IdempotencyKey>,
) -> Result<Option<Account>, tokio_postgres::Error> {
    let sql = format!(
        "INSERT INTO accounts (user_id, idempotency_key) VALUES ($1, $2)
         ON CONFLICT (user_id) DO NOTHING RETURNING {ACCOUNT_COLUMNS}"
    );
    let row = db
        .query_opt(&sql, &[user.as_uuid(), &key.map(IdempotencyKey::as_str)])
        .await?;
    row.as_ref().map(Account::try_from).transpose()
}

/// The account and the key that opened it.
pub async fn find_account(
    db: &impl GenericClient,
    user: UserId,
) -> Result<Option<(Account, Option<String>)>, tokio_postgres::Error> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS}, idempotency_key FROM accounts WHERE user_id = $1");
    let Some(row) = db.query_opt(&sql, &[user.as_uuid()]).await? else {
        return Ok(None);
    };
    Ok(Some((
        Account::try_from(&row)?,
        row.try_get("idempotency_key")?,
    )))
}

/// Locks the account row for the rest of the transaction.
pub async fn lock_account(
    db: &impl GenericClient,
    user: UserId,
) -> Result<Option<Account>, tokio_postgres::Error> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE user_id = $1 FOR UPDATE");
    let row = db.query_opt(&sql, &[user.as_uuid()]).await?;
    row.as_ref().map(Account::try_from).transpose()
}

/// The credit recorded under `key`, if any.
pub async fn find_keyed_credit(
    db: &impl GenericClient,
    user: UserId,
    key: &IdempotencyKey,
) -> Result<Option<KeyedCredit>, tokio_postgres::Error> {
    let row = db
        .query_opt(
            "SELECT amount, balance_after, created_at FROM credits
             WHERE user_id = $1 AND idempotency_key = $2",
            &[user.as_uuid(), &key.as_str()],
        )
        .await?;
    row.map(|r| {
        Ok(KeyedCredit {
            amount: r.try_get("amount")?,
            balance_after: r.try_get("balance_after")?,
            created_at: r.try_get("created_at")?,
        })
    })
    .transpose()
}

/// Adds `amount` to the balance and records the credit in the ledger.
/// The caller holds the account lock and has checked for overflow.
pub async fn credit(
    db: &impl GenericClient,
    user: UserId,
    amount: Amount,
    key: Option<&IdempotencyKey>,
) -> Result<Account, tokio_postgres::Error> {
    let sql = format!(
        "UPDATE accounts SET balance = balance + $2, updated_at = now()
         WHERE user_id = $1 RETURNING {ACCOUNT_COLUMNS}"
    );
    let row = db.query_one(&sql, &[user.as_uuid(), &amount.get()]).await?;
    let account = Account::try_from(&row)?;
    db.execute(
        "INSERT INTO credits (user_id, amount, balance_after, idempotency_key, created_at)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            user.as_uuid(),
            &amount.get(),
            &account.balance,
            &key.map(IdempotencyKey::as_str),
            &account.updated_at,
        ],
    )
    .await?;
    Ok(account)
}
