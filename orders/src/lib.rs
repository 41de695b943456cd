//! The orders service: creates orders (order row + `PaymentRequested` in the
//! outbox, one transaction), serves them over gRPC with live status, and
//! finalises them from `PaymentCompleted` events through its inbox.

pub mod domain;
pub mod grpc;
pub mod orders;
pub mod persistence;
pub mod results;
pub mod startup;
pub mod watch;

pub use startup::{Application, OrdersConfig};

/// Embedded SQL migrations of the orders database (V2 is the shared messaging schema).
pub mod migrations {
    refinery::embed_migrations!("migrations");
}
