//! Group mode against librdkafka's mock cluster (three brokers on loopback
//! sockets, real consumer-group coordination): consumers joining one by one
//! while events keep arriving. Every event is applied exactly once, no
//! partition stalls on a join, and the offsets committed on revoke and on
//! shutdown leave nothing for a newcomer to read again. tansu 0.6.0 cannot
//! run this test: its coordinator never hands a dead member's partitions on
//! (see "The test brokers" in docs/architecture.md).

use prost::Message as _;
use rdkafka::consumer::Consumer as _;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use shop_db::inbox::{Assignment, HandleError, Handler, Inbound, InboxConfig, InboxConsumer};
use shop_db::kafka::KafkaConfig;
use shop_db::outbox::{NewEvent, RelayWake};
use shop_db::{Pool, Transaction, migrate, pool};
use shop_proto::events::PaymentRequested;
use shop_testkit::{TestDb, eventually, kafka_config, unique_group};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const PARTITIONS: i32 = 6;

/// Records every event it applies, with when.
#[derive(Clone)]
struct Recorder;

impl Handler for Recorder {
    type Event = PaymentRequested;

    fn event_id(event: &PaymentRequested) -> Option<Uuid> {
        Uuid::parse_str(&event.event_id).ok()
    }

    async fn handle(
        &self,
        tx: &Transaction<'_>,
        events: Vec<Inbound<PaymentRequested>>,
    ) -> Result<Vec<NewEvent>, HandleError> {
        for inbound in events {
            tx.execute(
                "INSERT INTO applied (partition, seq, at) VALUES ($1, $2, clock_timestamp())",
                &[&inbound.delivery.partition, &inbound.event.amount],
            )
            .await?;
        }
        Ok(Vec::new())
    }
}

/// A mock cluster of three brokers with one topic of six partitions.
fn mock_cluster(topic: &str) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(3).expect("mock cluster starts");
    cluster
        .create_topic(topic, PARTITIONS, 1)
        .expect("topic created");
    cluster
}

fn mock_kafka(
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
) -> KafkaConfig {
    let mut kafka = kafka_config(PARTITIONS);
    kafka.brokers = cluster.bootstrap_servers();
    // The mock cluster needs no workaround for tansu's defects.
    kafka.producer.clear();
    kafka.consumer = vec![("fetch.wait.max.ms".to_owned(), "25".to_owned())];
    // The mock's coordinator waits `session.timeout.ms` − 1 s in every
    // rebalance round that follows a membership change (Apache Kafka ends
    // the round once every member has rejoined): a short session keeps the
    // hand-over of revoked partitions short.
    kafka.session_timeout = Duration::from_secs(3);
    kafka
}

fn consumer(pool: &Pool, kafka: &KafkaConfig, group: &str) -> InboxConsumer<Recorder> {
    let config = InboxConfig {
        group_id: group.to_owned(),
        assignment: Assignment::Group,
        batch_size: 100,
        max_attempts: 2,
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(100),
        partition_refresh: Duration::from_secs(1),
        revoke_timeout: Duration::from_secs(5),
    };
    InboxConsumer::new(
        pool.clone(),
        kafka.consumer(group).expect("consumer"),
        &kafka.topics.requests,
        Recorder,
        config,
        RelayWake::new(),
    )
}

