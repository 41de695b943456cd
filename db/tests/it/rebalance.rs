//! Group mode against librdkafka's mock cluster (three brokers on loopback
//! sockets, real consumer-group coordination; see `shop_testkit::MockKafka`):
//! consumers joining one by one while events keep arriving, and a batch
//! stuck when its partition is revoked. tansu 0.6.0 cannot run these tests:
//! its coordinator never hands a dead member's partitions on (see "The test
//! brokers" in docs/architecture.md).

use crate::inbox::{Recorder, STALL, Setup, setup_on};
use prost::Message as _;
use rdkafka::consumer::Consumer as _;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use shop_db::inbox::{Assignment, InboxConfig, InboxConsumer};
use shop_db::outbox::RelayWake;
use shop_proto::events::PaymentRequested;
use shop_testkit::{MockKafka, eventually, unique_group};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A member of `group` applying the requests topic through `recorder`.
fn member(
    s: &Setup,
    recorder: Recorder,
    group: &str,
    revoke_timeout: Duration,
) -> InboxConsumer<Recorder> {
    let config = InboxConfig {
        group_id: group.to_owned(),
        assignment: Assignment::Group,
        batch_size: 100,
        max_attempts: 2,
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(100),
        partition_refresh: Duration::from_secs(1),
        revoke_timeout,
        gap_rewind: shop_testkit::PRODUCER_BATCH,
    };
    InboxConsumer::new(
        s.pool.clone(),
        s.kafka.consumer(group).expect("consumer"),
        &s.kafka.topics.requests,
        recorder,
        config,
        RelayWake::new(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumers_joining_one_by_one_apply_every_event_once_without_stalls() {
    const PARTITIONS: i32 = 6;
    let mock = MockKafka::start(PARTITIONS);
    let s = setup_on(mock.kafka.clone()).await;
    let group = unique_group("rebalance");

    // Events keep arriving, 50 per second per partition, for 8 s; the
    // amount numbers them (from a million up: clear of the recorder's
    // special amounts).
    let producer = s.producer.clone();
    let topic = s.kafka.topics.requests.clone();
    let produced = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut seq = 0_i64;
        for _ in 0..400 {
            tick.tick().await;
            for partition in 0..PARTITIONS {
                seq += 1;
                let payload = PaymentRequested {
                    event_id: Uuid::now_v7().to_string(),
                    amount: 1_000_000 + seq,
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
        let m = member(&s, s.recorder.clone(), &group, Duration::from_secs(5));
        running.push(tokio::spawn(m.run(shutdown.clone())));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let total = produced.await.expect("producer task");
    eventually(
        "every event to be applied",
        Duration::from_secs(60),
        || async { (s.count("SELECT count(*) FROM applied").await >= total).then_some(()) },
    )
    .await;
    assert_eq!(
        s.count("SELECT count(DISTINCT amount) FROM applied").await,
        total,
        "every event applied"
    );
    assert_eq!(
        s.count("SELECT count(*) FROM applied").await,
        total,
        "no event applied twice"
    );
    // No partition waited long between two applied events while events
    // kept arriving and members joined. The bound is the mock's own: a
    // cooperative join takes two rebalance rounds of `session.timeout.ms`
    // − 1 s each (4 s with the 3 s session), and a loaded 2-core machine
    // has added up to 2 s to that; an eager protocol or a revoked worker
    // that kept its partition stalls far longer (a minute in issue 15).
    let stall_ms = s
        .count(
            "SELECT coalesce(max(gap), 0)::bigint FROM (
                 SELECT extract(epoch FROM at - lag(at) OVER (PARTITION BY partition ORDER BY at)) * 1000 AS gap
                 FROM applied) g",
        )
        .await;
    println!("max gap between applied events of one partition: {stall_ms} ms");
    assert!(stall_ms < 8_000, "a partition stalled for {stall_ms} ms");
    shutdown.cancel();
    for m in running {
        m.await.expect("task").expect("stops cleanly");
    }

    // A fourth member finds every partition committed at its end.
    let probe = s.kafka.consumer(&group).expect("probe consumer");
    let mut list = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        list.add_partition(&s.kafka.topics.requests, partition);
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_stuck_when_its_partition_is_revoked_is_abandoned_and_moves_on() {
    let mock = MockKafka::start(2);
    let s = setup_on(mock.kafka.clone()).await;
    let group = unique_group("stuck");
    let revoke_timeout = Duration::from_secs(2);

    // Member A sits in a 25 s statement on each partition.
    let stalling = Recorder {
        stalls: true,
        ..s.recorder.clone()
    };
    let shutdown = CancellationToken::new();
    let a =
        tokio::spawn(member(&s, stalling.clone(), &group, revoke_timeout).run(shutdown.clone()));
    s.send(0, STALL).await;
    s.send(1, STALL).await;
    eventually(
        "member A stuck on both partitions",
        Duration::from_secs(30),
        || async { (stalling.stalled.load(Ordering::SeqCst) == 2).then_some(()) },
    )
    .await;

    // Member B joins, and one partition moves to it. A abandons that batch
    // after the grace (1 s): its statement is cancelled, so its transaction
    // ends and B's inbox insert of the same event does not wait 25 s for it.
    let joined = Instant::now();
    let b =
        tokio::spawn(member(&s, s.recorder.clone(), &group, revoke_timeout).run(shutdown.clone()));
    eventually(
        "the moved partition's event applied by B",
        Duration::from_secs(20),
        || async { (s.count("SELECT count(*) FROM applied").await >= 1).then_some(()) },
    )
    .await;
    let moved_after = joined.elapsed();
    println!(
        "the moved partition progressed {} ms after the join",
        moved_after.as_millis()
    );
    assert!(
        moved_after < Duration::from_secs(15),
        "the new owner waited {moved_after:?} for the abandoned batch"
    );

    // A's other batch ends its statement and commits: each event once.
    eventually(
        "A's own partition applied",
        Duration::from_secs(60),
        || async { (s.count("SELECT count(*) FROM applied").await >= 2).then_some(()) },
    )
    .await;
    assert_eq!(s.count("SELECT count(*) FROM applied").await, 2);
    assert_eq!(s.count("SELECT count(*) FROM inbox").await, 2);
    shutdown.cancel();
    a.await.expect("task").expect("A stops cleanly");
    b.await.expect("task").expect("B stops cleanly");
}

#[tokio::test]
async fn a_broker_without_create_topics_is_fine_when_the_topics_exist() {
    let mock = MockKafka::start(1);
    let kafka = &mock.kafka;
    kafka
        .ensure_topics(&[&kafka.topics.requests, &kafka.topics.results])
        .await
        .expect("existing topics are enough");
    let missing = format!("missing-{}", Uuid::new_v4().simple());
    assert!(
        kafka.ensure_topics(&[&missing]).await.is_err(),
        "a topic that cannot be created and does not exist is an error"
    );
}
