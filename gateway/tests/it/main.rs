//! Integration tests of the gateway: the real router over real sockets.

mod router;
