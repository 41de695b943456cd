//! `/api/v1/accounts`: open, read and top up accounts (payments service).

use super::AppState;
use crate::dto::{Account, CreateAccount, TopUp};
use crate::extract::{ApiJson, Caller, IdempotencyKeyHeader, invalid_body, invalid_param};
use crate::openapi::responses;
use crate::problem::{ApiError, Problem};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use shop_proto::payments as pb;
use shop_proto::values::{Amount, UserId};

fn account(a: Option<pb::Account>) -> Result<Account, ApiError> {
    a.map(Account::from)
        .ok_or_else(|| ApiError::from_grpc(&tonic::Status::internal("response without account")))
}

/// Open the user's account with a balance of 0.
#[utoipa::path(
    post, path = "/api/v1/accounts", tag = "accounts",
    security(("bearer" = [])),
    request_body = CreateAccount,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[ -~]+$", description = "Makes the request safe to retry: the same key returns the account instead of 409 (at most 255 characters)")),
    responses(
        (status = 201, description = "Account opened", body = Account,
            headers(("Location" = String, description = "URL of the account")),
            links(
                ("GetAccount" = (operation_id = "get_account", parameters(("user_id" = "$response.body#/user_id")))),
                ("TopUp" = (operation_id = "top_up", parameters(("user_id" = "$response.body#/user_id")))),
                ("ListOrders" = (operation_id = "list_orders", parameters(("user_id" = "$response.body#/user_id")))),
            )),
        (status = 400, description = "Malformed JSON or Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The user already has an account (`ACCOUNT_EXISTS`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field, e.g. `user_id` not a UUID (`VALIDATION_FAILED`)", body = Problem, content_type = "application/problem+json"),
        responses::Unauthenticated, responses::Forbidden, responses::RateLimited, responses::PaymentsUpstream, responses::Timeout,
    )
)]
pub async fn create_account(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKeyHeader,
    ApiJson(body): ApiJson<CreateAccount>,
) -> Result<(StatusCode, [(header::HeaderName, String); 1], Json<Account>), ApiError> {
    let user = caller.or_named(body.user_id.as_deref(), invalid_body)?;
    let response = state
        .upstreams
        .payments
        .clone()
        .create_account(state.upstreams.request(pb::CreateAccountRequest {
            user_id: user.to_string(),
            idempotency_key: key.as_field(),
        }))
        .await
        .map_err(ApiError::from_write)?;
    let account = account(response.into_inner().account)?;
    let location = format!("/api/v1/accounts/{user}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(account),
    ))
}

/// The account with its current balance.
#[utoipa::path(
    get, path = "/api/v1/accounts/{user_id}", tag = "accounts",
    security(("bearer" = [])),
    params(("user_id" = String, Path, format = Uuid, description = "The user's id")),
    responses(
        (status = 200, description = "The account", body = Account),
        (status = 400, description = "`user_id` is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No account (`ACCOUNT_NOT_FOUND`)", body = Problem, content_type = "application/problem+json"),
        responses::Unauthenticated, responses::Forbidden, responses::PaymentsUpstream, responses::Timeout,
    )
)]
pub async fn get_account(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> Result<Json<Account>, ApiError> {
    let user = UserId::parse(&user_id).map_err(invalid_param)?;
    caller.must_be(user)?;
    let response = state
        .upstreams
        .payments
        .clone()
        .get_account(state.upstreams.request(pb::GetAccountRequest {
            user_id: user.to_string(),
        }))
        .await?;
    Ok(Json(account(response.into_inner().account)?))
}

/// Credit the account.
#[utoipa::path(
    post, path = "/api/v1/accounts/{user_id}/top-up", tag = "accounts",
    security(("bearer" = [])),
    request_body = TopUp,
    params(
        ("user_id" = String, Path, format = Uuid, description = "The user's id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[ -~]+$", description = "The same key with the same amount returns the original result and credits once; with another amount it is 422 `IDEMPOTENCY_KEY_REUSED`"),
    ),
    responses(
        (status = 200, description = "The account with its new balance", body = Account,
            links(("GetAccount" = (operation_id = "get_account", parameters(("user_id" = "$response.body#/user_id")))))),
        (status = 400, description = "Malformed JSON, `user_id` or Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No account (`ACCOUNT_NOT_FOUND`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`INVALID_AMOUNT`, `BALANCE_OVERFLOW`, `IDEMPOTENCY_KEY_REUSED` or another invalid field", body = Problem, content_type = "application/problem+json"),
        responses::Unauthenticated, responses::Forbidden, responses::RateLimited, responses::PaymentsUpstream, responses::Timeout,
    )
)]
pub async fn top_up(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    key: IdempotencyKeyHeader,
    ApiJson(body): ApiJson<TopUp>,
) -> Result<Json<Account>, ApiError> {
    let user = UserId::parse(&user_id).map_err(invalid_param)?;
    caller.must_be(user)?;
    let amount = Amount::try_from(body.amount).map_err(invalid_body)?;
    let response = state
        .upstreams
        .payments
        .clone()
        .top_up(state.upstreams.request(pb::TopUpRequest {
            user_id: user.to_string(),
            amount: amount.get(),
            idempotency_key: key.as_field(),
        }))
        .await
        .map_err(ApiError::from_write)?;
    Ok(Json(account(response.into_inner().account)?))
}
