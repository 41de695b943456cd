//! The PostgreSQL + Kafka machinery every backend service shares, written
//! once: the connection [`pool`]s (with a per-key [`gate`] for API calls) and [`migrate`]-ions (with the shared
//! messaging schema in `sql/messaging.sql`), Kafka clients ([`kafka`]), the
//! transactional [`outbox`] and its [`relay`], the [`inbox`] consumer, poison
//! messages' [`dead_letter`]s, the event [`headers`], LISTEN/NOTIFY fan-out
//! ([`listen`]) and the [`retention`] sweep. The `shop-service` crate runs
//! them all beside a service's gRPC server.
//!
//! The delivery algorithms and the invariants they keep are described in
//! `docs/architecture.md`.

pub mod backoff;
pub mod dead_letter;
pub mod error;
pub mod gate;
pub mod headers;
pub mod inbox;
pub mod kafka;
pub mod listen;
pub mod migrate;
pub mod observe;
pub mod outbox;
pub mod pool;
pub mod relay;
pub mod retention;

pub use deadpool_postgres::{self, GenericClient, Pool, Transaction};
pub use error::DbError;
pub use pool::{CallClient, DbConfig, PoolError};
