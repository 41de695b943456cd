//! Builds the orders application and runs gRPC, the payment-result consumer
//! and the outbox relay until the shutdown token is cancelled.

use crate::grpc::{OrdersGrpc, OrdersServer};
use crate::results::PaymentResultHandler;
use crate::watch;
use shop_db::listen::Listener;
use shop_db::service::{self, Foundation, Parts, ServiceConfig, ServiceSpec};
use shop_db::{Pool, grpc, migrate, outbox};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// The orders service's configuration (`ORDERS_*`).
pub type OrdersConfig = ServiceConfig;

/// Names and defaults of the orders service.
pub const SPEC: ServiceSpec = ServiceSpec {
    name: "orders",
    prefix: "ORDERS_",
    grpc_service: "shop.orders.v1.Orders",
    listen_addr: "127.0.0.1:50051",
    database: "orders",
    consumer_group: "orders",
    migrations,
};

/// Every migration of the orders database, messaging schema included.
pub fn migrations() -> anyhow::Result<Vec<refinery::Migration>> {
    Ok(migrate::with_messaging(
        &crate::migrations::migrations::runner(),
    )?)
}

/// A built, not yet running, orders service.
#[derive(Debug)]
pub struct Application {
    foundation: Foundation,
    config: OrdersConfig,
}

impl service::Application for Application {
    async fn build(config: &OrdersConfig) -> anyhow::Result<Self> {
        Ok(Self {
            foundation: service::prepare(&SPEC, config).await?,
            config: config.clone(),
        })
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.foundation.listener.local_addr()
    }

    fn pool(&self) -> &Pool {
        &self.foundation.pool
    }

    async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self { foundation, config } = self;
        let notifications = Listener::spawn(
            &config.database.url,
            &[outbox::CHANNEL, watch::CHANNEL],
            shutdown.clone(),
        );
        let orders = OrdersGrpc::new(
            foundation.pool.clone(),
            notifications.clone(),
            &config.kafka.topics.requests,
            shutdown.clone(),
        );
        let (reporter, router) = grpc::base_router(SPEC.grpc_service)?;
        reporter.set_serving::<OrdersServer<OrdersGrpc>>().await;
        let parts = Parts {
            notifications,
            router: router.add_service(OrdersServer::new(orders)),
            consume_topic: config.kafka.topics.results.clone(),
            handler: PaymentResultHandler,
            foundation,
        };
        service::run(&config, parts, shutdown).await
    }
}
