//! Builds the payments application and runs gRPC, the payment-request
//! consumer and the outbox relay until the shutdown token is cancelled.

use crate::grpc::{PaymentsGrpc, PaymentsServer};
use crate::ledger::PaymentRequestHandler;
use shop_db::listen::Listener;
use shop_db::service::{self, Foundation, Parts, ServiceConfig, ServiceSpec};
use shop_db::{Pool, grpc, migrate, outbox};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// The payments service's configuration (`PAYMENTS_*`).
pub type PaymentsConfig = ServiceConfig;

/// Names and defaults of the payments service.
pub const SPEC: ServiceSpec = ServiceSpec {
    name: "payments",
    prefix: "PAYMENTS_",
    grpc_service: "shop.payments.v1.Payments",
    listen_addr: "127.0.0.1:50052",
    database: "payments",
    consumer_group: "payments",
    migrations,
};

/// Every migration of the payments database, messaging schema included.
pub fn migrations() -> anyhow::Result<Vec<refinery::Migration>> {
    Ok(migrate::with_messaging(
        &crate::migrations::migrations::runner(),
    )?)
}

/// A built, not yet running, payments service.
#[derive(Debug)]
pub struct Application {
    foundation: Foundation,
    config: PaymentsConfig,
}

impl service::Application for Application {
    async fn build(config: &PaymentsConfig) -> anyhow::Result<Self> {
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
        let (reporter, router) = grpc::base_router(SPEC.grpc_service)?;
        reporter.set_serving::<PaymentsServer<PaymentsGrpc>>().await;
        let router = router.add_service(PaymentsServer::new(PaymentsGrpc::new(
            foundation.pool.clone(),
        )));
        let parts = Parts {
            notifications: Listener::spawn(
                &config.database.url,
                &[outbox::CHANNEL],
                shutdown.clone(),
            ),
            router,
            consume_topic: config.kafka.topics.requests.clone(),
            handler: PaymentRequestHandler::new(&config.kafka.topics.results),
            foundation,
        };
        service::run(&config, parts, shutdown).await
    }
}
