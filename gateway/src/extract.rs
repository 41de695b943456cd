//! Request extraction that never panics and always answers with a problem
//! document: the authenticated caller, strict JSON bodies and query strings,
//! the Idempotency-Key header. (Path ids are parsed by the handlers, with
//! `shop_proto::values`.)

use crate::problem::{ApiCode, ApiError};
use crate::state::AppState;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use shop_proto::error_code::ErrorCode;
use shop_proto::values::{IdempotencyKey, UserId, ValueError};

/// A JSON body (`Content-Type: application/json`, unknown fields refused).
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiCode::UnsupportedMediaType,
            "expected Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            ApiCode::MalformedJson,
            e.body_text(),
        ),
        JsonRejection::JsonDataError(e) => {
            ApiError::invalid(ErrorCode::ValidationFailed, e.body_text())
        }
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ApiCode::PayloadTooLarge,
                "request body is larger than 64 KiB",
            )
        }
        other => ApiError::new(
            StatusCode::BAD_REQUEST,
            ApiCode::BadRequest,
            other.body_text(),
        ),
    }
}

/// A query string, unknown parameters refused.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| ApiError::bad_request(e.body_text()))
    }
}

/// The optional `Idempotency-Key` header (at most 255 characters).
#[derive(Debug, Clone)]
pub struct IdempotencyKeyHeader(pub Option<IdempotencyKey>);

impl IdempotencyKeyHeader {
    /// The key as the gRPC field wants it (empty = none).
    pub fn as_field(&self) -> String {
        self.0
            .as_ref()
            .map(|k| k.as_str().to_owned())
            .unwrap_or_default()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(Self(None));
        };
        let text = value
            .to_str()
            .map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?;
        if text.is_empty() {
            return Err(ApiError::bad_request("Idempotency-Key must not be empty"));
        }
        IdempotencyKey::parse_optional(text)
            .map(Self)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    }
}

/// A value rule broken inside a JSON body: 422 (amounts have their own code).
pub fn invalid_body(e: ValueError) -> ApiError {
    let code = match e {
        ValueError::AmountOutOfRange(_) => ErrorCode::InvalidAmount,
        _ => ErrorCode::ValidationFailed,
    };
    ApiError::invalid(code, e.to_string())
}

/// A value rule broken in the path or query: 400.
pub fn invalid_param(e: ValueError) -> ApiError {
    ApiError::bad_request(e.to_string())
}

/// The authenticated caller: the user named by the request's bearer token
/// (`Authorization: Bearer <token>`). Missing, malformed, expired or forged
/// tokens are 401. A write (POST) also counts against the caller's rate limit.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub UserId);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or_else(|| {
            ApiError::unauthenticated("a bearer token is required: Authorization: Bearer <token>")
        })?;
        let user = state
            .auth
            .user(token)
            .map_err(|e| ApiError::unauthenticated(e.to_string()))?;
        if !parts.method.is_safe() {
            state.limits.user_write(user)?;
        }
        Ok(Self(user))
    }
}

impl Caller {
    /// 403 unless `user` is the caller: a path or body may name only the
    /// caller's own account.
    pub fn must_be(&self, user: UserId) -> Result<(), ApiError> {
        if user == self.0 {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "a token acts only on its own user's account and orders",
            ))
        }
    }

    /// The user a body or query names (it must be the caller), or the
    /// caller when it names none.
    pub fn or_named(
        &self,
        named: Option<&str>,
        invalid: fn(ValueError) -> ApiError,
    ) -> Result<UserId, ApiError> {
        match named {
            None => Ok(self.0),
            Some(raw) => {
                let user = UserId::parse(raw).map_err(invalid)?;
                self.must_be(user)?;
                Ok(user)
            }
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}
