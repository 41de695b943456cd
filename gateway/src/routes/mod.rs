//! HTTP handlers, one module per resource, sharing [`AppState`], and the
//! lists of routes: the API ([`api`]), each registered once with its
//! OpenAPI description, and the few outside the document ([`undocumented`]:
//! the web UI and the development token route).

pub mod accounts;
pub mod dev;
pub mod ops;
pub mod orders;
pub mod ui;

pub use crate::state::AppState;

use crate::openapi::ApiDoc;
use axum::Router;
use axum::routing::{get, post};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Every documented route, registered once: the router and the OpenAPI
/// document both come from here (`split_for_parts`).
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(accounts::create_account))
        .routes(routes!(accounts::get_account))
        .routes(routes!(accounts::top_up))
        .routes(routes!(orders::create_order, orders::list_orders))
        .routes(routes!(orders::get_order))
        .routes(routes!(orders::cancel_order))
        .routes(routes!(orders::refund_order))
        .routes(routes!(orders::order_events))
        .routes(routes!(orders::events_token))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi_yaml))
}

/// The routes outside the API document: the web UI and, in development
/// mode (`GATEWAY_AUTH=dev`) only, `POST /api/v1/dev/tokens`.
pub fn undocumented(dev_mode: bool) -> Router<AppState> {
    let router = Router::new()
        .route("/", get(ui::index))
        .route("/assets/app.js", get(ui::app_js))
        .route("/assets/app.css", get(ui::app_css));
    if dev_mode {
        router.route("/api/v1/dev/tokens", post(dev::dev_token))
    } else {
        router
    }
}
