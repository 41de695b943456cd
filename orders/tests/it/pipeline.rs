//! The orders side of the pipeline against the real broker: the relay
//! publishes PaymentRequested (woken by NOTIFY), and PaymentCompleted records
//! produced straight to the results topic finalise orders exactly once.

use crate::helpers::{TestApp, spawn_app, spawn_configured, spawn_with};
use prost::Message as _;
use rdkafka::Message as _;
use shop_db::headers;
use shop_proto::events::{DeclineReason, PaymentCompleted, PaymentOutcome, PaymentRequested};
use shop_proto::orders::{
    CancelReason, CreateOrderRequest, GetOrderRequest, Order, OrderStatus, WatchOrderRequest,
    WatchOrderResponse,
};
use shop_testkit::{TestDb, eventually, produce_raw, read_topic};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// Opens WatchOrder on `app` for `id`.
async fn open_watch(app: &mut TestApp, id: &str) -> tonic::Streaming<WatchOrderResponse> {
    app.client
        .watch_order(WatchOrderRequest {
            order_id: id.to_owned(),
        })
        .await
        .expect("watch")
        .into_inner()
}

/// The status in the stream's next message (within the deadline).
async fn next_status(stream: &mut tonic::Streaming<WatchOrderResponse>) -> OrderStatus {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("in time")
        .expect("stream")
        .expect("a message")
        .order
        .expect("order")
        .status()
}

async fn new_order(app: &mut TestApp, user: &str, amount: i64) -> Order {
    app.client
        .create_order(CreateOrderRequest {
            user_id: user.to_owned(),
            amount,
            description: "thing".to_owned(),
            idempotency_key: String::new(),
        })
        .await
        .expect("created")
        .into_inner()
        .order
        .expect("order")
}

async fn get(app: &mut TestApp, id: &str) -> Order {
    app.client
        .get_order(GetOrderRequest {
            order_id: id.to_owned(),
        })
        .await
        .expect("get")
        .into_inner()
        .order
        .expect("order")
}

async fn complete(app: &TestApp, order: &Order, outcome: PaymentOutcome, reason: DeclineReason) {
    let event = PaymentCompleted {
        event_id: Uuid::new_v4().to_string(),
        order_id: order.order_id.clone(),
        user_id: order.user_id.clone(),
        amount: order.amount,
        outcome: outcome.into(),
        decline_reason: reason.into(),
        completed_at: None,
    };
    send_completed(app, &event).await;
}

async fn send_completed(app: &TestApp, event: &PaymentCompleted) {
    let kafka = app.kafka();
    produce_raw(
        kafka,
        &kafka.topics.results,
        &event.order_id,
        &event.encode_to_vec(),
        &[
            ("event-id", &event.event_id),
            ("event-type", "shop.events.v1.PaymentCompleted"),
        ],
    )
    .await;
}

async fn wait_status(app: &mut TestApp, id: &str, status: OrderStatus) -> Order {
    let client = app.client.clone();
    eventually(&format!("order {id} to be {status:?}"), WAIT, || {
        let mut client = client.clone();
        let id = id.to_owned();
        async move {
            let order = client
                .get_order(GetOrderRequest { order_id: id })
                .await
                .ok()?
                .into_inner()
                .order?;
            (order.status() == status).then_some(order)
        }
    })
    .await
}

#[tokio::test]
async fn an_idle_relay_publishes_a_new_order_at_once_when_woken_by_the_writer() {
    let db = Arc::new(TestDb::create("orders").await);
    let mut config = shop_testkit::service_config(
        &db,
        shop_testkit::kafka_config(2),
        &shop_testkit::unique_group("orders"),
    );
    // Polling alone would take a minute: only the writer's wake-up can be this fast.
    config.relay.poll_interval = Duration::from_secs(60);
    let mut app = spawn_configured(db, config).await;
    let user = Uuid::new_v4().to_string();
    let order = new_order(&mut app, &user, 42).await;
    let committed = std::time::Instant::now();
    eventually("the relay to publish the order's event", WAIT, || {
        let app = &app;
        async move { (app.scalar("SELECT count(*) FROM outbox_pending").await == 0).then_some(()) }
    })
    .await;
    let latency_ms = committed.elapsed().as_millis();

    let records = read_topic(app.kafka(), &app.kafka().topics.requests, 1, WAIT).await;
    let record = &records[0];
    let event = PaymentRequested::decode(record.payload().unwrap_or_default()).expect("decodes");
    assert_eq!(event.order_id, order.order_id);
    assert_eq!(event.user_id, user);
    assert_eq!(event.amount, 42);
    assert_eq!(record.key(), Some(user.as_bytes()));
    assert_eq!(
        headers::get(record, headers::EVENT_ID).as_deref(),
        Some(event.event_id.as_str())
    );
    assert_eq!(
        headers::get(record, headers::EVENT_TYPE).as_deref(),
        Some("shop.events.v1.PaymentRequested")
    );
    assert!(
        headers::get(record, headers::TRACEPARENT).is_some_and(|t| headers::trace_id(&t).is_some())
    );

    eprintln!("commit-to-publish latency of an idle relay: {latency_ms} ms");
    assert!(
        latency_ms < 2_000,
        "published after {latency_ms} ms: the writer did not wake the relay"
    );
    app.stop().await;
}

