//! What every shop binary shares, and nothing about databases or Kafka:
//! typed configuration from prefixed environment variables ([`config`]), the
//! command line's exit handling ([`cli`]), structured logs and OpenTelemetry
//! traces ([`telemetry`]),
//! the shutdown signal ([`shutdown`]) and the gRPC server plumbing every
//! service serves besides its own API: health and reflection ([`grpc`]).
//!
//! The gateway depends on this crate and on `shop-proto` only, so it links
//! no Kafka or PostgreSQL client. Trace context across the hops (HTTP, gRPC,
//! the outbox and Kafka headers) is carried by [`traces`]. How the pieces fit together is told in
//! `docs/architecture.md`.

pub mod cli;
pub mod config;
pub mod grpc;
pub mod shutdown;
pub mod telemetry;
pub mod traces;

pub use config::{ConfigError, Env, LogFormat};
