//! The gateway: the only public HTTP surface. Translates REST/JSON into tonic
//! calls, maps gRPC statuses to RFC 9457 problem documents, serves the
//! generated OpenAPI document, Swagger UI, live order status (SSE), health,
//! readiness and Prometheus metrics. It holds no database and no business
//! rule beyond request validation, and links no Kafka or PostgreSQL client.
//!
//! Follow one order through it in this order: [`routes::orders`]
//! (`POST /api/v1/orders`: [`extract`] checks the body and the
//! Idempotency-Key, [`dto`] is the JSON shape) → [`upstream`] (the gRPC call
//! to the orders service) → [`problem`] (a failed call becomes a problem
//! document) → `GET /api/v1/orders/{id}/events` streams the order's status
//! until it is final. [`startup`] registers the routes once
//! ([`routes::api`]) with their OpenAPI description ([`openapi`]); [`config`]
//! names the `GATEWAY_*` variables. The whole system is described in
//! `docs/architecture.md`.

pub mod auth;
pub mod config;
pub mod dto;
pub mod extract;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod startup;
pub mod state;
pub mod upstream;

pub use config::GatewayConfig;
pub use startup::{Application, router};
