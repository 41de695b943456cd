//! The payments service. Follow one order's payment through it in this order:
//!
//! 1. the consumer built in [`startup`] receives `PaymentRequested` from
//!    Kafka and records its event id in the inbox;
//! 2. [`on_payment_requested`] decides the order once, in the same
//!    transaction: [`persistence::decide_all`] inserts the batch's ledger rows
//!    and debits each only if the balance covers the amount; the `PaymentCompleted` answer
//!    goes to the outbox, and the relay publishes it after the commit.
//!
//! Accounts are opened, read and topped up over gRPC: [`grpc`] is the edge,
//! [`accounts`] the use cases, [`domain`] the types, [`persistence`] all SQL,
//! [`config`] the service's variables and defaults. The whole system is
//! described in `docs/architecture.md`.

pub mod accounts;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod on_payment_requested;
pub mod persistence;
pub mod startup;
