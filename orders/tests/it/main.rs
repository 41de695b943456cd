//! Integration tests of the orders service: the real service on port 0 with a fresh
//! database, fresh topics and consumer group, against the real broker.

mod api;
mod helpers;
mod notify;
mod pipeline;
