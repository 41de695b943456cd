//! The inbox consumer against the real broker and PostgreSQL, with a
//! recording handler: batches with a poison message in the middle,
//! partitions progressing independently, database timeouts retried in
//! place, and a dying consumer stopping its service.

use prost::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use shop_db::inbox::{
    Assignment, HandleError, Handler, Inbound, InboxConfig, InboxConsumer, InboxEvent,
};
use shop_db::kafka::KafkaConfig;
use shop_db::outbox::{NewEvent, RelayWake};
use shop_db::{Pool, Transaction, migrate, pool};
use shop_proto::events::PaymentRequested;
use shop_testkit::{PRODUCER_BATCH, TestDb, eventually, kafka_config, unique_group};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);
/// An amount the handler refuses as permanently invalid.
const POISON: i64 = 13;
/// An amount whose event waits for the test's permit before it is applied.
const BLOCKED: i64 = 666;
/// An amount whose first two attempts hit a statement timeout.
const SLOW: i64 = 57014;
/// An amount that makes the handler panic.
const PANIC: i64 = 500;
/// An amount whose event sits in a 25 s statement (when the recorder stalls).
pub const STALL: i64 = 25;

/// Records every event it applies, in order and with when, in `applied`.
#[derive(Clone)]
pub struct Recorder {
    pub gate: Arc<Semaphore>,
    pub timeouts: Arc<AtomicU32>,
    /// Whether [`STALL`] stalls.
    pub stalls: bool,
    /// How many [`STALL`] statements have started.
    pub stalled: Arc<AtomicU32>,
    /// How many [`BLOCKED`] events wait for the gate.
    pub held: Arc<AtomicU32>,
}

/// The recorder's events: `PaymentRequested`, for its amount.
pub struct Requested(PaymentRequested);

impl InboxEvent for Requested {
    fn decode(event_type: Option<&str>, payload: &[u8]) -> Result<Self, String> {
        shop_db::inbox::decode_as::<PaymentRequested>(event_type, payload)?
            .map(Self)
            .ok_or_else(|| format!("unexpected event type {event_type:?}"))
    }

    fn event_id(&self) -> Option<Uuid> {
        Uuid::parse_str(&self.0.event_id).ok()
    }
}

impl Handler for Recorder {
    type Event = Requested;

    async fn handle(
        &self,
        tx: &Transaction<'_>,
        events: Vec<Inbound<Requested>>,
    ) -> Result<Vec<NewEvent>, HandleError> {
        for inbound in events {
            let amount = inbound.event.0.amount;
            match amount {
                POISON => return Err(HandleError::Permanent("poison".to_owned())),
                PANIC => panic!("the handler met event {amount}"),
                BLOCKED => {
                    self.held.fetch_add(1, Ordering::SeqCst);
                    let _permit = self
                        .gate
                        .acquire()
                        .await
                        .map_err(|e| HandleError::Transient(e.to_string()))?;
                }
                STALL if self.stalls => {
                    self.stalled.fetch_add(1, Ordering::SeqCst);
                    tx.batch_execute("SELECT pg_sleep(25)").await?;
                }
                SLOW if self.timeouts.fetch_add(1, Ordering::SeqCst) < 2 => {
                    tx.batch_execute("SET LOCAL statement_timeout = 1; SELECT pg_sleep(0.2)")
                        .await?;
                }
                _ => {}
            }
            tx.execute(
                "INSERT INTO applied (partition, amount) VALUES ($1, $2)",
                &[&inbound.delivery.partition, &amount],
            )
            .await?;
        }
        Ok(Vec::new())
    }
}

pub struct Setup {
    pub db: TestDb,
    pub pool: Pool,
    pub kafka: KafkaConfig,
    pub producer: FutureProducer,
    pub recorder: Recorder,
}

async fn setup(partitions: i32) -> Setup {
    let kafka = kafka_config(partitions);
    kafka
        .ensure_topics(&[&kafka.topics.requests])
        .await
        .expect("topic");
    setup_on(kafka).await
}

/// A database with the messaging schema and an `applied` table, and a
/// producer and recorder for `kafka`'s requests topic (which must exist).
pub async fn setup_on(kafka: KafkaConfig) -> Setup {
    let db = TestDb::create("inbox").await;
    let pool = pool::connect(db.config()).await.expect("connects");
    let migrations = migrate::with_messaging(&refinery::Runner::new(&[])).expect("schema");
    migrate::run(&pool, &migrations).await.expect("migrates");
    pool.get()
        .await
        .expect("conn")
        .batch_execute(
            "CREATE TABLE applied (seq bigserial PRIMARY KEY, partition int NOT NULL,
                 amount bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())",
        )
        .await
        .expect("table");
    let producer = kafka.producer().expect("producer");
    Setup {
        db,
        pool,
        kafka,
        producer,
        recorder: Recorder {
            gate: Arc::new(Semaphore::new(0)),
            timeouts: Arc::default(),
            stalls: false,
            stalled: Arc::default(),
            held: Arc::default(),
        },
    }
}

