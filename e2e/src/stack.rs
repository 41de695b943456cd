//! The backend as it runs in production, in miniature: both service binaries
//! with their own fresh databases, sharing a private broker and fresh topics.

use crate::broker::Broker;
use crate::process::{Probe, ServiceProcess, free_port};
use shop_db::{DbConfig, Pool};
use shop_proto::orders::orders_client::OrdersClient;
use shop_proto::payments::payments_client::PaymentsClient;
use shop_proto::payments::{CreateAccountRequest, TopUpRequest};
use shop_testkit::TestDb;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Both services, their databases and a broker.
#[derive(Debug)]
pub struct Stack {
    pub broker: Broker,
    pub orders: ServiceProcess,
    pub payments: ServiceProcess,
    /// The REST gateway, when started with [`Stack::start_with_gateway`].
    pub gateway: Option<ServiceProcess>,
    pub orders_db: TestDb,
    pub payments_db: TestDb,
    pub log_dir: PathBuf,
    /// Prometheus endpoints: (orders, payments).
    pub metrics: (SocketAddr, SocketAddr),
    run: String,
    /// Held while the stack lives: see [`MAX_CONCURRENT_STACKS`].
    _slot: tokio::sync::SemaphorePermit<'static>,
}

/// How many stacks (a broker and two or three services each) may run at
/// once: the test binary runs its tests in parallel, and more than this on a
/// 2-core machine only makes every stack slower.
pub const MAX_CONCURRENT_STACKS: usize = 4;
static STACK_SLOTS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(MAX_CONCURRENT_STACKS);

fn service_env(
    prefix: &str,
    addr: SocketAddr,
    metrics: SocketAddr,
    db: &DbConfig,
    broker: &Broker,
    run: &str,
) -> BTreeMap<String, String> {
    let vars = [
        ("LISTEN_ADDR", addr.to_string()),
        ("DATABASE_URL", db.url.clone()),
        ("KAFKA_BROKERS", broker.address()),
        ("TOPIC_REQUESTS", format!("{run}.payments.requests")),
        ("TOPIC_RESULTS", format!("{run}.payments.results")),
        ("TOPIC_PARTITIONS", "3".to_owned()),
        (
            "KAFKA_PRODUCER_PROPERTIES",
            "batch.num.messages=1".to_owned(),
        ),
        (
            "KAFKA_CONSUMER_PROPERTIES",
            "session.timeout.ms=6000,heartbeat.interval.ms=500,fetch.wait.max.ms=25".to_owned(),
        ),
        (
            "CONSUMER_GROUP",
            format!("{run}.{}", prefix.trim_end_matches('_').to_lowercase()),
        ),
        ("RELAY_POLL_INTERVAL_MS", "500".to_owned()),
        // tansu keeps a killed member in its group forever (see README).
        ("CONSUMER_ASSIGNMENT", "all".to_owned()),
        ("LOG_FORMAT", "text".to_owned()),
        ("METRICS_ADDR", metrics.to_string()),
    ];
    let mut env: BTreeMap<_, _> = vars
        .into_iter()
        .map(|(k, v)| (format!("{prefix}{k}"), v))
        .collect();
    env.insert("RUST_LOG".to_owned(), "info".to_owned());
    env
}

impl Stack {
    /// Starts a broker, creates both databases and starts both services.
    pub async fn start() -> Self {
        let slot = STACK_SLOTS
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let run = format!("e2e-{}", uuid::Uuid::new_v4().simple());
        let log_dir = std::env::temp_dir().join(&run);
        std::fs::create_dir_all(&log_dir).expect("log dir");
        let broker = Broker::start().await;
        let orders_db = TestDb::create("e2e_orders").await;
        let payments_db = TestDb::create("e2e_payments").await;
        let orders_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let payments_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let local = || SocketAddr::from(([127, 0, 0, 1], free_port()));
        let metrics = (local(), local());
        let mut payments = ServiceProcess::new(
            "payments",
            payments_addr,
            service_env(
                "PAYMENTS_",
                payments_addr,
                metrics.1,
                payments_db.config(),
                &broker,
                &run,
            ),
            &log_dir,
        );
        let mut orders = ServiceProcess::new(
            "orders",
            orders_addr,
            service_env(
                "ORDERS_",
                orders_addr,
                metrics.0,
                orders_db.config(),
                &broker,
                &run,
            ),
            &log_dir,
        );
        payments.start().await;
        orders.start().await;
        Self {
            broker,
            orders,
            payments,
            gateway: None,
            orders_db,
            payments_db,
            log_dir,
            metrics,
            run,
            _slot: slot,
        }
    }

