//! Integration tests of the payments service: the real service on port 0 with a fresh
//! database, fresh topics and consumer group, against the real broker.

mod accounts;
mod blast_radius;
mod helpers;
mod pipeline;
mod startup;
mod takeback;
