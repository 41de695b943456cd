//! Integration tests of the gateway: the real router, authentication and
//! rate limits, upstreams over real sockets (unreachable, silent or dropping
//! the connection).

mod auth;
mod replicas;
mod router;
mod upstreams;
