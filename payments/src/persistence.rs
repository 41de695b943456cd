//! All of the payments database: its migrations (`migrations/`, plus the
//! shared messaging schema) and the SQL as free functions over any client or
//! transaction, rows mapped once: accounts and credits, and the ledger's
//! exactly-once debit ([`decide`]).

use crate::domain::{Account, Decision, KeyedCredit, PaymentRequest};
use shop_db::{GenericClient, migrate};
use shop_proto::values::{Amount, IdempotencyKey, UserId};
use tokio_postgres::Row;
use uuid::Uuid;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Every migration of the payments database, the shared messaging schema included.
pub fn migrations() -> anyhow::Result<Vec<refinery::Migration>> {
    Ok(migrate::with_messaging(&embedded::migrations::runner())?)
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

/// Decides an order once, in the caller's transaction: insert the ledger row
/// (UNIQUE order id), debit only if the balance covers the amount, record the
/// decision. A repeated request returns the first decision and never debits
/// twice, even after a later top-up and even if inbox rows were cleaned up.
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
