//! The relay, stepped one batch at a time (no background task, no polling):
//! what it publishes, in which order, with which headers, and that it never
//! sees an event whose transaction has not committed.

use rdkafka::Message as _;
use shop_db::kafka::KafkaConfig;
use shop_db::outbox::{self, NewEvent, RelayWake};
use shop_db::relay::{Relay, RelayConfig};
use shop_db::{Pool, headers, migrate, pool};
use shop_proto::events::PaymentRequested;
use shop_testkit::{TestDb, kafka_config, read_topic};
use std::time::Duration;
use uuid::Uuid;

/// A fresh database with the messaging schema only.
async fn messaging_db(db: &TestDb) -> Pool {
    let pool = pool::connect(db.config()).await.expect("connects");
    let migrations = migrate::with_messaging(&refinery::Runner::new(&[])).expect("schema");
    migrate::run(&pool, &migrations).await.expect("migrates");
    pool
}

fn event(topic: &str, key: &str, amount: i64) -> NewEvent {
    let id = Uuid::now_v7();
    let message = PaymentRequested {
        event_id: id.to_string(),
        amount,
        ..Default::default()
    };
    NewEvent::encode(id, topic, key, &message, headers::new_root())
}

/// A database with the messaging schema, a fresh one-partition topic and
/// a relay over them, stepped by the test only.
async fn relay_on_fresh_topic(config: RelayConfig) -> (TestDb, Pool, KafkaConfig, Relay) {
    let db = TestDb::create("relay").await;
    let pool = messaging_db(&db).await;
    let kafka = kafka_config(1);
    kafka
        .ensure_topics(&[&kafka.topics.requests])
        .await
        .expect("topic");
    let producer = kafka.producer().expect("producer");
    let relay = Relay::new(pool.clone(), producer, config, RelayWake::new());
    (db, pool, kafka, relay)
}