impl Setup {
    /// Produces one event with `amount` to `partition` and waits for its delivery.
    pub async fn send(&self, partition: i32, amount: i64) {
        self.enqueue(partition, amount)
            .await
            .expect("not cancelled")
            .map_err(|(e, _)| e)
            .expect("delivered");
    }

    /// Produces one event with `amount` to `partition` without waiting: the
    /// producer may batch it with the next ones.
    pub fn enqueue(&self, partition: i32, amount: i64) -> rdkafka::producer::DeliveryFuture {
        let event = PaymentRequested {
            event_id: Uuid::now_v7().to_string(),
            amount,
            ..Default::default()
        };
        let payload = event.encode_to_vec();
        let record = FutureRecord::<str, _>::to(&self.kafka.topics.requests)
            .partition(partition)
            .key("k")
            .payload(&payload);
        self.producer
            .send_result(record)
            .map_err(|(e, _)| e)
            .expect("enqueued")
    }

    /// Sends events with `amounts` to partition 0 as one producer batch
    /// (enqueued together, within the producer's linger), and waits for them.
    pub async fn send_batch(&self, amounts: impl IntoIterator<Item = i64>) {
        let sent: Vec<_> = amounts.into_iter().map(|a| self.enqueue(0, a)).collect();
        for delivery in sent {
            delivery
                .await
                .expect("not cancelled")
                .map_err(|(e, _)| e)
                .expect("delivered");
        }
    }

    fn consumer(&self) -> InboxConsumer<Recorder> {
        self.consumer_with_batches_of(100)
    }

    fn consumer_with_batches_of(&self, batch_size: usize) -> InboxConsumer<Recorder> {
        self.consumer_in(
            &unique_group("inbox"),
            Assignment::All,
            batch_size,
            PRODUCER_BATCH,
        )
    }

    fn consumer_in(
        &self,
        group: &str,
        assignment: Assignment,
        batch_size: usize,
        gap_rewind: u32,
    ) -> InboxConsumer<Recorder> {
        let config = InboxConfig {
            group_id: group.to_owned(),
            assignment,
            batch_size,
            max_attempts: 2,
            retry_min: Duration::from_millis(10),
            retry_max: Duration::from_millis(50),
            partition_refresh: Duration::from_secs(1),
            revoke_timeout: Duration::from_secs(5),
            gap_rewind,
        };
        InboxConsumer::new(
            self.pool.clone(),
            self.kafka.consumer(&config.group_id).expect("consumer"),
            &self.kafka.topics.requests,
            self.recorder.clone(),
            config,
            RelayWake::new(),
        )
    }

    async fn applied(&self, partition: i32) -> Vec<i64> {
        self.pool
            .get()
            .await
            .expect("conn")
            .query(
                "SELECT amount FROM applied WHERE partition = $1 ORDER BY seq",
                &[&partition],
            )
            .await
            .expect("query")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        shop_testkit::scalar(&self.pool, sql).await
    }
}

#[tokio::test]
async fn a_poison_message_in_a_batch_is_parked_and_its_neighbours_applied_in_order() {
    let s = setup(1).await;
    for amount in [1, 2, POISON, 3, 4] {
        s.send(0, amount).await;
    }
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(s.consumer().run(shutdown.clone()));
    eventually(
        "the neighbours of the poison to be applied",
        WAIT,
        || async { (s.applied(0).await.len() == 4).then_some(()) },
    )
    .await;
    assert_eq!(s.applied(0).await, [1, 2, 3, 4], "partition order kept");
    eventually("the poison to be parked", WAIT, || async {
        (s.count("SELECT count(*) FROM dead_letters").await == 1).then_some(())
    })
    .await;
    assert_eq!(s.count("SELECT count(*) FROM inbox").await, 4);
    shutdown.cancel();
    consumer.await.expect("task").expect("stops cleanly");
}

