//! The gateway: the only public HTTP surface. Translates REST/JSON into tonic
//! calls, maps gRPC statuses to RFC 9457 problem documents, serves the
//! generated OpenAPI document, Swagger UI, live order status (SSE), health,
//! readiness and Prometheus metrics. It holds no database and no business
//! rule beyond request validation.

pub mod config;
pub mod dto;
pub mod extract;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod startup;
pub mod upstream;

pub use config::GatewayConfig;
pub use startup::{Application, router};
