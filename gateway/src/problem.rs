//! Errors as RFC 9457 problem documents (`application/problem+json`) with a
//! stable machine `code`, and the one mapping from gRPC statuses to HTTP.
//! Internal details are logged here, never returned.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use shop_proto::error_code::ErrorCode;
use tonic::Code;
use utoipa::ToSchema;

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "about:blank", "title": "Not Found", "status": 404,
    "detail": "account 1b4e28ba-2fa1-11d2-883f-0016d3cca427 not found", "code": "ACCOUNT_NOT_FOUND"
}))]
pub struct Problem {
    /// Always `about:blank`: the status and `code` say what happened.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP reason phrase.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong, for humans.
    pub detail: String,
    /// Stable machine-readable code, e.g. `ACCOUNT_NOT_FOUND`, `INVALID_AMOUNT`.
    pub code: String,
}

/// An error on its way to becoming a problem document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
}

impl ApiError {
    /// An error with this status, code and detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
        }
    }

    /// 400 for a malformed path, query or header.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::ValidationFailed.as_str(),
            detail,
        )
    }

    /// 422 for a well-formed body with an invalid value.
    pub fn invalid(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code.as_str(), detail)
    }

    /// The HTTP form of a failed gRPC call.
    pub fn from_grpc(status: &tonic::Status) -> Self {
        let (http, code) = map_grpc(status.code(), ErrorCode::of(status));
        let detail = if http.is_server_error() {
            tracing::warn!(grpc_code = ?status.code(), message = status.message(), "upstream call failed");
            match http {
                StatusCode::SERVICE_UNAVAILABLE => "service unavailable, retry later".to_owned(),
                StatusCode::GATEWAY_TIMEOUT => "the service did not answer in time".to_owned(),
                _ => "internal error".to_owned(),
            }
        } else {
            status.message().to_owned()
        };
        Self::new(http, code, detail)
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        Problem {
            kind: "about:blank".to_owned(),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_owned(),
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        Self::from_grpc(&status)
    }
}

/// The one mapping: gRPC code (plus the service's error code) → HTTP status and code.
pub fn map_grpc(code: Code, error_code: Option<ErrorCode>) -> (StatusCode, &'static str) {
    let or = |default: ErrorCode| error_code.unwrap_or(default).as_str();
    match code {
        Code::InvalidArgument => match error_code {
            Some(ErrorCode::InvalidAmount) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidAmount.as_str(),
            ),
            other => (
                StatusCode::BAD_REQUEST,
                other.unwrap_or(ErrorCode::ValidationFailed).as_str(),
            ),
        },
        Code::NotFound => (
            StatusCode::NOT_FOUND,
            error_code.map_or("NOT_FOUND", ErrorCode::as_str),
        ),
        Code::AlreadyExists => (StatusCode::CONFLICT, or(ErrorCode::AccountExists)),
        Code::FailedPrecondition => (
            StatusCode::UNPROCESSABLE_ENTITY,
            or(ErrorCode::ValidationFailed),
        ),
        Code::Unavailable | Code::Cancelled | Code::ResourceExhausted => (
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable.as_str(),
        ),
        Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "UPSTREAM_TIMEOUT"),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal.as_str(),
        ),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.problem())).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_statuses_map_to_http_as_a_table() {
        let table = [
            (
                Code::InvalidArgument,
                Some(ErrorCode::InvalidAmount),
                422,
                "INVALID_AMOUNT",
            ),
            (
                Code::InvalidArgument,
                Some(ErrorCode::ValidationFailed),
                400,
                "VALIDATION_FAILED",
            ),
            (Code::InvalidArgument, None, 400, "VALIDATION_FAILED"),
            (
                Code::NotFound,
                Some(ErrorCode::AccountNotFound),
                404,
                "ACCOUNT_NOT_FOUND",
            ),
            (
                Code::NotFound,
                Some(ErrorCode::OrderNotFound),
                404,
                "ORDER_NOT_FOUND",
            ),
            (Code::NotFound, None, 404, "NOT_FOUND"),
            (
                Code::AlreadyExists,
                Some(ErrorCode::AccountExists),
                409,
                "ACCOUNT_EXISTS",
            ),
            (
                Code::FailedPrecondition,
                Some(ErrorCode::IdempotencyKeyReused),
                422,
                "IDEMPOTENCY_KEY_REUSED",
            ),
            (
                Code::FailedPrecondition,
                Some(ErrorCode::BalanceOverflow),
                422,
                "BALANCE_OVERFLOW",
            ),
            (Code::Unavailable, None, 503, "UNAVAILABLE"),
            (Code::DeadlineExceeded, None, 504, "UPSTREAM_TIMEOUT"),
            (Code::Internal, Some(ErrorCode::Internal), 500, "INTERNAL"),
            (Code::Unknown, None, 500, "INTERNAL"),
            (Code::DataLoss, None, 500, "INTERNAL"),
        ];
        for (grpc, error_code, http, code) in table {
            assert_eq!(
                map_grpc(grpc, error_code),
                (StatusCode::from_u16(http).expect("status"), code),
                "{grpc:?}"
            );
        }
    }

    #[test]
    fn server_errors_never_carry_upstream_text() {
        let e = ApiError::from_grpc(&tonic::Status::internal(
            "connection to 10.0.0.7 refused: password=hunter2",
        ));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.detail, "internal error");
        let e = ApiError::from_grpc(&tonic::Status::unavailable("tcp connect error"));
        assert!(!e.detail.contains("tcp"));
    }

    #[test]
    fn client_errors_keep_the_service_message() {
        let status = ErrorCode::AccountNotFound.status(Code::NotFound, "account x not found");
        let problem = ApiError::from_grpc(&status).problem();
        assert_eq!(problem.detail, "account x not found");
        assert_eq!(problem.title, "Not Found");
        assert_eq!(problem.kind, "about:blank");
    }
}