#[tokio::test]
async fn each_step_publishes_one_batch_in_outbox_order_and_only_committed_rows() {
    let config = RelayConfig {
        batch_size: 2,
        ..RelayConfig::default()
    };
    let (_db, pool, kafka, relay) = relay_on_fresh_topic(config).await;
    let topic = kafka.topics.requests.clone();

    let mut client = pool.get().await.expect("conn");
    let tx = client.transaction().await.expect("tx");
    let events: Vec<NewEvent> = (1..=3).map(|i| event(&topic, "user-a", i)).collect();
    outbox::enqueue_all(&tx, &events).await.expect("enqueued");
    assert_eq!(
        relay.publish_batch().await.expect("step"),
        0,
        "an uncommitted event is invisible to the relay"
    );
    tx.commit().await.expect("commit");

    assert_eq!(relay.publish_batch().await.expect("step 1"), 2);
    assert_eq!(relay.publish_batch().await.expect("step 2"), 1);
    assert_eq!(relay.publish_batch().await.expect("step 3"), 0);

    let records = read_topic(&kafka, &topic, 3, Duration::from_secs(30)).await;
    let ids: Vec<String> = records
        .iter()
        .map(|r| headers::get(r, headers::EVENT_ID).expect("event-id"))
        .collect();
    let expected: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(ids, expected, "one key, one partition: outbox order kept");
    for record in &records {
        assert_eq!(record.key(), Some("user-a".as_bytes()));
        assert_eq!(
            headers::get(record, headers::EVENT_TYPE).as_deref(),
            Some("shop.events.v1.PaymentRequested")
        );
        let traceparent = headers::get(record, headers::TRACEPARENT).expect("traceparent");
        assert!(headers::trace_id(&traceparent).is_some(), "{traceparent}");
    }
    let unpublished: i64 = client
        .query_one("SELECT count(*) FROM outbox_pending", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(unpublished, 0);
}

#[tokio::test]
async fn a_row_that_keeps_failing_is_parked_and_the_rest_still_publish() {
    let config = RelayConfig {
        max_attempts: 1,
        ..RelayConfig::default()
    };
    let (_db, pool, kafka, relay) = relay_on_fresh_topic(config).await;
    let topic = kafka.topics.requests.clone();
    // Larger than the producer's message.max.bytes: it can never be sent.
    let mut too_large = event(&topic, "user-b", 2);
    too_large.payload = vec![0; 2 * 1024 * 1024];
    let events = [
        event(&topic, "user-b", 1),
        too_large,
        event(&topic, "user-b", 3),
    ];
    let client = pool.get().await.expect("conn");
    outbox::enqueue_all(&client, &events)
        .await
        .expect("enqueued");

    assert_eq!(
        relay.publish_batch().await.expect("step"),
        2,
        "the others publish"
    );
    assert_eq!(
        relay.publish_batch().await.expect("step"),
        0,
        "the parked row is not retried"
    );
    let parked = client
        .query_one(
            "SELECT parked_at IS NOT NULL, last_error IS NOT NULL FROM outbox WHERE event_id = $1",
            &[&events[1].event_id],
        )
        .await
        .expect("row");
    assert!(
        parked.get::<_, bool>(0) && parked.get::<_, bool>(1),
        "parked with its error"
    );
    let records = read_topic(&kafka, &topic, 2, Duration::from_secs(30)).await;
    let ids: Vec<String> = records
        .iter()
        .map(|r| headers::get(r, headers::EVENT_ID).expect("event-id"))
        .collect();
    assert_eq!(
        ids,
        [
            events[0].event_id.to_string(),
            events[2].event_id.to_string()
        ]
    );
}

#[tokio::test]
async fn a_broker_that_cannot_be_reached_parks_nothing_and_the_cursor_stays_before_the_row() {
    let config = RelayConfig {
        max_attempts: 1,
        ..RelayConfig::default()
    };
    let (_db, pool, mut kafka, _) = relay_on_fresh_topic(config.clone()).await;
    // A producer whose broker is gone: every delivery times out.
    kafka.brokers = "127.0.0.1:1".to_owned();
    kafka
        .producer
        .push(("message.timeout.ms".to_owned(), "500".to_owned()));
    let relay = Relay::new(
        pool.clone(),
        kafka.producer().expect("producer"),
        config,
        RelayWake::new(),
    );
    let topic = kafka.topics.requests.clone();
    let client = pool.get().await.expect("conn");
    outbox::enqueue_all(&client, &[event(&topic, "user-c", 1)])
        .await
        .expect("enqueued");

    let outcome = relay.publish_batch().await;
    assert!(outcome.is_err(), "nothing was published: {outcome:?}");
    let row = client
        .query_one(
            "SELECT published_at IS NULL, parked_at IS NULL,
                    retry_at IS NULL AND id IN (SELECT id FROM outbox_pending), attempts
             FROM outbox",
            &[],
        )
        .await
        .expect("row");
    assert!(row.get::<_, bool>(0), "not published");
    assert!(
        row.get::<_, bool>(1),
        "the broker's trouble never parks a row"
    );
    assert!(
        row.get::<_, bool>(2),
        "still ahead of the cursor, for the next pass, and not set aside"
    );
    assert_eq!(
        row.get::<_, i32>(3),
        0,
        "no attempt counted against the row"
    );
}

/// The relay renews the cursor's lease while the broker is slow to answer:
/// a second relay over the same outbox reads nothing for as long as the
/// first one awaits its delivery reports, however many leases that takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_publish_keeps_its_lease_and_is_never_claimed_twice() {
    let mock = shop_testkit::MockKafka::start(1);
    for broker in 1..=3 {
        mock.brokers
            .cluster()
            .broker_round_trip_time(broker, Duration::from_millis(1_000))
            .expect("slow broker");
    }
    let db = TestDb::create("relay").await;
    let pool = messaging_db(&db).await;
    // Renewed every 200 ms: 400 ms of slack for a loaded machine, while the
    // publish (several 1 s round trips) still outlasts three leases.
    let lease = Duration::from_millis(600);
    let config = RelayConfig {
        lease,
        ..RelayConfig::default()
    };
    let relay = |config: RelayConfig| {
        Relay::new(
            pool.clone(),
            mock.kafka.producer().expect("producer"),
            config,
            RelayWake::new(),
        )
    };
    let (first, second) = (relay(config.clone()), relay(config));
    let mut client = pool.get().await.expect("conn");
    let tx = client.transaction().await.expect("tx");
    let topic = mock.kafka.topics.requests.clone();
    outbox::enqueue_all(&tx, &[event(&topic, "user-a", 1)])
        .await
        .expect("enqueued");
    tx.commit().await.expect("commit");

    let started = std::time::Instant::now();
    let publishing = tokio::spawn(async move { first.publish_batch().await });
    shop_testkit::eventually(
        "the first relay's lease on the cursor",
        Duration::from_secs(10),
        || async {
            let held = shop_testkit::scalar(
                &pool,
                "SELECT count(*) FROM outbox_relay WHERE holder IS NOT NULL",
            )
            .await;
            (held == 1).then_some(())
        },
    )
    .await;
    while !publishing.is_finished() {
        assert_eq!(
            second.publish_batch().await.expect("second relay"),
            0,
            "the row was read again while its publish was in flight"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    assert_eq!(publishing.await.expect("task").expect("published"), 1);
    assert!(
        took > lease * 3,
        "the publish took {took:?}: too quick to show the lease renewed"
    );
    assert_eq!(second.publish_batch().await.expect("second relay"), 0);
}

#[tokio::test]
async fn every_message_carries_exactly_one_traceparent_even_when_published_again() {
    let (_db, pool, kafka, relay) = relay_on_fresh_topic(RelayConfig::default()).await;
    let topic = kafka.topics.requests.clone();
    let client = pool.get().await.expect("conn");
    let traced = event(&topic, "user-a", 1);
    let tx_traceparent = traced.traceparent.clone();
    {
        let mut client = pool.get().await.expect("conn");
        let tx = client.transaction().await.expect("tx");
        outbox::enqueue_all(&tx, std::slice::from_ref(&traced))
            .await
            .expect("enqueued");
        tx.commit().await.expect("commit");
    }
    // A replayed dead letter: its outbox row has no trace context.
    client
        .execute(
            "INSERT INTO outbox (event_id, topic, key, event_type, payload)
             VALUES (gen_random_uuid(), $1, 'user-a', 'unknown', '\\x00')",
            &[&topic],
        )
        .await
        .expect("replayed row");
    assert_eq!(relay.publish_batch().await.expect("step"), 2);
    // The traced row is published a second time, through the retry path
    // (as after a lost acknowledgement): its message is built afresh.
    client
        .execute(
            "UPDATE outbox SET retry_at = now() WHERE event_id = $1",
            &[&traced.event_id],
        )
        .await
        .expect("set aside");
    assert_eq!(relay.retry_batch().await.expect("retried"), 1);

    let records = read_topic(&kafka, &topic, 3, Duration::from_secs(30)).await;
    for record in &records {
        let traceparents: Vec<&[u8]> =
            rdkafka::message::Headers::iter(record.headers().expect("headers"))
                .filter(|h| h.key == headers::TRACEPARENT)
                .filter_map(|h| h.value)
                .collect();
        assert_eq!(traceparents.len(), 1, "one traceparent per message");
        let value = std::str::from_utf8(traceparents[0]).expect("UTF-8");
        assert!(headers::trace_id(value).is_some(), "{value}");
    }
    // With traces off, the row's own context travels as it was stored.
    let traced_ids: Vec<String> = records
        .iter()
        .filter(|r| headers::get(*r, headers::EVENT_ID) == Some(traced.event_id.to_string()))
        .filter_map(|r| headers::get(r, headers::TRACEPARENT))
        .collect();
    assert_eq!(traced_ids, vec![tx_traceparent.clone(), tx_traceparent]);
}

/// The case a cursor on ids alone gets wrong: a transaction that took its
/// id first but commits last. The relay publishes the later commit at once
/// and the earlier id once it commits, in the next window.
#[tokio::test]
async fn a_row_that_commits_after_a_later_id_is_published_in_the_next_window() {
    let (_db, pool, kafka, relay) = relay_on_fresh_topic(RelayConfig::default()).await;
    let topic = kafka.topics.requests.clone();
    let (slow_event, quick_event) = (event(&topic, "user-a", 1), event(&topic, "user-b", 2));
    let mut slow_client = pool.get().await.expect("conn");
    let slow = slow_client.transaction().await.expect("tx");
    outbox::enqueue_all(&slow, std::slice::from_ref(&slow_event))
        .await
        .expect("enqueued first");
    let quick_client = pool.get().await.expect("conn");
    outbox::enqueue_all(&quick_client, std::slice::from_ref(&quick_event))
        .await
        .expect("enqueued and committed second");

    assert_eq!(
        relay.publish_batch().await.expect("step"),
        1,
        "the committed one"
    );
    assert_eq!(relay.publish_batch().await.expect("step"), 0);
    slow.commit().await.expect("commit");
    assert_eq!(
        relay.publish_batch().await.expect("step"),
        1,
        "the late one"
    );
    assert_eq!(relay.publish_batch().await.expect("step"), 0);

    let records = read_topic(&kafka, &topic, 2, Duration::from_secs(30)).await;
    let ids: Vec<String> = records
        .iter()
        .map(|r| headers::get(r, headers::EVENT_ID).expect("event-id"))
        .collect();
    assert_eq!(
        ids,
        [
            quick_event.event_id.to_string(),
            slow_event.event_id.to_string()
        ]
    );
    let pending = shop_testkit::scalar(&pool, "SELECT count(*) FROM outbox_pending").await;
    assert_eq!(pending, 0);
}

/// A relay that dies holding the cursor (no release) blocks the others
/// only until its lease runs out; then another relay publishes.
#[tokio::test]
async fn a_dead_holders_cursor_is_taken_over_when_its_lease_runs_out() {
    let config = RelayConfig {
        lease: Duration::from_secs(3),
        ..RelayConfig::default()
    };
    let (_db, pool, kafka, first) = relay_on_fresh_topic(config.clone()).await;
    let topic = kafka.topics.requests.clone();
    let second = Relay::new(
        pool.clone(),
        kafka.producer().expect("producer"),
        config,
        RelayWake::new(),
    );
    assert_eq!(first.publish_batch().await.expect("takes the cursor"), 0);
    drop(first); // killed: it never releases the lease
    let client = pool.get().await.expect("conn");
    outbox::enqueue_all(&client, &[event(&topic, "user-a", 1)])
        .await
        .expect("enqueued");
    assert_eq!(
        second.publish_batch().await.expect("step"),
        0,
        "the lease still holds"
    );
    let published = shop_testkit::eventually(
        "the second relay to take the cursor",
        Duration::from_secs(10),
        || async { second.publish_batch().await.ok().filter(|n| *n > 0) },
    )
    .await;
    assert_eq!(published, 1);
    read_topic(&kafka, &topic, 1, Duration::from_secs(30)).await;
}

/// A row the broker refuses is set aside and the cursor moves on; the
/// retry path tries it again on its own backoff and parks it at the limit.
#[tokio::test]
async fn a_refused_row_is_retried_on_its_own_backoff_then_parked() {
    let config = RelayConfig {
        max_attempts: 3,
        ..RelayConfig::default()
    };
    let (_db, pool, kafka, relay) = relay_on_fresh_topic(config).await;
    let topic = kafka.topics.requests.clone();
    let mut too_large = event(&topic, "user-d", 1);
    too_large.payload = vec![0; 2 * 1024 * 1024];
    let client = pool.get().await.expect("conn");
    outbox::enqueue_all(&client, &[too_large, event(&topic, "user-d", 2)])
        .await
        .expect("enqueued");

    assert_eq!(
        relay.publish_batch().await.expect("step"),
        1,
        "the good one"
    );
    let state = "SELECT attempts, retry_at IS NOT NULL, parked_at IS NOT NULL,
                        (SELECT count(*) FROM outbox_pending)
                 FROM outbox ORDER BY id LIMIT 1";
    let row = client.query_one(state, &[]).await.expect("row");
    assert_eq!(row.get::<_, i32>(0), 1);
    assert!(row.get::<_, bool>(1), "set aside with a backoff");
    assert_eq!(row.get::<_, i64>(3), 1, "only the set-aside row is pending");

    for attempts in [2, 3] {
        client
            .execute(
                "UPDATE outbox SET retry_at = now() WHERE retry_at IS NOT NULL",
                &[],
            )
            .await
            .expect("due now");
        assert_eq!(relay.retry_batch().await.expect("retried"), 0);
        let row = client.query_one(state, &[]).await.expect("row");
        assert_eq!(row.get::<_, i32>(0), attempts);
    }
    let row = client.query_one(state, &[]).await.expect("row");
    assert!(!row.get::<_, bool>(1) && row.get::<_, bool>(2), "parked");
    assert_eq!(row.get::<_, i64>(3), 0, "a parked row is not pending");
}
