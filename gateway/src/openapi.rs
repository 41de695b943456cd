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
