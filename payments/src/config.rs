//! The payments service's names and defaults: `PAYMENTS_*` variables, gRPC
//! on 127.0.0.1:50052, database `payments`, consumer group `payments`,
//! metrics on 127.0.0.1:9152. The variables themselves are read by
//! [`shop_service::ServiceConfig`], the same for every service.

use shop_service::ServiceSpec;

/// Names and defaults of the payments service.
pub const SPEC: ServiceSpec = ServiceSpec {
    name: "payments",
    prefix: "PAYMENTS_",
    grpc_service: "shop.payments.v1.Payments",
    listen_addr: "127.0.0.1:50052",
    database: "payments",
    consumer_group: "payments",
    metrics_addr: "127.0.0.1:9152",
    migrations: crate::persistence::migrations,
    histograms: &[],
};
