//! Integration tests of the shared machinery against the real PostgreSQL and
//! the real broker.

mod errors;
mod inbox;
mod rebalance;
mod relay;
