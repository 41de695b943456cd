//! All of the payments database: its migrations (`migrations/`, plus the
//! shared messaging schema) and the SQL as free functions over any client or
//! transaction, rows mapped once: accounts and credits, and the ledger's
//! exactly-once debit ([`decide_all`]).

use crate::domain::{
    Account, Cancellation, CancellationRequest, Decision, KeyedCredit, PaymentRequest,
    RefundRequest,
};
use shop_db::retention::{Age, Sweep};
use shop_db::{GenericClient, migrate};
use shop_proto::values::{Amount, IdempotencyKey, OrderId, UserId};
use std::collections::{HashMap, HashSet};
use tokio_postgres::Row;
use uuid::Uuid;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Idempotency keys expire: the key is cleared, the credit or account stays.
pub const RETENTION: [Sweep; 2] = [
    Sweep {
        name: "expired top-up idempotency keys",
        age: Age::Idempotency,
        sql: "UPDATE credits SET idempotency_key = NULL WHERE id IN (
                  SELECT id FROM credits
                  WHERE idempotency_key IS NOT NULL
                    AND created_at < now() - $1::bigint * interval '1 millisecond'
                  LIMIT $2)",
    },
    Sweep {
        name: "expired account idempotency keys",
        age: Age::Idempotency,
        sql: "UPDATE accounts SET idempotency_key = NULL WHERE user_id IN (
                  SELECT user_id FROM accounts
                  WHERE idempotency_key IS NOT NULL
                    AND created_at < now() - $1::bigint * interval '1 millisecond'
                  LIMIT $2)",
    },
];

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

/// Decides each order once, in the caller's transaction, in order:
///
/// 1. one statement claims a ledger row (PRIMARY KEY `order_id`) for every
///    order of the batch not yet decided — a concurrent claim of the same
///    order waits for the other transaction and then finds the row taken;
/// 2. for each claimed order, one statement debits the account only if its
///    balance covers the amount and records the outcome in the ledger row;
/// 3. an order decided before (a redelivery, even after a later top-up and
///    even if inbox rows were cleaned up) gets its first decision back and
///    is never debited twice; an order whose cancellation came first finds
///    its row VOIDED and is never debited;
/// 4. a request seen after its `pay_before` deadline is voided, not debited
///    (its order has expired, or is about to, on the orders side).
///
/// Orders of one user arrive on one partition, in order, so their debits
/// run in the order they were placed.
pub async fn decide_all(
    db: &impl GenericClient,
    requests: &[PaymentRequest],
) -> Result<Vec<Decision>, DecideError> {
    let order_ids: Vec<Uuid> = requests.iter().map(|r| *r.order_id.as_uuid()).collect();
    let user_ids: Vec<Uuid> = requests.iter().map(|r| *r.user_id.as_uuid()).collect();
    let amounts: Vec<i64> = requests.iter().map(|r| r.amount.get()).collect();
    let event_ids: Vec<Uuid> = requests.iter().map(|r| r.event_id).collect();
    let claim = db.prepare_cached(CLAIM_LEDGER_ROWS).await?;
    let mut claimed: HashSet<Uuid> = db
        .query(&claim, &[&order_ids, &user_ids, &amounts, &event_ids])
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    let earlier: Vec<Uuid> = order_ids
        .iter()
        .filter(|id| !claimed.contains(id))
        .copied()
        .collect();
    let mut decided: HashMap<Uuid, Decision> = HashMap::new();
    if !earlier.is_empty() {
        let find = db
            .prepare_cached("SELECT order_id, outcome FROM payments WHERE order_id = ANY($1)")
            .await?;
        for row in db.query(&find, &[&earlier]).await? {
            let outcome: Option<String> = row.try_get(1)?;
            // Decided by an earlier transaction, which set the outcome in the
            // same commit that inserted the row (a NULL here is corruption,
            // reported below as `Undecided`).
            if let Some(decision) = outcome.as_deref().and_then(Decision::parse) {
                decided.insert(row.try_get(0)?, decision);
            }
        }
    }
    let decide = db.prepare_cached(DECIDE).await?;
    let now = std::time::SystemTime::now();
    let mut decisions = Vec::with_capacity(requests.len());
    for request in requests {
        let order = *request.order_id.as_uuid();
        if claimed.remove(&order) {
            // An order past its payment deadline has expired (or is about
            // to): it is voided, never debited.
            let late = request.pay_before.is_some_and(|deadline| deadline < now);
            let row = if late {
                let void = db.prepare_cached(VOID_CLAIMED).await?;
                db.query_one(&void, &[&order]).await?
            } else {
                db.query_one(
                    &decide,
                    &[&order, request.user_id.as_uuid(), &request.amount.get()],
                )
                .await?
            };
            let outcome: String = row.try_get(0)?;
            let decision = Decision::parse(&outcome).ok_or(DecideError::BadOutcome(outcome))?;
            tracing::info!(order_id = %request.order_id, user_id = %request.user_id, amount = request.amount.get(), decision = decision.as_str(), "payment decided");
            decided.insert(order, decision);
        } else {
            tracing::info!(order_id = %request.order_id, "order already decided");
        }
        let decision = decided
            .get(&order)
            .copied()
            .ok_or(DecideError::Undecided(request.order_id))?;
        decisions.push(decision);
    }
    Ok(decisions)
}

