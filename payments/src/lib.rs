//! The payments service: accounts and their credits over gRPC; exactly-once
//! debits for orders arrive through Kafka (see `ledger`).

pub mod accounts;
pub mod grpc;
pub mod ledger;
pub mod persistence;
pub mod startup;

pub use startup::{Application, PaymentsConfig};

/// Embedded SQL migrations of the payments database.
pub mod migrations {
    refinery::embed_migrations!("migrations");
}
