//! Starts the real payments service on port 0 with a fresh database, fresh
//! topics and a fresh consumer group, against the real broker.
#![allow(dead_code)] // each test binary uses a different part

use shop_db::inbox::InboxConfig;
use shop_db::kafka::KafkaConfig;
use shop_db::outbox::RelayConfig;
use shop_db::testing::{self, TestDb};
use shop_db::{LogFormat, Pool};
use shop_payments::{Application, PaymentsConfig};
use shop_proto::payments::payments_client::PaymentsClient;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: PaymentsClient<Channel>,
    pub pool: Pool,
    pub config: PaymentsConfig,
    pub shutdown: CancellationToken,
    pub server: JoinHandle<anyhow::Result<()>>,
    pub db: Arc<TestDb>,
}

pub fn config(db: &TestDb, kafka: KafkaConfig, group: &str) -> PaymentsConfig {
    PaymentsConfig {
        listen_addr: "127.0.0.1:0".parse().expect("addr"),
        database: db.config().clone(),
        kafka,
        relay: RelayConfig::default(),
        inbox: InboxConfig {
            group_id: group.to_owned(),
            max_attempts: 3,
            retry_min: Duration::from_millis(20),
            retry_max: Duration::from_millis(200),
        },
        log_format: LogFormat::Text,
    }
}

pub async fn spawn_app() -> TestApp {
    let db = Arc::new(TestDb::create("payments").await);
    spawn_with(
        db,
        testing::kafka_config(2),
        &testing::unique_group("payments"),
    )
    .await
}

pub async fn spawn_with(db: Arc<TestDb>, kafka: KafkaConfig, group: &str) -> TestApp {
    let config = config(&db, kafka, group);
    let app = Application::build(&config).await.expect("app builds");
    let addr = app.local_addr().expect("bound");
    let pool = app.pool().clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    TestApp {
        addr,
        client: PaymentsClient::new(channel),
        pool,
        config,
        shutdown,
        server,
        db,
    }
}

impl TestApp {
    pub fn kafka(&self) -> &KafkaConfig {
        &self.config.kafka
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server
            .await
            .expect("server task")
            .expect("server stops cleanly");
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        self.pool
            .get()
            .await
            .expect("conn")
            .query_one(sql, &[])
            .await
            .expect("query")
            .get(0)
    }
}
