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

/// Every code a problem document can carry, in one type: the services'
/// own ([`ErrorCode`], which travel on gRPC statuses) and the gateway's
/// (the request itself, its caller, or the upstream call). The README's
/// "Error codes" table lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiCode {
    /// A service's code (`VALIDATION_FAILED`, `ORDER_NOT_FOUND`, …).
    Service(ErrorCode),
    /// 401: no valid bearer token.
    Unauthenticated,
    /// 403: the request names another user.
    Forbidden,
    /// 429: past the caller's (or the client address's) write limit.
    RateLimited,
    /// 404: no such route.
    NotFound,
    /// 400: the body is not the JSON it should be.
    MalformedJson,
    /// 400: a request the framework refused for another reason.
    BadRequest,
    /// 415: a body without `Content-Type: application/json`.
    UnsupportedMediaType,
    /// 413: a body over the limit.
    PayloadTooLarge,
    /// 501: the development token route on a gateway without a signing key.
    NoSigningKey,
    /// 504 for a write: it may have been applied; retry with the same key.
    OutcomeUnknown,
    /// 504 for a read: no answer in time.
    UpstreamTimeout,
    /// 502: the service broke off or answered with something unusable.
    UpstreamFailed,
}

impl ApiCode {
    /// The gateway's own codes (the services' are [`ErrorCode::ALL`]).
    pub const GATEWAY: [ApiCode; 12] = [
        Self::Unauthenticated,
        Self::Forbidden,
        Self::RateLimited,
        Self::NotFound,
        Self::MalformedJson,
        Self::BadRequest,
        Self::UnsupportedMediaType,
        Self::PayloadTooLarge,
        Self::NoSigningKey,
        Self::OutcomeUnknown,
        Self::UpstreamTimeout,
        Self::UpstreamFailed,
    ];

    /// The stable SCREAMING_SNAKE_CASE spelling of the problem's `code`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Service(code) => code.as_str(),
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::RateLimited => "RATE_LIMITED",
            Self::NotFound => "NOT_FOUND",
            Self::MalformedJson => "MALFORMED_JSON",
            Self::BadRequest => "BAD_REQUEST",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::NoSigningKey => "NO_SIGNING_KEY",
            Self::OutcomeUnknown => "OUTCOME_UNKNOWN",
            Self::UpstreamTimeout => "UPSTREAM_TIMEOUT",
            Self::UpstreamFailed => "UPSTREAM_FAILED",
        }
    }
}

impl From<ErrorCode> for ApiCode {
    fn from(code: ErrorCode) -> Self {
        Self::Service(code)
    }
}

impl std::fmt::Display for ApiCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error on its way to becoming a problem document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ApiCode,
    pub detail: String,
    /// Seconds for `Retry-After`, when the client should wait a given time.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with this status, code and detail.
    pub fn new(status: StatusCode, code: impl Into<ApiCode>, detail: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// The same error, telling the client how long to wait.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 401: no valid bearer token (answered with `WWW-Authenticate: Bearer`).
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ApiCode::Unauthenticated, detail)
    }

    /// 403: the path or body names another user.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ApiCode::Forbidden, detail)
    }

    /// 400 for a malformed path, query or header.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::ValidationFailed, detail)
    }

    /// 422 for a well-formed body with an invalid value.
    pub fn invalid(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    /// The HTTP form of a failed read (safe to repeat).
    pub fn from_grpc(status: &tonic::Status) -> Self {
        Self::upstream(status, Call::Read)
    }

    /// The HTTP form of a failed write: when the service may have applied it
    /// (deadline passed, connection lost after sending) the client is told
    /// the outcome is unknown and to retry with the same Idempotency-Key.
    pub fn from_write(status: tonic::Status) -> Self {
        Self::upstream(&status, Call::Write)
    }

    /// The HTTP form of a request whose own deadline passed.
    pub fn deadline_passed(call: Call) -> Self {
        Self::upstream(&tonic::Status::deadline_exceeded("request timed out"), call)
    }

    fn upstream(status: &tonic::Status, call: Call) -> Self {
        let grpc_code = if never_sent(status) {
            Code::Unavailable
        } else {
            status.code()
        };
        let (http, code) = map_grpc(grpc_code, ErrorCode::of(status), call);
        let detail = if http.is_server_error() {
            tracing::warn!(grpc_code = ?status.code(), message = status.message(), ?call, "upstream call failed");
            match code {
                ApiCode::OutcomeUnknown => "the service did not confirm the request in time: it may or may not have been applied; retry with the same Idempotency-Key to get its outcome",
                ApiCode::UpstreamTimeout => "the service did not answer in time, retry later",
                ApiCode::UpstreamFailed => "the service failed while answering, retry later",
                _ if http == StatusCode::SERVICE_UNAVAILABLE => match call {
                    Call::Read => "service unavailable, retry later",
                    Call::Write => "service unavailable, retry later with the same Idempotency-Key",
                },
                _ => "internal error",
            }
            .to_owned()
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
            code: self.code.as_str().to_owned(),
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        Self::from_grpc(&status)
    }
}

/// What a failed upstream call was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Changes nothing: safe to repeat.
    Read,
    /// Creates or changes something: its outcome may be unknown.
    Write,
}

