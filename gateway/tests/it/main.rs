//! Integration tests of the gateway: the real router, upstreams over real
//! sockets (unreachable, silent or dropping the connection).

mod router;
mod upstreams;
