//! Account use cases, called by [`crate::grpc`]: open, read and top up, on
//! the connection the gRPC edge took for the call (from the API pool). Open
//! and read are one statement each; a top-up opens and commits its own
//! transaction.

use crate::domain::Account;
use crate::persistence;
use shop_db::{DbError, GenericClient};
use shop_proto::values::{Amount, IdempotencyKey, UserId};

/// Why an account operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("account {0} already exists")]
    AlreadyExists(UserId),
    #[error("account {0} not found")]
    NotFound(UserId),
    #[error("a top-up of {amount} would overflow the balance of account {user}")]
    BalanceOverflow { user: UserId, amount: Amount },
    #[error("idempotency key was already used with a different request")]
    IdempotencyKeyReused,
    #[error(transparent)]
    Db(#[from] DbError),
}

shop_db::from_db_errors!(AccountError);

/// Opens the user's account with a zero balance. Replaying the key that
/// opened it returns the account instead of `AlreadyExists`.
pub async fn open(
    client: &impl GenericClient,
    user: UserId,
    key: Option<IdempotencyKey>,
) -> Result<Account, AccountError> {
    if let Some(account) = persistence::insert_account(client, user, key.as_ref()).await? {
        tracing::info!(user_id = %user, "account opened");
        return Ok(account);
    }
    match persistence::find_account(client, user).await? {
        Some((account, opened_with))
            if key.is_some()
                && opened_with.as_deref() == key.as_ref().map(IdempotencyKey::as_str) =>
        {
            Ok(account)
        }
        _ => Err(AccountError::AlreadyExists(user)),
    }
}

/// The account with its current balance.
pub async fn get(client: &impl GenericClient, user: UserId) -> Result<Account, AccountError> {
    persistence::find_account(client, user)
        .await?
        .map(|(account, _)| account)
        .ok_or(AccountError::NotFound(user))
}

/// Credits the account. Under a key, a replay with the same amount returns
/// the account as it was right after the original credit, and credits nothing.
pub async fn top_up(
    client: &mut shop_db::deadpool_postgres::Client,
    user: UserId,
    amount: Amount,
    key: Option<IdempotencyKey>,
) -> Result<Account, AccountError> {
    let tx = client.transaction().await?;
    let current = persistence::lock_account(&tx, user)
        .await?
        .ok_or(AccountError::NotFound(user))?;
    if let Some(key) = &key
        && let Some(previous) = persistence::find_keyed_credit(&tx, user, key).await?
    {
        if previous.amount != amount.get() {
            return Err(AccountError::IdempotencyKeyReused);
        }
        return Ok(Account {
            balance: previous.balance_after,
            updated_at: previous.created_at,
            ..current
        });
    }
    if current.balance.checked_add(amount.get()).is_none() {
        return Err(AccountError::BalanceOverflow { user, amount });
    }
    let account = persistence::credit(&tx, user, amount, key.as_ref()).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user, amount = amount.get(), balance = account.balance, "account credited");
    Ok(account)
}
