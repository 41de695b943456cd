//! The OpenAPI document, generated from the handlers' annotations. The
//! committed `openapi.yaml` must equal [`yaml`] (a test checks;
//! `make openapi` regenerates it).

use crate::dto::{
    Account, CancelReason, CreateAccount, CreateOrder, Health, Order, OrderPage, OrderStatus, TopUp,
};
use crate::problem::Problem;
use crate::routes::{accounts, ops, orders};
use utoipa::OpenApi;

/// The gateway's API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "shop gateway",
        version = "1.0.0",
        description = "Accounts, orders and their asynchronous payment. Amounts are integers in minor units (cents), from 1 to 10^12 per operation. Errors are RFC 9457 problem documents with a stable `code`. Every POST accepts an `Idempotency-Key` header.",
        license(name = "MIT")
    ),
    paths(
        accounts::create_account, accounts::get_account, accounts::top_up,
        orders::create_order, orders::list_orders, orders::get_order, orders::order_events,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi_yaml,
    ),
    components(schemas(Account, Order, OrderPage, OrderStatus, CancelReason, CreateAccount, TopUp, CreateOrder, Problem, Health)),
    tags(
        (name = "accounts", description = "Accounts and balances (payments service)"),
        (name = "orders", description = "Orders and their live status (orders service)"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// The document as YAML, exactly as committed in `openapi.yaml`.
pub fn yaml() -> String {
    ApiDoc::openapi()
        .to_yaml()
        .unwrap_or_else(|e| format!("# cannot render the OpenAPI document: {e}\n"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_openapi_yaml_matches_the_code() {
        let committed = include_str!("../../openapi.yaml");
        assert!(
            committed == super::yaml(),
            "openapi.yaml is stale: run `make openapi` and commit the result"
        );
    }

    #[test]
    fn every_route_is_documented() {
        let doc = super::yaml();
        for path in [
            "/api/v1/accounts:",
            "/api/v1/accounts/{user_id}:",
            "/api/v1/accounts/{user_id}/top-up:",
            "/api/v1/orders:",
            "/api/v1/orders/{order_id}:",
            "/api/v1/orders/{order_id}/events:",
            "/healthz:",
            "/readyz:",
            "/metrics:",
            "/openapi.yaml:",
        ] {
            assert!(doc.contains(path), "{path} missing");
        }
    }
}
