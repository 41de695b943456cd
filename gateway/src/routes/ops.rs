//! Operations: liveness, readiness (both upstreams answer their gRPC health
//! check), Prometheus metrics, the OpenAPI document.

use super::AppState;
use crate::dto::Health;
use crate::openapi::Document;
use crate::problem::{ApiCode, ApiError};
use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Always, while the process runs", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        orders: None,
        payments: None,
    })
}

/// Both upstream services answer their gRPC health check.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", body = Health),
        (status = 503, description = "An upstream service is not serving", body = Health),
    ))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let (orders, payments) = state.upstreams.health().await;
    let ready = orders && payments;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if ready { "ready" } else { "not ready" }.to_owned(),
        orders: Some(orders),
        payments: Some(payments),
    };
    (status, Json(body))
}

/// Prometheus text exposition: requests by route and status, latency histogram.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// The OpenAPI document as YAML (also at `/openapi.json`).
#[utoipa::path(get, path = "/openapi.yaml", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document (YAML)")))]
pub async fn openapi_yaml(Extension(document): Extension<Document>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/yaml")],
        document.0.to_string(),
    )
}

/// Unknown paths.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ApiCode::NotFound, "no such route")
}
