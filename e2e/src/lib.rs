//! Whole-system harness: the real `orders` and `payments` binaries (one or
//! more replicas each, and a private broker: tansu, or librdkafka's mock
//! cluster for consumer groups) as child processes on free ports, with fault
//! injection (kill -9, SIGSTOP, joins and leaves), the cross-database
//! invariant check and the figures of [`churn`].

pub mod broker;
pub mod chaos;
pub mod churn;
pub mod invariant;
pub mod load;
pub mod otlp;
pub mod process;
pub mod stack;

pub use broker::BrokerKind;
pub use stack::{Service, Stack, StackOptions};