async fn count(pool: &Pool, sql: &str) -> i64 {
    pool.get()
        .await
        .expect("conn")
        .query_one(sql, &[])
        .await
        .expect("query")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumers_joining_one_by_one_apply_every_event_once_without_stalls() {
    let db = TestDb::create("rebalance").await;
    let pool = pool::connect(db.config()).await.expect("connects");
    let migrations = migrate::with_messaging(&refinery::Runner::new(&[])).expect("schema");
    migrate::run(&pool, &migrations).await.expect("migrates");
    pool.get()
        .await
        .expect("conn")
        .batch_execute(
            "CREATE TABLE applied (partition int NOT NULL, seq bigint NOT NULL, at timestamptz NOT NULL)",
        )
        .await
        .expect("table");
    let kafka = kafka_config(PARTITIONS);
    let cluster = mock_cluster(&kafka.topics.requests);
    let kafka = KafkaConfig {
        topics: kafka.topics,
        ..mock_kafka(&cluster)
    };
    let group = unique_group("rebalance");

    // Events keep arriving, 50 per second per partition, for 8 s.
    let producer = kafka.producer().expect("producer");
    let topic = kafka.topics.requests.clone();
    let produced = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut seq = 0_i64;
        for _ in 0..400 {
            tick.tick().await;
            for partition in 0..PARTITIONS {
                seq += 1;
                let payload = PaymentRequested {
                    event_id: Uuid::now_v7().to_string(),
                    amount: seq,
                    ..Default::default()
                }
                .encode_to_vec();
                let record = FutureRecord::<str, _>::to(&topic)
                    .partition(partition)
                    .key("k")
                    .payload(&payload);
                producer
                    .send(record, Duration::from_secs(5))
                    .await
                    .map_err(|(e, _)| e)
                    .expect("delivered");
            }
        }
        seq
    });

    // Three consumers of one group, starting 2 s apart.
    let shutdown = CancellationToken::new();
    let mut running = Vec::new();
    for _ in 0..3 {
        let member = consumer(&pool, &kafka, &group);
        running.push(tokio::spawn(member.run(shutdown.clone())));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let total = produced.await.expect("producer task");
    eventually(
        "every event to be applied",
        Duration::from_secs(60),
        || async { (count(&pool, "SELECT count(*) FROM applied").await >= total).then_some(()) },
    )
    .await;
    assert_eq!(
        count(&pool, "SELECT count(DISTINCT seq) FROM applied").await,
        total,
        "every event applied"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM applied").await,
        total,
        "no event applied twice"
    );
    // No partition waited more than 5 s between two applied events while
    // events kept arriving and members joined.
    let stall_ms = count(
        &pool,
        "SELECT coalesce(max(gap), 0)::bigint FROM (
             SELECT extract(epoch FROM at - lag(at) OVER (PARTITION BY partition ORDER BY at)) * 1000 AS gap
             FROM applied) g",
    )
    .await;
    let gaps = pool
        .get()
        .await
        .expect("conn")
        .query(
            "SELECT partition, (extract(epoch FROM at - min(at) OVER ()) * 1000)::bigint AS t,
                    (extract(epoch FROM at - prev) * 1000)::bigint AS gap
             FROM (SELECT partition, at, lag(at) OVER (PARTITION BY partition ORDER BY at) AS prev
                   FROM applied) g
             WHERE at - prev > interval '500 milliseconds' ORDER BY at",
            &[],
        )
        .await
        .expect("gaps");
    for row in &gaps {
        let (partition, at, gap): (i32, i64, i64) = (row.get(0), row.get(1), row.get(2));
        println!("partition {partition} waited {gap} ms before {at} ms");
    }
    assert!(stall_ms < 5_000, "a partition stalled for {stall_ms} ms");
    shutdown.cancel();
    for member in running {
        member.await.expect("task").expect("stops cleanly");
    }

    // A fourth member finds every partition committed at its end.
    let probe = kafka.consumer(&group).expect("probe consumer");
    let mut list = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        list.add_partition(&kafka.topics.requests, partition);
    }
    let committed = tokio::task::spawn_blocking(move || {
        let committed = probe
            .committed_offsets(list, Duration::from_secs(10))
            .expect("committed offsets");
        committed
            .elements()
            .iter()
            .map(|e| {
                let (_, high) = probe
                    .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(5))
                    .expect("watermarks");
                (e.partition(), e.offset(), high)
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("probe");
    for (partition, offset, high) in committed {
        assert_eq!(
            offset,
            Offset::Offset(high),
            "partition {partition}: committed {offset:?}, end {high}"
        );
    }
    println!("max gap between applied events of one partition: {stall_ms} ms");
}
