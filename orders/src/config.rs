//! The orders service's names and defaults: `ORDERS_*` variables, gRPC on
//! 127.0.0.1:50051, database `orders`, consumer group `orders`, metrics on
//! 127.0.0.1:9151. The variables themselves are read by
//! [`shop_service::ServiceConfig`], the same for every service.

use shop_service::ServiceSpec;

/// Names and defaults of the orders service.
pub const SPEC: ServiceSpec = ServiceSpec {
    name: "orders",
    prefix: "ORDERS_",
    grpc_service: "shop.orders.v1.Orders",
    listen_addr: "127.0.0.1:50051",
    database: "orders",
    consumer_group: "orders",
    metrics_addr: "127.0.0.1:9151",
    migrations: crate::persistence::migrations,
    histograms: &[(
        crate::on_payment_completed::SETTLE_SECONDS,
        &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
    )],
};
