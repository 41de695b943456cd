//! The orders service. Follow one order through it in this order:
//!
//! 1. [`grpc`] — `CreateOrder` arrives; the request becomes checked values;
//! 2. [`orders`] — the use case writes the order and its `PaymentRequested`
//!    event to the outbox in ONE transaction ([`persistence`] holds the SQL,
//!    [`domain`] the order and its statuses);
//! 3. the relay built in [`startup`] publishes the event to Kafka; the
//!    payments service decides and answers with `PaymentCompleted`;
//! 4. [`on_payment_completed`] applies the answer through the inbox: the
//!    order moves from NEW to FINISHED or CANCELLED, once;
//! 5. [`watch`] streams each status change to `WatchOrder` callers (the
//!    gateway's SSE) from Postgres NOTIFY.
//!
//! Taking an order back follows the same road: `CancelOrder` / `RefundOrder`
//! in [`grpc`], [`orders::cancel`] / [`orders::refund`] (or [`expiry`] for
//! an unpaid order) move it to CANCELLING / REFUNDING with its request for
//! the ledger in the outbox; payments settles it once and answers, and
//! [`on_payment_completed`] moves it to CANCELLED / REFUNDED.
//!
//! [`config`] names the service's variables and defaults. The whole system
//! is described in `docs/architecture.md`.

pub mod config;
pub mod domain;
pub mod expiry;
pub mod grpc;
pub mod on_payment_completed;
pub mod orders;
pub mod persistence;
pub mod startup;
pub mod watch;