/// Test-broker defect 1 and its repair. Two producer batches, 64 records
/// (offsets 0..=63) and 40 (64..=103); the group's offset is committed at 84,
/// in the middle of the second, where a consumer stopped there would have
/// left it. A consumer started there with a gap rewind of 64 fetches from 20,
/// inside the first batch, which tansu answers from 64: it must drop 64..=83
/// and apply every event from 84 on, and the twenty of a third batch sent
/// while it runs — in `all` mode (the start is set on assignment) and in
/// `group` mode (the start is the committed offset, so the skip is caught
/// and rewound). Without the rewind, tansu 0.6.0 answers from the next batch
/// on and the consumer misses 84..=103 (the control: when the test broker no
/// longer does this, it fails, and `INBOX_GAP_REWIND` can go).
#[tokio::test]
async fn a_consumer_that_starts_inside_a_producer_batch_misses_nothing_with_the_gap_rewind() {
    let mut kafka = kafka_config(1);
    kafka.producer = vec![
        ("batch.num.messages".to_owned(), PRODUCER_BATCH.to_string()),
        ("linger.ms".to_owned(), "200".to_owned()),
    ];
    kafka
        .ensure_topics(&[&kafka.topics.requests])
        .await
        .expect("topic");
    let all = setup_on(kafka.clone()).await;
    let group = setup_on(kafka.clone()).await;
    let control = setup_on(kafka.clone()).await;
    // Amount = offset + 1.
    all.send_batch(1..=64).await;
    all.send_batch(65..=104).await;
    let shutdown = CancellationToken::new();
    let mut consumers = Vec::new();
    for (setup, assignment, gap_rewind) in [
        (&all, Assignment::All, PRODUCER_BATCH),
        (&group, Assignment::Group, PRODUCER_BATCH),
        (&control, Assignment::All, 0),
    ] {
        let group_id = unique_group("mid-batch");
        commit_offset(&kafka, &group_id, 84).await;
        let consumer = setup.consumer_in(&group_id, assignment, 100, gap_rewind);
        consumers.push(tokio::spawn(consumer.run(shutdown.clone())));
    }
    all.send_batch(105..=124).await;
    let expected: Vec<i64> = (85..=124).collect();
    for (setup, mode) in [(&all, "all"), (&group, "group")] {
        eventually(
            &format!("the {mode}-mode consumer to apply 85..=124"),
            WAIT,
            || async { (setup.applied(0).await == expected).then_some(()) },
        )
        .await;
    }
    eventually(
        "the control consumer to reach the third batch",
        WAIT,
        || async { control.applied(0).await.contains(&124).then_some(()) },
    )
    .await;
    shutdown.cancel();
    for consumer in consumers {
        consumer.await.expect("task").expect("stops cleanly");
    }
    let control_applied = control.applied(0).await;
    assert!(
        control_applied.len() < expected.len(),
        "the control missed nothing ({control_applied:?}): the test broker no longer skips inside a batch"
    );
}

