//! Shared service machinery, written once for every service: typed
//! configuration from the environment, the Postgres pool and migrations,
//! the messaging machinery (Kafka clients, transactional outbox and relay,
//! inbox consumer, dead letters, LISTEN/NOTIFY), telemetry, shutdown signals
//! and the gRPC server plumbing (health and reflection), plus a fresh-database
//! helper for tests.

pub mod backoff;
pub mod config;
pub mod dead_letter;
pub mod error;
pub mod grpc;
pub mod inbox;
pub mod kafka;
pub mod listen;
pub mod migrate;
pub mod outbox;
pub mod pool;
pub mod service;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;

pub use config::{ConfigError, DbConfig, Env, LogFormat};
pub use deadpool_postgres::{self, GenericClient, Pool, Transaction};
pub use error::DbError;
pub use pool::PoolError;