#[tokio::test]
async fn results_finalise_orders_once_and_watchers_see_every_change() {
    let mut app = spawn_app().await;
    let user = Uuid::new_v4().to_string();
    let paid = new_order(&mut app, &user, 10).await;
    let poor = new_order(&mut app, &user, 20).await;
    let orphan = new_order(&mut app, &user, 30).await;

    let mut watch = open_watch(&mut app, &paid.order_id).await;
    assert_eq!(next_status(&mut watch).await, OrderStatus::New);

    complete(
        &app,
        &paid,
        PaymentOutcome::Paid,
        DeclineReason::Unspecified,
    )
    .await;
    complete(
        &app,
        &poor,
        PaymentOutcome::Declined,
        DeclineReason::InsufficientFunds,
    )
    .await;
    complete(
        &app,
        &orphan,
        PaymentOutcome::Declined,
        DeclineReason::AccountNotFound,
    )
    .await;

    assert_eq!(next_status(&mut watch).await, OrderStatus::Finished);
    assert!(
        watch.message().await.expect("clean end").is_none(),
        "stream ends after a final status"
    );

    let poor = wait_status(&mut app, &poor.order_id, OrderStatus::Cancelled).await;
    assert_eq!(poor.cancel_reason(), CancelReason::InsufficientFunds);
    let orphan = wait_status(&mut app, &orphan.order_id, OrderStatus::Cancelled).await;
    assert_eq!(orphan.cancel_reason(), CancelReason::AccountNotFound);

    // A contradicting late result cannot change a final status.
    let mut late = get(&mut app, &paid.order_id).await;
    complete(
        &app,
        &late,
        PaymentOutcome::Declined,
        DeclineReason::InsufficientFunds,
    )
    .await;
    let marker = new_order(&mut app, &user, 1).await;
    // The marker shares the late result's partition only by chance, so wait on the inbox.
    eventually("the late result to be consumed", WAIT, || {
        let app = &app;
        async move { (app.scalar("SELECT count(*) FROM inbox").await == 4).then_some(()) }
    })
    .await;
    late = get(&mut app, &paid.order_id).await;
    assert_eq!(late.status(), OrderStatus::Finished);
    assert_eq!(
        get(&mut app, &marker.order_id).await.status(),
        OrderStatus::New
    );

    // A watcher of a final order gets its state and the end at once.
    let mut done = open_watch(&mut app, &paid.order_id).await;
    assert_eq!(next_status(&mut done).await, OrderStatus::Finished);
    assert!(done.message().await.expect("end").is_none());
    app.stop().await;
}

#[tokio::test]
async fn duplicate_results_are_applied_once_and_poison_is_dead_lettered() {
    let mut app = spawn_app().await;
    let user = Uuid::new_v4().to_string();
    let order = new_order(&mut app, &user, 10).await;
    let kafka = app.kafka().clone();
    produce_raw(
        &kafka,
        &kafka.topics.results,
        &order.order_id,
        b"\x08\x96\x01garbage\xff",
        &[],
    )
    .await;
    let event = PaymentCompleted {
        event_id: Uuid::new_v4().to_string(),
        order_id: order.order_id.clone(),
        user_id: user.clone(),
        amount: 10,
        outcome: PaymentOutcome::Paid.into(),
        decline_reason: 0,
        completed_at: None,
    };
    for _ in 0..3 {
        send_completed(&app, &event).await;
    }
    wait_status(&mut app, &order.order_id, OrderStatus::Finished).await;
    eventually("the poison message to be parked", WAIT, || {
        let app = &app;
        async move { (app.scalar("SELECT count(*) FROM dead_letters").await == 1).then_some(()) }
    })
    .await;
    shop_testkit::wait_group_caught_up(
        &kafka,
        &app.config.inbox.group_id,
        &kafka.topics.results,
        WAIT,
    )
    .await;
    assert_eq!(app.scalar("SELECT count(*) FROM inbox").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn watching_an_unknown_order_is_not_found() {
    let mut app = spawn_app().await;
    let status = app
        .client
        .watch_order(WatchOrderRequest {
            order_id: Uuid::new_v4().to_string(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), tonic::Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn two_replicas_share_one_outbox_and_watchers_see_changes_applied_by_either() {
    let mut first = spawn_app().await;
    let kafka = first.kafka().clone();
    let mut second = spawn_with(
        first.db.clone(),
        kafka.clone(),
        &shop_testkit::unique_group("orders-b"),
    )
    .await;
    let user = Uuid::new_v4().to_string();
    for i in 0..20 {
        new_order(&mut first, &user, 10 + i).await;
        new_order(&mut second, &user, 100 + i).await;
    }
    eventually("both relays to drain the shared outbox", WAIT, || {
        let app = &first;
        async move { (app.scalar("SELECT count(*) FROM outbox_pending").await == 0).then_some(()) }
    })
    .await;
    // SKIP LOCKED: each row was claimed by exactly one relay, so each published once.
    assert_eq!(shop_testkit::topic_size(&kafka, &kafka.topics.requests), 40);

    let order = new_order(&mut first, &user, 7).await;
    let mut watch = open_watch(&mut second, &order.order_id).await;
    assert_eq!(next_status(&mut watch).await, OrderStatus::New);
    complete(
        &first,
        &order,
        PaymentOutcome::Paid,
        DeclineReason::Unspecified,
    )
    .await;
    assert_eq!(next_status(&mut watch).await, OrderStatus::Finished);
    second.stop().await;
    first.stop().await;
}
