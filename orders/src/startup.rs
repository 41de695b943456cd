//! How the orders service is assembled: its spec, migrations, gRPC service
//! (with live status) and the payment-result consumer, on the shared service
//! machinery.

use crate::grpc::{OrdersGrpc, OrdersServer};
use crate::results::PaymentResultHandler;
use crate::watch;
use shop_db::listen::Listener;
use shop_db::service::{ServiceApp, ServiceConfig, ServiceSpec, Wiring};
use shop_db::{Pool, grpc, migrate};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Router;

/// The orders service's configuration (`ORDERS_*`).
pub type OrdersConfig = ServiceConfig;

/// The runnable orders service.
pub type Application = ServiceApp<Orders>;

/// Names and defaults of the orders service.
pub const SPEC: ServiceSpec = ServiceSpec {
    name: "orders",
    prefix: "ORDERS_",
    grpc_service: "shop.orders.v1.Orders",
    listen_addr: "127.0.0.1:50051",
    database: "orders",
    consumer_group: "orders",
    metrics_addr: "127.0.0.1:9151",
    migrations,
};

/// Every migration of the orders database, messaging schema included.
pub fn migrations() -> anyhow::Result<Vec<refinery::Migration>> {
    Ok(migrate::with_messaging(
        &crate::migrations::migrations::runner(),
    )?)
}

/// The orders wiring: orders over gRPC, payment results from Kafka, status
/// changes from Postgres NOTIFY.
#[derive(Debug)]
pub struct Orders;

impl Wiring for Orders {
    const SPEC: ServiceSpec = SPEC;
    const CHANNELS: &'static [&'static str] = &[watch::CHANNEL];
    type Handler = PaymentResultHandler;

    async fn wire(
        pool: &Pool,
        config: &ServiceConfig,
        notifications: &Listener,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<(Router, PaymentResultHandler, String)> {
        let topics = &config.kafka.topics;
        let orders = OrdersGrpc::new(
            pool.clone(),
            notifications.clone(),
            &topics.requests,
            shutdown.clone(),
        );
        let (reporter, router) = grpc::base_router(SPEC.grpc_service)?;
        reporter.set_serving::<OrdersServer<OrdersGrpc>>().await;
        let router = router.add_service(OrdersServer::new(orders));
        Ok((router, PaymentResultHandler, topics.results.clone()))
    }
}