/// Settles a cancellation once, in the caller's transaction:
///
/// - an order not yet decided gets its ledger row now, with the outcome
///   VOIDED, so its `PaymentRequested`, whenever it comes, is refused;
/// - a PAID order is refunded: one `refunds` row (PRIMARY KEY `order_id`)
///   and the credit, in one statement, so a redelivered cancellation finds
///   the row and credits nothing;
/// - a declined order had nothing charged.
///
/// A redelivered cancellation gets the same answer as the first.
pub async fn cancel(
    db: &impl GenericClient,
    request: &CancellationRequest,
) -> Result<Cancellation, DecideError> {
    let order = request.order_id.as_uuid();
    let void = db.prepare_cached(VOID).await?;
    let voided = db
        .query_opt(
            &void,
            &[
                order,
                request.user_id.as_uuid(),
                &request.amount.get(),
                &request.event_id,
            ],
        )
        .await?;
    if voided.is_some() {
        return Ok(Cancellation::Voided);
    }
    let outcome = decided_outcome(db, request.order_id).await?;
    Ok(match outcome {
        Decision::Paid => {
            give_back(db, request.order_id, "CANCELLATION", request.event_id).await?;
            Cancellation::Refunded
        }
        Decision::Voided => Cancellation::Voided,
        Decision::InsufficientFunds | Decision::AccountNotFound => Cancellation::NothingCharged,
    })
}

/// Refunds a paid order once, in the caller's transaction: `Ok(true)` when
/// this call credited the amount back, `Ok(false)` when it had been already
/// (a redelivery, a replay). An order that was never paid cannot be
/// refunded: [`DecideError::NotPaid`].
pub async fn refund(db: &impl GenericClient, request: &RefundRequest) -> Result<bool, DecideError> {
    match decided_outcome(db, request.order_id).await {
        Ok(Decision::Paid) => give_back(db, request.order_id, "REFUND", request.event_id).await,
        Ok(_) | Err(DecideError::Undecided(_)) => Err(DecideError::NotPaid(request.order_id)),
        Err(e) => Err(e),
    }
}

/// The decision in the order's ledger row.
async fn decided_outcome(db: &impl GenericClient, order: OrderId) -> Result<Decision, DecideError> {
    let find = db
        .prepare_cached("SELECT outcome FROM payments WHERE order_id = $1")
        .await?;
    let outcome: Option<String> = match db.query_opt(&find, &[order.as_uuid()]).await? {
        Some(row) => row.try_get(0)?,
        None => None,
    };
    match outcome {
        Some(o) => Decision::parse(&o).ok_or(DecideError::BadOutcome(o)),
        None => Err(DecideError::Undecided(order)),
    }
}

/// Records the order's refund and credits its amount, unless it was
/// recorded before; returns whether this call credited.
async fn give_back(
    db: &impl GenericClient,
    order: OrderId,
    kind: &str,
    event_id: Uuid,
) -> Result<bool, DecideError> {
    let statement = db.prepare_cached(GIVE_BACK).await?;
    let credited = db
        .query_opt(&statement, &[order.as_uuid(), &kind, &event_id])
        .await?
        .is_some();
    if credited {
        tracing::info!(order_id = %order, kind, "amount credited back");
    } else {
        tracing::info!(order_id = %order, kind, "already credited back");
    }
    Ok(credited)
}

/// Records VOIDED in a just-claimed ledger row (a request past its deadline).
const VOID_CLAIMED: &str =
    "UPDATE payments SET outcome = 'VOIDED' WHERE order_id = $1 RETURNING outcome";

/// Claims the ledger row of an order not yet decided, as VOIDED.
const VOID: &str = "INSERT INTO payments (order_id, user_id, amount, request_event_id, outcome)
     VALUES ($1, $2, $3, $4, 'VOIDED')
     ON CONFLICT (order_id) DO NOTHING
     RETURNING order_id";

/// The refund row (once per order, from the ledger row's own user and
/// amount) and the credit, in one statement.
const GIVE_BACK: &str = "WITH refund AS (
         INSERT INTO refunds (order_id, user_id, amount, kind, request_event_id)
         SELECT order_id, user_id, amount, $2, $3 FROM payments
         WHERE order_id = $1 AND outcome = 'PAID'
         ON CONFLICT (order_id) DO NOTHING
         RETURNING user_id, amount
     )
     UPDATE accounts SET balance = balance + refund.amount, updated_at = now()
     FROM refund WHERE accounts.user_id = refund.user_id
     RETURNING accounts.balance";

/// Why a batch could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error(transparent)]
    Query(#[from] tokio_postgres::Error),
    #[error("the ledger holds an impossible outcome {0:?}")]
    BadOutcome(String),
    #[error("order {0} has no decided ledger row")]
    Undecided(OrderId),
    #[error("order {0} was never paid, so it cannot be refunded")]
    NotPaid(OrderId),
}

/// Claims a ledger row for each order not yet decided; returns their ids.
const CLAIM_LEDGER_ROWS: &str = "INSERT INTO payments (order_id, user_id, amount, request_event_id)
     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::uuid[])
     ON CONFLICT (order_id) DO NOTHING
     RETURNING order_id";

/// The decision for one claimed order: the conditional debit, then the
/// outcome recorded in its ledger row. The debit runs exactly once (a
/// data-modifying CTE always runs once); `accounts` in `decision` is read
/// from the statement's snapshot, where the account exists if it exists.
const DECIDE: &str = "WITH debit AS (
         UPDATE accounts SET balance = balance - $3, updated_at = now()
         WHERE user_id = $2 AND balance >= $3
         RETURNING user_id
     ), decision AS (
         SELECT CASE
             WHEN EXISTS (SELECT 1 FROM debit) THEN 'PAID'
             WHEN EXISTS (SELECT 1 FROM accounts WHERE user_id = $2) THEN 'INSUFFICIENT_FUNDS'
             ELSE 'ACCOUNT_NOT_FOUND'
         END AS outcome
     )
     UPDATE payments SET outcome = decision.outcome FROM decision
     WHERE payments.order_id = $1
     RETURNING payments.outcome";