    /// The backend plus the gateway, all three as processes.
    pub async fn start_with_gateway() -> Self {
        let mut stack = Self::start().await;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let env = BTreeMap::from([
            ("GATEWAY_LISTEN_ADDR".to_owned(), addr.to_string()),
            (
                "GATEWAY_ORDERS_URL".to_owned(),
                format!("http://{}", stack.orders.addr),
            ),
            (
                "GATEWAY_PAYMENTS_URL".to_owned(),
                format!("http://{}", stack.payments.addr),
            ),
            ("GATEWAY_SSE_KEEPALIVE_MS".to_owned(), "1000".to_owned()),
            // Tokens for the test clients come from the development route.
            ("GATEWAY_AUTH".to_owned(), "dev".to_owned()),
            // Fixed, so tokens stay valid when the gateway is restarted.
            (
                "GATEWAY_JWT_SECRET".to_owned(),
                "e2e-only-secret-0123456789abcdefghij".to_owned(),
            ),
            ("RUST_LOG".to_owned(), "info".to_owned()),
        ]);
        let mut gateway = ServiceProcess::new("gateway", addr, env, &stack.log_dir)
            .with_probe(Probe::Http("/readyz"));
        gateway.start().await;
        stack.gateway = Some(gateway);
        stack
    }

    /// A bearer token for `user`, from the gateway's development route.
    pub async fn token(&self, user: &str) -> String {
        Self::dev_token(&self.gateway_url(), user).await
    }

    /// A bearer token for `user` from the development route of the gateway at `base`.
    pub async fn dev_token(base: &str, user: &str) -> String {
        let response = reqwest::Client::new()
            .post(format!("{base}/api/v1/dev/tokens"))
            .json(&serde_json::json!({ "user_id": user }))
            .send()
            .await
            .expect("the development token route answers");
        let body: serde_json::Value = response.json().await.expect("a token document");
        body["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned()
    }

    /// `http://host:port` of the gateway.
    pub fn gateway_url(&self) -> String {
        let gateway = self.gateway.as_ref().expect("started with the gateway");
        format!("http://{}", gateway.addr)
    }

    fn channel(addr: SocketAddr) -> Channel {
        Endpoint::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .connect_lazy()
    }

    /// A client that reconnects by itself when the process restarts.
    pub fn orders_client(&self) -> OrdersClient<Channel> {
        OrdersClient::new(Self::channel(self.orders.addr))
    }

    /// A client that reconnects by itself when the process restarts.
    pub fn payments_client(&self) -> PaymentsClient<Channel> {
        PaymentsClient::new(Self::channel(self.payments.addr))
    }

    /// Pools on both databases, for checks.
    pub async fn pools(&self) -> (Pool, Pool) {
        let orders = shop_db::pool::connect(self.orders_db.config())
            .await
            .expect("orders db");
        let payments = shop_db::pool::connect(self.payments_db.config())
            .await
            .expect("payments db");
        (orders, payments)
    }

    /// Opens `user`'s account and credits `balance` (if positive).
    pub async fn open_account(&self, user: &str, balance: i64) {
        let mut payments = self.payments_client();
        payments
            .create_account(CreateAccountRequest {
                user_id: user.to_owned(),
                idempotency_key: String::new(),
            })
            .await
            .expect("account opens");
        if balance > 0 {
            payments
                .top_up(TopUpRequest {
                    user_id: user.to_owned(),
                    amount: balance,
                    idempotency_key: String::new(),
                })
                .await
                .expect("top up");
        }
    }

    /// Kafka settings that reach this stack's broker and topics (for tests
    /// that produce records directly).
    pub fn kafka(&self) -> shop_db::kafka::KafkaConfig {
        let mut kafka = shop_testkit::kafka_config(3);
        kafka.brokers = self.broker.address();
        kafka.topics.requests = format!("{}.payments.requests", self.run);
        kafka.topics.results = format!("{}.payments.results", self.run);
        kafka
    }

    /// The consumer group of `service` (`orders` or `payments`).
    pub fn consumer_group(&self, service: &str) -> String {
        format!("{}.{service}", self.run)
    }

    /// The Prometheus text of a service's metrics endpoint.
    pub async fn scrape(addr: SocketAddr) -> String {
        match reqwest::get(format!("http://{addr}/metrics")).await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Both services' logs, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- orders ---\n{}\n--- payments ---\n{}",
            self.orders.log_tail(),
            self.payments.log_tail()
        )
    }
}
