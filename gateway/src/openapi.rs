//! The OpenAPI document's frame: title, description, tags and the shared
//! schemas. The paths come from the handlers' `#[utoipa::path]` annotations,
//! collected by the same registration that builds the router
//! ([`crate::routes::api`]), so the router and the document cannot drift.
//! The committed `openapi.yaml` must equal what the code generates (a test
//! checks; `make openapi` regenerates it).

use crate::dto::{
    Account, CancelReason, CreateAccount, CreateOrder, Health, Order, OrderEvent, OrderPage,
    OrderStatus, StreamToken, TopUp,
};
use crate::problem::Problem;
use std::sync::Arc;
use utoipa::OpenApi;

/// Everything of the document but its paths.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "shop gateway",
        version = "1.0.0",
        description = "Accounts, orders and their asynchronous payment. Every API call acts as the user of its bearer token (a JWT whose `sub` is the user id). Amounts are integers in minor units (cents), from 1 to 10^12 per operation. Errors are RFC 9457 problem documents with a stable `code`. Every POST accepts an `Idempotency-Key` header.",
        license(name = "MIT")
    ),
    modifiers(&BearerTokens),
    components(schemas(Account, Order, OrderEvent, OrderPage, StreamToken, OrderStatus, CancelReason, CreateAccount, TopUp, CreateOrder, Problem, Health)),
    tags(
        (name = "accounts", description = "Accounts and balances (payments service)"),
        (name = "orders", description = "Orders and their live status (orders service)"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// The `bearer` security scheme: a JWT whose `sub` is the user id.
#[derive(Debug)]
pub struct BearerTokens;

impl utoipa::Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT whose `sub` is the caller's user id. In development (`GATEWAY_AUTH=dev`) `POST /api/v1/dev/tokens {\"user_id\"}` issues one.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The finished document as YAML, shared with the handler that serves it.
#[derive(Debug, Clone)]
pub struct Document(pub Arc<str>);

impl Document {
    /// Renders `doc` as YAML.
    pub fn new(doc: &utoipa::openapi::OpenApi) -> Self {
        Self(Arc::from(to_yaml(doc)))
    }
}

/// `doc` as YAML, exactly as committed in `openapi.yaml`.
pub fn to_yaml(doc: &utoipa::openapi::OpenApi) -> String {
    doc.to_yaml()
        .unwrap_or_else(|e| format!("# cannot render the OpenAPI document: {e}\n"))
}

/// The error responses that most operations share, written once; a
/// handler lists the ones that apply beside its own
/// (`responses((status = 200, …), responses::Unauthenticated, …)`).
/// They exist for the document only and are never built, hence the
/// unread fields.
#[allow(dead_code)]
pub mod responses {
    use crate::problem::Problem;
    use utoipa::IntoResponses;

    /// 401, every API call without a valid token.
    #[derive(IntoResponses)]
    #[response(
        status = 401,
        description = "No valid bearer token (`UNAUTHENTICATED`); see WWW-Authenticate",
        content_type = "application/problem+json"
    )]
    pub struct Unauthenticated(Problem);

    /// 403, a call that names another user.
    #[derive(IntoResponses)]
    #[response(
        status = 403,
        description = "The path, body or query names another user (`FORBIDDEN`)",
        content_type = "application/problem+json"
    )]
    pub struct Forbidden(Problem);

    /// 429, a write past the caller's or the address's limit.
    #[derive(IntoResponses)]
    #[response(
        status = 429,
        description = "Too many writes (`RATE_LIMITED`); see Retry-After",
        content_type = "application/problem+json"
    )]
    pub struct RateLimited(Problem);

    /// 502 and 503 from a call to the orders service.
    #[derive(IntoResponses)]
    pub enum OrdersUpstream {
        #[response(
            status = 502,
            description = "The orders service broke off or answered unusably (`UPSTREAM_FAILED`); retry later",
            content_type = "application/problem+json"
        )]
        Failed(Problem),
        #[response(
            status = 503,
            description = "The orders service is unavailable (`UNAVAILABLE`); retry later",
            content_type = "application/problem+json"
        )]
        Unavailable(Problem),
    }

    /// 502 and 503 from a call to the payments service.
    #[derive(IntoResponses)]
    pub enum PaymentsUpstream {
        #[response(
            status = 502,
            description = "The payments service broke off or answered unusably (`UPSTREAM_FAILED`); retry later",
            content_type = "application/problem+json"
        )]
        Failed(Problem),
        #[response(
            status = 503,
            description = "The payments service is unavailable (`UNAVAILABLE`); retry later",
            content_type = "application/problem+json"
        )]
        Unavailable(Problem),
    }

    /// 504, a call to a service that got no answer in time.
    #[derive(IntoResponses)]
    #[response(
        status = 504,
        description = "No answer in time: `UPSTREAM_TIMEOUT` for a read; `OUTCOME_UNKNOWN` for a write, which may have been applied — retry with the same Idempotency-Key",
        content_type = "application/problem+json"
    )]
    pub struct Timeout(Problem);
}
