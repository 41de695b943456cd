//! Starts the real orders service on port 0 with a fresh database, fresh
//! topics and a fresh consumer group, against the real broker.
#![allow(dead_code)] // each test binary uses a different part

use shop_db::kafka::KafkaConfig;
use shop_db::testing::{self, TestDb, TestService};
use shop_orders::Application;
use shop_proto::orders::orders_client::OrdersClient;
use std::sync::Arc;
use tonic::transport::Channel;

pub type TestApp = TestService<OrdersClient<Channel>>;

pub async fn spawn_app() -> TestApp {
    let db = Arc::new(TestDb::create("orders").await);
    spawn_with(
        db,
        testing::kafka_config(2),
        &testing::unique_group("orders"),
    )
    .await
}

pub async fn spawn_with(db: Arc<TestDb>, kafka: KafkaConfig, group: &str) -> TestApp {
    let config = testing::service_config(&db, kafka, group);
    testing::spawn_service::<Application, _>(db, config, OrdersClient::new).await
}