/// Whether the call never left the gateway: hyper gives a queued request
/// back as "canceled" when its connection closes first (a replica that sends
/// GOAWAY as it stops), and tonic reports that as CANCELLED, the code of a
/// passed deadline. Such a call was refused, not lost: 503, not 504.
fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        source = error.source();
    }
    false
}

/// The one mapping: gRPC code (plus the service's error code, plus whether
/// the call was a write) → HTTP status and code. 500 `INTERNAL` is left for
/// a service that reports its own bug.
pub fn map_grpc(code: Code, error_code: Option<ErrorCode>, call: Call) -> (StatusCode, ApiCode) {
    let or = |default: ErrorCode| ApiCode::Service(error_code.unwrap_or(default));
    let lost = match call {
        Call::Read => (StatusCode::BAD_GATEWAY, ApiCode::UpstreamFailed),
        Call::Write => (StatusCode::GATEWAY_TIMEOUT, ApiCode::OutcomeUnknown),
    };
    let late = match call {
        Call::Read => (StatusCode::GATEWAY_TIMEOUT, ApiCode::UpstreamTimeout),
        Call::Write => (StatusCode::GATEWAY_TIMEOUT, ApiCode::OutcomeUnknown),
    };
    match code {
        Code::InvalidArgument => match error_code {
            Some(ErrorCode::InvalidAmount) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidAmount.into(),
            ),
            _ => (StatusCode::BAD_REQUEST, or(ErrorCode::ValidationFailed)),
        },
        Code::NotFound => (
            StatusCode::NOT_FOUND,
            error_code.map_or(ApiCode::NotFound, ApiCode::Service),
        ),
        Code::AlreadyExists => (StatusCode::CONFLICT, or(ErrorCode::AccountExists)),
        // The order's status does not allow it (a cancel of a paid order, a
        // refund of an unpaid one): a conflict with the resource's state.
        Code::FailedPrecondition
            if matches!(
                error_code,
                Some(ErrorCode::OrderNotCancellable | ErrorCode::OrderNotRefundable)
            ) =>
        {
            (StatusCode::CONFLICT, or(ErrorCode::ValidationFailed))
        }
        Code::FailedPrecondition => (
            StatusCode::UNPROCESSABLE_ENTITY,
            or(ErrorCode::ValidationFailed),
        ),
        // Refused before doing anything (no connection, database down, overloaded).
        Code::Unavailable | Code::ResourceExhausted | Code::Aborted => (
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable.into(),
        ),
        // The deadline passed (tonic reports its own deadline as CANCELLED).
        Code::Cancelled | Code::DeadlineExceeded => late,
        // The service reports its own bug.
        Code::Internal if error_code == Some(ErrorCode::Internal) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal.into(),
        ),
        // The connection broke off mid-call ("transport error"), or the
        // answer is not one our services give.
        _ => lost,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.problem())).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                headers.insert(header::RETRY_AFTER, value);
            }
        } else if matches!(
            self.status,
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"shop\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_statuses_map_to_http_as_a_table() {
        use Call::{Read, Write};
        let table = [
            (
                Code::InvalidArgument,
                Some(ErrorCode::InvalidAmount),
                Write,
                422,
                "INVALID_AMOUNT",
            ),
            (
                Code::InvalidArgument,
                Some(ErrorCode::ValidationFailed),
                Read,
                400,
                "VALIDATION_FAILED",
            ),
            (Code::InvalidArgument, None, Read, 400, "VALIDATION_FAILED"),
            (
                Code::NotFound,
                Some(ErrorCode::AccountNotFound),
                Read,
                404,
                "ACCOUNT_NOT_FOUND",
            ),
            (
                Code::NotFound,
                Some(ErrorCode::OrderNotFound),
                Read,
                404,
                "ORDER_NOT_FOUND",
            ),
            (Code::NotFound, None, Read, 404, "NOT_FOUND"),
            (
                Code::AlreadyExists,
                Some(ErrorCode::AccountExists),
                Write,
                409,
                "ACCOUNT_EXISTS",
            ),
            (
                Code::FailedPrecondition,
                Some(ErrorCode::IdempotencyKeyReused),
                Write,
                422,
                "IDEMPOTENCY_KEY_REUSED",
            ),
            (
                Code::FailedPrecondition,
                Some(ErrorCode::BalanceOverflow),
                Write,
                422,
                "BALANCE_OVERFLOW",
            ),
            (
                Code::FailedPrecondition,
                Some(ErrorCode::OrderNotCancellable),
                Write,
                409,
                "ORDER_NOT_CANCELLABLE",
            ),
            (
                Code::FailedPrecondition,
                Some(ErrorCode::OrderNotRefundable),
                Write,
                409,
                "ORDER_NOT_REFUNDABLE",
            ),
            (Code::Unavailable, None, Read, 503, "UNAVAILABLE"),
            (
                Code::Unavailable,
                Some(ErrorCode::Unavailable),
                Write,
                503,
                "UNAVAILABLE",
            ),
            (Code::DeadlineExceeded, None, Read, 504, "UPSTREAM_TIMEOUT"),
            (Code::Cancelled, None, Read, 504, "UPSTREAM_TIMEOUT"),
            (Code::DeadlineExceeded, None, Write, 504, "OUTCOME_UNKNOWN"),
            (Code::Cancelled, None, Write, 504, "OUTCOME_UNKNOWN"),
            (Code::Unknown, None, Write, 504, "OUTCOME_UNKNOWN"),
            (Code::Unknown, None, Read, 502, "UPSTREAM_FAILED"),
            (Code::Internal, None, Read, 502, "UPSTREAM_FAILED"),
            (
                Code::Internal,
                Some(ErrorCode::Internal),
                Read,
                500,
                "INTERNAL",
            ),
            (Code::DataLoss, None, Read, 502, "UPSTREAM_FAILED"),
        ];
        for (grpc, error_code, call, http, code) in table {
            let (status, mapped) = map_grpc(grpc, error_code, call);
            assert_eq!(
                (status, mapped.as_str()),
                (StatusCode::from_u16(http).expect("status"), code),
                "{grpc:?} {call:?}"
            );
        }
    }

    #[test]
    fn every_code_is_in_the_readmes_error_table() {
        let readme = include_str!("../../README.md");
        let table = readme
            .split("### Error codes and what a client should do")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").nth(1))
            .expect("the README's error table");
        let codes = ErrorCode::ALL
            .into_iter()
            .map(ApiCode::Service)
            .chain(ApiCode::GATEWAY);
        for code in codes {
            assert!(
                table.contains(&format!("`{code}`")),
                "{code} is missing from the README's error table"
            );
        }
    }

    #[test]
    fn an_unknown_outcome_tells_the_client_to_retry_with_the_same_key() {
        let e = ApiError::from_write(tonic::Status::unknown("transport error"));
        assert_eq!(e.status, StatusCode::GATEWAY_TIMEOUT);
        assert!(e.detail.contains("same Idempotency-Key"), "{}", e.detail);
    }

    #[test]
    fn server_errors_never_carry_upstream_text() {
        let e = ApiError::from_grpc(&ErrorCode::Internal.status(
            Code::Internal,
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
