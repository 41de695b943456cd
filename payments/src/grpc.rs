//! The `shop.payments.v1.Payments` gRPC service, the edge of the payments
//! service: converts requests into checked values, calls the use cases in
//! [`crate::accounts`], converts accounts back to proto and maps use-case
//! errors to statuses, once.

use crate::accounts::{self, AccountError};
use crate::domain::Account;
use shop_db::gate::KeyGate;
use shop_db::{CallClient, Pool};
use shop_proto::error_code::{ErrorCode, invalid_argument};
use shop_proto::payments as pb;
use shop_proto::time::to_timestamp;
use shop_proto::values::{Amount, IdempotencyKey, UserId, ValueError};
use tonic::{Code, Request, Response, Status};

pub use pb::payments_server::PaymentsServer;

/// The gRPC front of the account use cases.
#[derive(Debug, Clone)]
pub struct PaymentsGrpc {
    /// The API's own pool ([`shop_db::pool::connect_for_api`]).
    api: Pool,
    /// Calls in flight per account: a locked account row holds a few
    /// connections at most, never the pool.
    accounts: KeyGate<UserId>,
}

impl PaymentsGrpc {
    /// A service over the payments database's API pool, letting
    /// `calls_per_account` calls per account hold a connection at once.
    pub fn new(api: Pool, calls_per_account: usize) -> Self {
        Self {
            api,
            accounts: KeyGate::new(calls_per_account),
        }
    }

    /// A place for one call on `user`'s account and a connection for it.
    async fn enter(
        &self,
        user: UserId,
    ) -> Result<(shop_db::gate::Permit<UserId>, CallClient), Status> {
        let permit = self.accounts.enter(&user).await.ok_or_else(|| {
            ErrorCode::Unavailable.status(
                Code::Unavailable,
                format!("too many calls waiting on account {user}, retry later"),
            )
        })?;
        let client = CallClient::get(&self.api)
            .await
            .map_err(|e| shop_db::DbError::from(e).to_status())?;
        Ok((permit, client))
    }
}

#[tonic::async_trait]
impl pb::payments_server::Payments for PaymentsGrpc {
    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::CreateAccountResponse>, Status> {
        let req = request.into_inner();
        let user = UserId::parse(&req.user_id).map_err(invalid)?;
        let key = IdempotencyKey::parse_optional(&req.idempotency_key).map_err(invalid)?;
        let (_permit, client) = self.enter(user).await?;
        let opened = accounts::open(&*client, user, key).await;
        client.release();
        let account = opened.map_err(status)?;
        Ok(Response::new(pb::CreateAccountResponse {
            account: Some(to_proto(account)),
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let user = UserId::parse(&request.get_ref().user_id).map_err(invalid)?;
        let (_permit, client) = self.enter(user).await?;
        let found = accounts::get(&*client, user).await;
        client.release();
        let account = found.map_err(status)?;
        Ok(Response::new(pb::GetAccountResponse {
            account: Some(to_proto(account)),
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn top_up(
        &self,
        request: Request<pb::TopUpRequest>,
    ) -> Result<Response<pb::TopUpResponse>, Status> {
        let req = request.into_inner();
        let user = UserId::parse(&req.user_id).map_err(invalid)?;
        let amount = Amount::try_from(req.amount).map_err(invalid)?;
        let key = IdempotencyKey::parse_optional(&req.idempotency_key).map_err(invalid)?;
        let (_permit, mut client) = self.enter(user).await?;
        let credited = accounts::top_up(&mut client, user, amount, key).await;
        client.release();
        let account = credited.map_err(status)?;
        Ok(Response::new(pb::TopUpResponse {
            account: Some(to_proto(account)),
        }))
    }
}

fn to_proto(account: Account) -> pb::Account {
    pb::Account {
        user_id: account.user_id.to_string(),
        balance: account.balance,
        created_at: Some(to_timestamp(account.created_at)),
        updated_at: Some(to_timestamp(account.updated_at)),
    }
}

fn invalid(e: ValueError) -> Status {
    invalid_argument(&e)
}

/// The one mapping from use-case errors to gRPC statuses.
pub fn status(e: AccountError) -> Status {
    match &e {
        AccountError::AlreadyExists(_) => {
            ErrorCode::AccountExists.status(Code::AlreadyExists, e.to_string())
        }
        AccountError::NotFound(_) => {
            ErrorCode::AccountNotFound.status(Code::NotFound, e.to_string())
        }
        AccountError::BalanceOverflow { .. } => {
            ErrorCode::BalanceOverflow.status(Code::FailedPrecondition, e.to_string())
        }
        AccountError::IdempotencyKeyReused => {
            ErrorCode::IdempotencyKeyReused.status(Code::FailedPrecondition, e.to_string())
        }
        AccountError::Db(db) => db.to_status(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_codes_without_leaking_internals() {
        let user = UserId::from(uuid::Uuid::nil());
        let cases = [
            (
                AccountError::AlreadyExists(user),
                Code::AlreadyExists,
                ErrorCode::AccountExists,
            ),
            (
                AccountError::NotFound(user),
                Code::NotFound,
                ErrorCode::AccountNotFound,
            ),
            (
                AccountError::IdempotencyKeyReused,
                Code::FailedPrecondition,
                ErrorCode::IdempotencyKeyReused,
            ),
        ];
        for (err, code, error_code) in cases {
            let s = status(err);
            assert_eq!(s.code(), code);
            assert_eq!(ErrorCode::of(&s), Some(error_code));
        }
    }
}
