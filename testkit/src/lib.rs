//! Test helpers, for dev-dependencies only: a fresh database per test
//! (dropped afterwards even when the test fails: the guard's `Drop` runs
//! during unwinding), fresh topics and consumer groups on the test broker,
//! waiting on a condition with a deadline, raw records in and out of Kafka,
//! and a real service running in-process on port 0.

use shop_db::DbConfig;
use shop_db::inbox::Handler;
use shop_service::{Service, ServiceConfig};
use std::time::Duration;
use tokio_postgres::NoTls;

/// Where tests create their databases; override with `SHOP_TEST_DATABASE_URL`.
pub fn admin_url() -> String {
    std::env::var("SHOP_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A uniquely named database that exists while this guard lives.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    admin_url: String,
    config: DbConfig,
}

impl TestDb {
    /// Creates `test_<prefix>_<random>` on the admin server.
    pub async fn create(prefix: &str) -> Self {
        let admin_url = admin_url();
        let name = format!("test_{prefix}_{}", uuid::Uuid::new_v4().simple());
        let client = admin_client(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("tests need PostgreSQL at {admin_url}: {e}"));
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let mut pg: tokio_postgres::Config = admin_url
            .parse()
            .expect("SHOP_TEST_DATABASE_URL is a valid URL");
        pg.dbname(&name);
        let config = DbConfig {
            pool_size: 32,
            ..DbConfig::for_url(url_of(&pg, &name))
        };
        Self {
            name,
            admin_url,
            config,
        }
    }

    /// Config pointing at this database.
    pub fn config(&self) -> &DbConfig {
        &self.config
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin_url = self.admin_url.clone();
        // Drop may run inside a runtime; use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return Ok(());
            };
            rt.block_on(async move {
                let client = admin_client(&admin_url).await?;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

async fn admin_client(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn url_of(pg: &tokio_postgres::Config, dbname: &str) -> String {
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let user = pg.get_user().unwrap_or("postgres");
    match pg.get_password() {
        Some(pw) => format!(
            "postgres://{user}:{}@{host}:{port}/{dbname}",
            String::from_utf8_lossy(pw)
        ),
        None => format!("postgres://{user}@{host}:{port}/{dbname}"),
    }
}

/// The most records the stacks' producers put in one batch, and so how far
/// back a consumer fetches again when the broker skips offsets
/// (`INBOX_GAP_REWIND`, the repair of test-broker defect 1, README).
pub const PRODUCER_BATCH: u32 = 64;

/// Kafka settings for one test: the test broker (`SHOP_TEST_KAFKA_BROKERS`,
/// default 127.0.0.1:9092), fresh topic names and tansu's short fetch wait
/// (defect 3). Its producers send one record per batch: these tests measure
/// topics by their high watermarks ([`topic_size`],
/// [`wait_group_caught_up`]), which tansu reports wrongly for batches of
/// several records (defect 5). The whole-stack tests batch.
pub fn kafka_config(partitions: i32) -> shop_db::kafka::KafkaConfig {
    let run = uuid::Uuid::new_v4().simple().to_string();
    shop_db::kafka::KafkaConfig {
        brokers: std::env::var("SHOP_TEST_KAFKA_BROKERS")
            .unwrap_or_else(|_| "127.0.0.1:9092".to_owned()),
        common: Vec::new(),
        producer: vec![("batch.num.messages".to_owned(), "1".to_owned())],
        consumer: vec![("fetch.wait.max.ms".to_owned(), "25".to_owned())],
        topics: shop_db::kafka::Topics {
            requests: format!("test-{run}.requests"),
            results: format!("test-{run}.results"),
            partitions,
            replication_factor: 1,
        },
        session_timeout: Duration::from_secs(6),
        group_instance_id: None,
    }
}

/// A fresh consumer group name.
pub fn unique_group(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what`
/// after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Produces one raw record and waits for its delivery.
pub async fn produce_raw(
    kafka: &shop_db::kafka::KafkaConfig,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: &[(&str, &str)],
) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::FutureRecord;
    let producer = kafka.producer().expect("producer");
    let mut owned = OwnedHeaders::new();
    for (k, v) in headers {
        owned = owned.insert(Header {
            key: k,
            value: Some(*v),
        });
    }
    let record = FutureRecord::to(topic)
        .key(key)
        .payload(payload)
        .headers(owned);
    producer
        .send(record, Duration::from_secs(5))
        .await
        .map_err(|(e, _)| e)
        .expect("test record delivered");
}

/// Reads every record of `topic` from the start, in a fresh group, until
/// `count` have arrived (panics after `timeout`).
pub async fn read_topic(
    kafka: &shop_db::kafka::KafkaConfig,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::Consumer;
    let consumer = kafka.consumer(&unique_group("reader")).expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while out.len() < count {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => out.push(m.detach()),
            Ok(Err(e)) => eprintln!("read_topic: {e}"),
            Err(_) => panic!(
                "read {} of {count} records from {topic} before the deadline",
                out.len()
            ),
        }
    }
    out
}

/// How many records `topic` holds (sum of its partitions' high watermarks).
pub fn topic_size(kafka: &shop_db::kafka::KafkaConfig, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let probe: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .create()
        .expect("probe consumer");
    (0..kafka.topics.partitions)
        .map(|p| {
            probe
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .map(|(_, high)| high)
                .expect("watermarks")
        })
        .sum()
}

/// Waits until `group` has committed offsets up to the end of every
/// partition of `topic`.
pub async fn wait_group_caught_up(
    kafka: &shop_db::kafka::KafkaConfig,
    group: &str,
    topic: &str,
    timeout: Duration,
) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let probe: BaseConsumer = {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &kafka.brokers)
            .set("group.id", group);
        c.create().expect("probe consumer")
    };
    eventually(
        &format!("group {group} to catch up on {topic}"),
        timeout,
        || {
            let mut tpl = TopicPartitionList::new();
            for p in 0..kafka.topics.partitions {
                tpl.add_partition(topic, p);
            }
            let caught_up = probe
                .committed_offsets(tpl, Duration::from_secs(2))
                .ok()
                .map(|committed| {
                    (0..kafka.topics.partitions).all(|p| {
                        let high = probe
                            .fetch_watermarks(topic, p, Duration::from_secs(2))
                            .map(|(_, h)| h)
                            .unwrap_or(-1);
                        match committed.find_partition(topic, p).map(|e| e.offset()) {
                            Some(Offset::Offset(o)) => o >= high,
                            _ => high == 0,
                        }
                    })
                })
                .unwrap_or(false);
            async move { caught_up.then_some(()) }
        },
    )
    .await;
}

/// A real service application running in this process on port 0, with a
/// gRPC client connected to it over a real socket.
#[derive(Debug)]
pub struct TestService<C> {
    pub addr: std::net::SocketAddr,
    pub client: C,
    pub pool: shop_db::Pool,
    pub config: shop_service::ServiceConfig,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub db: std::sync::Arc<TestDb>,
}

/// Test settings: port 0, the given database, topics and group, quick retries.
pub fn service_config(
    db: &TestDb,
    kafka: shop_db::kafka::KafkaConfig,
    group: &str,
) -> shop_service::ServiceConfig {
    shop_service::ServiceConfig {
        listen_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        database: db.config().clone(),
        kafka,
        relay: shop_db::relay::RelayConfig::default(),
        // The production defaults, but quicker to retry and give up.
        inbox: shop_db::inbox::InboxConfig {
            max_attempts: 3,
            retry_min: Duration::from_millis(20),
            retry_max: Duration::from_millis(200),
            partition_refresh: Duration::from_secs(1),
            gap_rewind: PRODUCER_BATCH,
            ..shop_db::inbox::InboxConfig::from_env(
                &shop_runtime::Env::from_pairs("", std::iter::empty::<(&str, &str)>()),
                group,
            )
            .expect("the defaults are valid")
        },
        retention: shop_db::retention::RetentionConfig::default(),
        log_format: shop_runtime::LogFormat::Text,
        metrics_addr: None,
    }
}

/// Runs `service` (built by a service's `startup::build` with `shutdown`)
/// in this process, then connects `client` to it over a real socket.
pub async fn run_service<H: Handler, C>(
    db: std::sync::Arc<TestDb>,
    config: ServiceConfig,
    service: Service<H>,
    shutdown: tokio_util::sync::CancellationToken,
    client: impl FnOnce(tonic::transport::Channel) -> C,
) -> TestService<C> {
    let addr = service.local_addr().expect("bound");
    let pool = service.pool.clone();
    let server = tokio::spawn(service.run_until_stopped(shutdown.clone()));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    TestService {
        addr,
        client: client(channel),
        pool,
        config,
        shutdown,
        server,
        db,
    }
}

impl<C> TestService<C> {
    /// The service's Kafka settings (its topics).
    pub fn kafka(&self) -> &shop_db::kafka::KafkaConfig {
        &self.config.kafka
    }

    /// Graceful shutdown; panics unless the service stops cleanly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server
            .await
            .expect("server task")
            .expect("server stops cleanly");
    }

    /// The first column of the first row of `sql` (a count, usually).
    pub async fn scalar(&self, sql: &str) -> i64 {
        scalar(&self.pool, sql).await
    }
}

/// The first column of the first row of `sql` on `pool` (a count, usually).
pub async fn scalar(pool: &shop_db::Pool, sql: &str) -> i64 {
    pool.get()
        .await
        .expect("conn")
        .query_one(sql, &[])
        .await
        .expect("query")
        .get(0)
}

/// librdkafka's own mock cluster: brokers on loopback sockets with a real
/// group coordinator, alive while this value lives. The second test broker,
/// for consumer-group behaviour tansu cannot show (see "The test brokers"
/// in the README).
///
/// It is hosted by a producer created with `test.mock.num.brokers` (the
/// producer itself is never used), because only then can the coordinator's
/// initial rebalance delay be set: the mock expires a member whose
/// JoinGroup waits longer than its session, and its default delay (3 s)
/// would expire every member with a shorter session for ever.
pub struct MockBrokers {
    host: rdkafka::producer::BaseProducer,
    count: i32,
}

impl MockBrokers {
    /// `count` brokers, ids `1..=count`.
    pub fn start(count: i32) -> Self {
        let host: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
            .set("test.mock.num.brokers", count.to_string())
            .create()
            .expect("mock cluster starts");
        set_initial_rebalance_delay(&host, 0);
        Self { host, count }
    }

    /// The cluster, for its operations (topics, brokers down and up, errors).
    pub fn cluster(
        &self,
    ) -> rdkafka::mocking::MockCluster<'_, rdkafka::producer::DefaultProducerContext> {
        use rdkafka::producer::Producer;
        self.host
            .client()
            .mock_cluster()
            .expect("the host client has a mock cluster")
    }

    /// The broker ids.
    pub fn ids(&self) -> std::ops::RangeInclusive<i32> {
        1..=self.count
    }

    /// Creates `topic` with `partitions` (the mock has no CreateTopics).
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        self.cluster()
            .create_topic(topic, partitions, 1)
            .expect("topic created");
    }

    /// The bootstrap list.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster().bootstrap_servers()
    }
}

/// How long the mock's coordinator waits for more members when a group is
/// formed (`group.initial.rebalance.delay.ms` on a real broker).
#[allow(unsafe_code)]
fn set_initial_rebalance_delay(host: &rdkafka::producer::BaseProducer, delay_ms: i32) {
    use rdkafka::bindings::{
        rd_kafka_handle_mock_cluster, rd_kafka_mock_group_initial_rebalance_delay_ms,
    };
    use rdkafka::producer::Producer;
    // SAFETY: `native_ptr` is the live handle of `host`, which outlives this
    // call; the handle has a mock cluster (created with
    // `test.mock.num.brokers`), so the pointer returned is that cluster's
    // and stays valid while `host` lives. The setter only stores an integer.
    unsafe {
        let cluster = rd_kafka_handle_mock_cluster(host.client().native_ptr());
        assert!(!cluster.is_null(), "the host client has a mock cluster");
        rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, delay_ms);
    }
}

/// A [`MockBrokers`] cluster of three with both topics of a fresh
/// [`kafka_config`].
pub struct MockKafka {
    pub brokers: MockBrokers,
    /// Settings that reach the cluster: fresh topics (created, with
    /// `partitions` each), no tansu workaround, and a 3 s session, because
    /// the mock's coordinator waits `session.timeout.ms` − 1 s in every
    /// rebalance round that follows a membership change (Apache Kafka ends
    /// the round once all have rejoined).
    pub kafka: shop_db::kafka::KafkaConfig,
}

impl MockKafka {
    /// Starts a cluster with both topics of a fresh [`kafka_config`].
    pub fn start(partitions: i32) -> Self {
        let mut kafka = kafka_config(partitions);
        let brokers = MockBrokers::start(3);
        for topic in [&kafka.topics.requests, &kafka.topics.results] {
            brokers.create_topic(topic, partitions);
        }
        kafka.brokers = brokers.bootstrap_servers();
        kafka.producer.clear();
        kafka.session_timeout = Duration::from_secs(3);
        Self { brokers, kafka }
    }
}
