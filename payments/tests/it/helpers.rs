//! Starts the real payments service on port 0 with a fresh database, fresh
//! topics and a fresh consumer group, against the real broker.

use shop_db::kafka::KafkaConfig;
use shop_proto::payments::payments_client::PaymentsClient;
use shop_service::ServiceConfig;
use shop_testkit::{TestDb, TestService};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub type TestApp = TestService<PaymentsClient<Channel>>;

pub async fn spawn_app() -> TestApp {
    let db = Arc::new(TestDb::create("payments").await);
    spawn_with(
        db,
        shop_testkit::kafka_config(2),
        &shop_testkit::unique_group("payments"),
    )
    .await
}

pub async fn spawn_with(db: Arc<TestDb>, kafka: KafkaConfig, group: &str) -> TestApp {
    let config = shop_testkit::service_config(&db, kafka, group);
    spawn_configured(db, config).await
}

/// Builds the service with its own `startup::build` and runs it in-process.
pub async fn spawn_configured(db: Arc<TestDb>, config: ServiceConfig) -> TestApp {
    let shutdown = CancellationToken::new();
    let service = shop_payments::startup::build(&config, &shutdown)
        .await
        .expect("service builds");
    shop_testkit::run_service(db, config, service, shutdown, PaymentsClient::new).await
}