/// The resume half of the repair: a worker held on the first event of a
/// 40-record batch makes the reader pause the partition a few messages in;
/// librdkafka drops what it had fetched beyond them, and resuming fetches
/// from the next message, inside the batch, which tansu answers from the
/// next batch on — and there is none. Only the seek back on resume brings
/// the rest of the batch: every event must be applied, once, in order.
#[tokio::test]
async fn a_partition_resumed_inside_a_producer_batch_misses_nothing_with_the_gap_rewind() {
    let mut kafka = kafka_config(1);
    kafka.producer = vec![
        ("batch.num.messages".to_owned(), PRODUCER_BATCH.to_string()),
        ("linger.ms".to_owned(), "200".to_owned()),
    ];
    kafka
        .ensure_topics(&[&kafka.topics.requests])
        .await
        .expect("topic");
    let s = setup_on(kafka).await;
    s.send_batch(std::iter::once(BLOCKED).chain(101..=139))
        .await;
    let shutdown = CancellationToken::new();
    // Batches of one: the held worker's queue (two messages) is full at once.
    let consumer = tokio::spawn(s.consumer_with_batches_of(1).run(shutdown.clone()));
    eventually("the first event to be held", WAIT, || async {
        (s.recorder.held.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    s.recorder.gate.add_permits(1);
    let expected: Vec<i64> = std::iter::once(BLOCKED).chain(101..=139).collect();
    eventually("every event of the batch, in order", WAIT, || async {
        (s.applied(0).await == expected).then_some(())
    })
    .await;
    shutdown.cancel();
    consumer.await.expect("task").expect("stops cleanly");
}

/// Commits `offset` of partition 0 of the requests topic for `group`, as a
/// consumer that applied everything before it would have.
async fn commit_offset(kafka: &KafkaConfig, group: &str, offset: i64) {
    use rdkafka::consumer::{CommitMode, Consumer};
    let consumer = kafka.consumer(group).expect("consumer");
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition_offset(&kafka.topics.requests, 0, rdkafka::Offset::Offset(offset))
        .expect("offset");
    tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync))
        .await
        .expect("task")
        .expect("committed");
}

#[tokio::test]
async fn partitions_progress_independently() {
    let s = setup(2).await;
    // Batches of one: the held partition's worker queue (two messages) is
    // full at once, so the reader has to pause that partition, not wait.
    s.send(0, BLOCKED).await;
    for amount in 1..=8 {
        s.send(0, amount).await;
    }
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(s.consumer_with_batches_of(1).run(shutdown.clone()));
    for amount in [10, 11, 12] {
        s.send(1, amount).await;
    }
    eventually("partition 1 while partition 0 is held", WAIT, || async {
        (s.applied(1).await == [10, 11, 12]).then_some(())
    })
    .await;
    assert!(s.applied(0).await.is_empty(), "partition 0 is still held");
    s.recorder.gate.add_permits(1);
    eventually("partition 0 once released, in order", WAIT, || async {
        (s.applied(0).await == [BLOCKED, 1, 2, 3, 4, 5, 6, 7, 8]).then_some(())
    })
    .await;
    shutdown.cancel();
    consumer.await.expect("task").expect("stops cleanly");
}

#[tokio::test]
async fn a_statement_timeout_is_retried_in_place_and_never_parked() {
    let s = setup(1).await;
    for amount in [1, SLOW, 2] {
        s.send(0, amount).await;
    }
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(s.consumer().run(shutdown.clone()));
    eventually("every event applied after the timeouts", WAIT, || async {
        (s.applied(0).await == [1, SLOW, 2]).then_some(())
    })
    .await;
    assert!(
        s.recorder.timeouts.load(Ordering::SeqCst) >= 3,
        "the timeout happened and was retried"
    );
    assert_eq!(s.count("SELECT count(*) FROM dead_letters").await, 0);
    shutdown.cancel();
    consumer.await.expect("task").expect("stops cleanly");
}

#[tokio::test]
async fn a_dying_worker_stops_the_consumer_with_an_error() {
    let s = setup(1).await;
    s.send(0, PANIC).await;
    let outcome = tokio::time::timeout(WAIT, s.consumer().run(CancellationToken::new()))
        .await
        .expect("the consumer stops by itself");
    let error = outcome.expect_err("a dead worker is an error");
    assert!(error.to_string().contains("died"), "{error}");
}

#[tokio::test]
async fn all_mode_refuses_a_topic_that_does_not_exist() {
    let s = setup(1).await;
    let config = InboxConfig {
        group_id: unique_group("missing"),
        assignment: Assignment::All,
        batch_size: 10,
        max_attempts: 1,
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(10),
        partition_refresh: Duration::from_secs(1),
        revoke_timeout: Duration::from_secs(5),
        gap_rewind: PRODUCER_BATCH,
    };
    let mut kafka = s.kafka.clone();
    kafka
        .consumer
        .push(("allow.auto.create.topics".to_owned(), "false".to_owned()));
    let consumer = InboxConsumer::new(
        s.pool.clone(),
        kafka.consumer(&config.group_id).expect("consumer"),
        &format!("missing-{}", Uuid::new_v4().simple()),
        s.recorder.clone(),
        config,
        RelayWake::new(),
    );
    let outcome = tokio::time::timeout(
        Duration::from_secs(120),
        consumer.run(CancellationToken::new()),
    )
    .await
    .expect("gives up in time");
    assert!(outcome.is_err(), "a missing topic is an error");
}

#[tokio::test]
async fn a_service_whose_consumer_dies_stops_with_an_error() {
    let s = setup(1).await;
    s.send(0, PANIC).await;
    let shutdown = CancellationToken::new();
    let (health, grpc) = shop_runtime::grpc::base_router("test.v1.Test").expect("router");
    health.serving().await;
    let wake = RelayWake::new();
    let service = shop_service::Service {
        pool: s.pool.clone(),
        listener: tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("port"),
        grpc,
        health,
        notifications: shop_db::listen::Listener::spawn(
            &s.db.config().url,
            &[shop_db::outbox::CHANNEL],
            shutdown.clone(),
        ),
        relay: shop_db::relay::Relay::new(
            s.pool.clone(),
            s.kafka.producer().expect("producer"),
            shop_db::relay::RelayConfig::default(),
            wake,
        ),
        consumer: s.consumer(),
        retention: shop_db::retention::Retention::new(
            s.pool.clone(),
            shop_db::retention::RetentionConfig::default(),
            &[],
        ),
        jobs: Vec::new(),
    };
    let outcome = tokio::time::timeout(WAIT, service.run_until_stopped(shutdown.clone()))
        .await
        .expect("the service stops by itself");
    let error = outcome.expect_err("a dead consumer is the service's failure");
    assert!(format!("{error:#}").contains("inbox consumer"), "{error:#}");
    shutdown.cancel();
}
