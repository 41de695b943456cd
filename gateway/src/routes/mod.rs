//! HTTP handlers, one module per resource, sharing [`AppState`], and the one
//! list of API routes ([`api`]): each registered once, with its OpenAPI
//! description.

pub mod accounts;
pub mod dev;
pub mod ops;
pub mod orders;
pub mod ui;

use crate::GatewayConfig;
use crate::auth::Auth;
use crate::limits::Limits;
use crate::openapi::ApiDoc;
use crate::upstream::Upstreams;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub upstreams: Upstreams,
    pub metrics: PrometheusHandle,
    pub sse_keepalive: Duration,
    /// Cancelled on shutdown: ends open event streams so draining finishes.
    pub shutdown: CancellationToken,
    /// Checks (and in dev mode issues) bearer tokens.
    pub auth: Arc<Auth>,
    /// Abuse limits on writes.
    pub limits: Arc<Limits>,
}

impl AppState {
    /// The state of a gateway configured by `config`.
    pub fn new(config: &GatewayConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        Ok(Self {
            upstreams: Upstreams::new(config)?,
            metrics: crate::metrics::handle(),
            sse_keepalive: config.sse_keepalive,
            shutdown,
            auth: Arc::new(config.auth.clone()),
            limits: Arc::clone(&config.limits),
        })
    }
}

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
