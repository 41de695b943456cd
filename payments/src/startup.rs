//! How the payments service is assembled: its spec, migrations, gRPC service
//! and the payment-request consumer, on the shared service machinery.

use crate::grpc::{PaymentsGrpc, PaymentsServer};
use crate::ledger::PaymentRequestHandler;
use shop_db::listen::Listener;
use shop_db::service::{ServiceApp, ServiceConfig, ServiceSpec, Wiring};
use shop_db::{Pool, grpc, migrate};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Router;

/// The payments service's configuration (`PAYMENTS_*`).
pub type PaymentsConfig = ServiceConfig;

/// The runnable payments service.
pub type Application = ServiceApp<Payments>;

/// Names and defaults of the payments service.
pub const SPEC: ServiceSpec = ServiceSpec {
    name: "payments",
    prefix: "PAYMENTS_",
    grpc_service: "shop.payments.v1.Payments",
    listen_addr: "127.0.0.1:50052",
    database: "payments",
    consumer_group: "payments",
    metrics_addr: "127.0.0.1:9152",
    migrations,
};

/// Every migration of the payments database, messaging schema included.
pub fn migrations() -> anyhow::Result<Vec<refinery::Migration>> {
    Ok(migrate::with_messaging(
        &crate::migrations::migrations::runner(),
    )?)
}

/// The payments wiring: accounts over gRPC, payment requests from Kafka.
#[derive(Debug)]
pub struct Payments;

impl Wiring for Payments {
    const SPEC: ServiceSpec = SPEC;
    const CHANNELS: &'static [&'static str] = &[];
    type Handler = PaymentRequestHandler;

    async fn wire(
        pool: &Pool,
        config: &ServiceConfig,
        _: &Listener,
        _: &CancellationToken,
    ) -> anyhow::Result<(Router, PaymentRequestHandler, String)> {
        let (reporter, router) = grpc::base_router(SPEC.grpc_service)?;
        reporter.set_serving::<PaymentsServer<PaymentsGrpc>>().await;
        let router = router.add_service(PaymentsServer::new(PaymentsGrpc::new(pool.clone())));
        let topics = &config.kafka.topics;
        Ok((
            router,
            PaymentRequestHandler::new(&topics.results),
            topics.requests.clone(),
        ))
    }
}
